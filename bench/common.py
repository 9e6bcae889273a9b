"""What every benchmark shares: timing statistics, peak memory from /proc, machine facts, JSON and a printed table.

Benchmarks are measurements, not tests: each script writes one JSON document (machine, settings, rows) so that
figures in the README can be traced to the command and the machine that produced them, and prints the same rows as
a table. The load average is recorded at start and end because a busy machine makes every figure meaningless.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS_DIR = REPO_ROOT / "bench" / "results"
#: load average (1 min) per core above which the JSON and the table carry a warning that the machine was busy.
BUSY_LOAD_PER_CORE = 0.25


class BenchError(RuntimeError):
    """A benchmark could not run as asked (a missing tool, a peer that did not start); the message says what."""


# -- timing -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TimingStats:
    """Summary of repeated wall-clock measurements, in seconds."""

    n: int
    median_s: float
    p95_s: float
    min_s: float
    max_s: float

    def as_dict(self) -> dict[str, float | int]:
        return {"n": self.n, "median_s": self.median_s, "p95_s": self.p95_s, "min_s": self.min_s, "max_s": self.max_s}


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) without numpy, so every script can use it."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarise(samples: Sequence[float]) -> TimingStats:
    return TimingStats(n=len(samples), median_s=statistics.median(samples), p95_s=percentile(samples, 95),
                       min_s=min(samples), max_s=max(samples))


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1,
               sync: Callable[[], None] | None = None) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls.

    ``sync`` (for example ``torch.cuda.synchronize``) runs before each clock read so asynchronous GPU work is
    counted in the call that launched it.
    """
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        samples.append(time.perf_counter() - t0)
    return samples


_T0 = time.monotonic()


def progress(message: str) -> None:
    """One line on stderr with the seconds since start, so a long run shows where it is."""
    print(f"[{time.monotonic() - _T0:7.1f} s] {message}", file=sys.stderr, flush=True)


# -- memory ---------------------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set (VmHWM) by writing 5 to /proc/self/clear_refs (Linux >= 4.0).

    Returns False where the kernel refuses, in which case :func:`peak_rss_mib` reports the lifetime peak.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak resident set size of this process since the last :func:`reset_peak_rss`, in MiB."""
    hwm = _status_kib("VmHWM")
    if hwm is None:
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, lifetime peak
    return hwm / 1024.0


def current_rss_mib() -> float:
    rss = _status_kib("VmRSS")
    return (rss or 0) / 1024.0


def children_peak_rss_mib() -> float:
    """Largest peak RSS among waited-for child processes (ru_maxrss of RUSAGE_CHILDREN), in MiB."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


# -- machine facts --------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def machine_info() -> dict[str, Any]:
    """Facts that make a figure comparable: CPU, cores, memory, Python, commit, load at start."""
    mem_kib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1) if mem_kib else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "load_average_start": load_average(),
    }


def busy_warning(load: Sequence[float]) -> str | None:
    cores = os.cpu_count() or 1
    if load and load[0] / cores > BUSY_LOAD_PER_CORE:
        return (f"machine was busy (1-min load {load[0]} on {cores} cores): these timings are not representative; "
                "rerun on an idle machine")
    return None


# -- output ---------------------------------------------------------------------------------------------------------
def add_output_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS_DIR / f"{name}.json",
                        help=f"JSON result file (default bench/results/{name}.json)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and one repeat: proves the benchmark runs, measures nothing useful")


def write_report(path: Path, bench: str, args: argparse.Namespace, machine: dict[str, Any], rows: list[dict[str, Any]],
                 extra: dict[str, Any] | None = None, notes: list[str] | None = None) -> dict[str, Any]:
    """Write the JSON document ``{"bench", "command", "settings", "machine", "rows", ...}`` and return it."""
    machine = dict(machine)
    machine["load_average_end"] = load_average()
    all_notes = list(notes or [])
    loads = [load for load in (machine.get("load_average_start"), machine["load_average_end"]) if load]
    warning = busy_warning(max(loads, key=lambda load: load[0])) if loads else None
    if warning:
        all_notes.append(warning)
    doc = {
        "bench": bench,
        "command": " ".join([Path(sys.executable).name, "-m", f"bench.{bench}", *sys.argv[1:]]),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": bool(getattr(args, "quick", False)),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine,
        **(extra or {}),
        "rows": rows,
        "notes": all_notes,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)
    return doc


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 0.01:
            return f"{value:.3f}"
        return f"{value:.2e}"
    return str(value)


MAX_CELL = 60


def format_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain fixed-width table of ``columns`` (missing values print as '-', long texts cut: the JSON has them)."""
    cells = [[_cut(format_value(row.get(col))) for col in columns] for row in rows]
    widths = [max([len(col), *(len(r[i]) for r in cells)]) for i, col in enumerate(columns)]
    lines = ["  ".join(col.ljust(w) for col, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 3] + "..."


def print_report(doc: dict[str, Any], columns: Sequence[str], title: str) -> None:
    print(f"\n{title}  ({doc['machine']['cpu_model']}, {doc['machine']['cpu_cores']} cores, "
          f"commit {doc['machine']['git_commit']})")
    print(format_table(doc["rows"], columns))
    for note in doc["notes"]:
        print(f"note: {note}")
    print()
