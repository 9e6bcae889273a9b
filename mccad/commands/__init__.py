"""One module per ``mccad`` subcommand; each exposes ``register(subparsers)``."""
