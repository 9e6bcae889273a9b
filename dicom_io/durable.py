"""Durable file writes: the one place that implements "temporary name, fsync, rename, fsync the directory".

Every file whose loss would break a promise (an acknowledged instance, an output object, a result) goes through
here, so that a crash leaves either the old file or the new one, never a torn one.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, writer: Callable[[BinaryIO], None] | bytes) -> Path:
    """Write ``path`` atomically and durably; ``writer`` is the bytes or a function that writes to the open file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(writer, (bytes, bytearray, memoryview)):
                handle.write(writer)
            else:
                writer(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_dir(path.parent)
    return path


def write_text_durably(path: Path, text: str) -> Path:
    return write_durably(path, text.encode("utf-8"))
