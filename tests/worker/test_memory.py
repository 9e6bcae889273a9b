"""After a study the worker hands the memory it freed back to the operating system: a large image's copies do not
stay in a long-lived worker through every later study."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from worker.memory import release_freed_memory

# many heap blocks (64 KiB: below glibc's mmap threshold), every tenth kept: the freed ones lie between live ones, so
# glibc keeps them (it only trims the top of the heap by itself) until malloc_trim
SCRIPT = textwrap.dedent("""
    import numpy as np
    from worker.memory import release_freed_memory

    def rss_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    blocks = [np.ones(8192) for _ in range(3000)]  # about 190 MiB
    kept = blocks[::10]
    del blocks
    before = rss_mib()
    assert release_freed_memory()
    print(before, rss_mib())
""")


def test_freed_heap_memory_goes_back_to_the_system():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=120)
    before, after = (float(v) for v in out.stdout.split())
    assert before - after > 100, (before, after)


def test_release_is_cheap_to_call_again():
    assert release_freed_memory() is True
    assert release_freed_memory() is True
