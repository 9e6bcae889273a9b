"""Hand the memory a study freed back to the operating system once the study is over.

glibc's allocator keeps what a process frees in its heap and arenas for reuse instead of returning it. After one very
large image (a 64 Mpx mammogram's float copies are 256 MiB each) a long-lived worker stays that large through every
later study, and the next large image adds its own peak on top of it. ``malloc_trim(0)`` returns the free pages of
every arena. With another C library there is nothing to call and nothing is done.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc: no malloc_trim
        return None


def release_freed_memory() -> bool:
    """Return the allocator's free pages to the operating system (glibc ``malloc_trim(0)``); False where the C
    library has no such call. Cheap (milliseconds): the worker calls it after every study."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
