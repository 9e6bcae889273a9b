"""Children of a benchmark die with it (workers and Orthanc once outlived a bench.e2e that was killed).

A small Python process plays the benchmark: it starts ``sh`` (which starts a ``sleep`` of its own, a grandchild in the
child's process group) through ``bench.common.spawn_child`` and is then killed with SIGKILL (the kernel's parent-death
signal must take the child along) or SIGTERM (the benchmark unwinds and kills each child's process group)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = """
import subprocess, sys, time
from bench.common import children_die_with_us, spawn_child
with children_die_with_us():
    child = spawn_child(["sh", "-c", "sleep 300 & echo $!; wait"], stdout=subprocess.PIPE, text=True)
    print(child.pid, child.stdout.readline().strip(), flush=True)
    time.sleep(120)
"""


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


def _wait_gone(pids: list[int], timeout_s: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(_gone(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if not _gone(p)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_children_and_their_groups_die_with_the_benchmark(sig):
    bench = subprocess.Popen([sys.executable, "-c", BENCH], cwd=REPO, stdout=subprocess.PIPE, text=True)
    child = grandchild = None
    try:
        child, grandchild = (int(p) for p in bench.stdout.readline().split())
        assert os.getpgid(child) == child == os.getpgid(grandchild), "the child leads a process group of its own"
        bench.send_signal(sig)
        assert bench.wait(30) == (-signal.SIGKILL if sig == signal.SIGKILL else 128 + signal.SIGTERM)
        # SIGKILL: the kernel signals the child only (the embedded worker of `mccad serve` asks for its own)
        left = _wait_gone([child] if sig == signal.SIGKILL else [child, grandchild])
        assert not left, f"still running after the benchmark died by {sig.name}: {left}"
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait(10)
        for pid in (child, grandchild):
            if pid is not None and not _gone(pid):
                os.kill(pid, signal.SIGKILL)
