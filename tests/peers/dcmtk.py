"""dcmtk's command-line peers (``storescu``, ``storescp``) by path, never pynetdicom's scripts of the same names."""
from __future__ import annotations

from bench.common import dcmtk_tool


def dcmtk(name: str) -> str:
    """The path of dcmtk's ``name``; a clear error where dcmtk is missing (``make system-deps`` installs it)."""
    path = dcmtk_tool(name)
    if path is None:
        raise FileNotFoundError(f"dcmtk's {name} is not on the PATH: apt-get install dcmtk (make system-deps)")
    return path
