"""The software version: the one source that ``pyproject.toml`` reads at build time."""
__version__ = "0.2.0"
