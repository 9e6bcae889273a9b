"""What every benchmark shares: timing statistics, peak memory from /proc, machine facts, JSON and a printed table.

Benchmarks are measurements, not tests: each script writes one JSON document (machine, settings, rows) so that
figures in the README can be traced to the command and the machine that produced them, and prints the same rows as
a table. The load average is recorded at start and end because a busy machine makes every figure meaningless.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS_DIR = REPO_ROOT / "bench" / "results"
#: load average (1 min) per core above which the JSON and the table carry a warning that the machine was busy.
BUSY_LOAD_PER_CORE = 0.25


class BenchError(RuntimeError):
    """A benchmark could not run as asked (a missing tool, a peer that did not start); the message says what."""


def dcmtk_tool(name: str) -> str | None:
    """The path of dcmtk's ``name`` (``storescu``, ``storescp``) on the PATH, or None.

    pynetdicom (a dependency) installs Python scripts of the same names into the virtual environment's ``bin``, which
    comes first on the PATH once the environment is activated and takes other options (no ``-R``, no ``+B``): they
    are skipped, so the tests and the ingest benchmark talk to dcmtk whether or not the environment is active."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder or ".") / name
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        with open(candidate, "rb") as handle:
            head = handle.read(128)
        if head.startswith(b"#!") and b"python" in head.split(b"\n", 1)[0]:
            continue  # pynetdicom's app of the same name
        return str(candidate)
    return None


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


# -- child processes that die with the benchmark ----------------------------------------------------------------------
#: ``PR_SET_PDEATHSIG`` of <linux/prctl.h>: the signal the kernel sends a process when its parent dies.
PR_SET_PDEATHSIG = 1
_children: list[subprocess.Popen[Any]] = []
_children_lock = threading.Lock()
_atexit_registered = False


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` (Linux only) that has the kernel SIGKILL the child when the benchmark dies, by SIGKILL too,
    and ends the child at once if the benchmark died before the request took effect. libc's ``prctl`` is looked up
    here, before the fork, so the forked child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def child_popen_options() -> dict[str, Any]:
    """``subprocess.Popen`` arguments for a child that dies with the benchmark: its own process group (what
    :func:`stop_children` kills, grandchildren included) and, on Linux, the parent-death signal."""
    options: dict[str, Any] = {"process_group": 0}
    preexec = _die_with_parent()
    if preexec is not None:
        options["preexec_fn"] = preexec
    return options


def track_child(proc: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
    """Remember a child started with :func:`child_popen_options`; :func:`stop_children` ends it and its group."""
    with _children_lock:
        _children.append(proc)
    return proc


def spawn_child(cmd: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
    """Start ``cmd`` as a tracked child that dies with the benchmark (see :func:`child_popen_options`)."""
    return track_child(subprocess.Popen(list(cmd), **child_popen_options(), **popen_kwargs))


def _signal_group(pgid: int, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):  # the group is empty: every process has exited
        os.killpg(pgid, sig)


def stop_children(procs: Sequence[subprocess.Popen[Any]] | None = None, grace_s: float = 60.0) -> None:
    """SIGTERM each child (``procs``, default every tracked one; a warm shutdown for ``mccad``), wait up to
    ``grace_s`` in all, SIGKILL those still running, then SIGKILL what is left of each one's process group (the
    embedded worker of ``mccad serve``, say). Stopped children are no longer tracked."""
    with _children_lock:
        chosen = list(_children if procs is None else procs)
        _children[:] = [p for p in _children if p not in chosen]
    for proc in reversed(chosen):
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in reversed(chosen):
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        _signal_group(proc.pid, signal.SIGKILL)  # each child leads its own group (process_group=0)


def _raise_system_exit(signum: int, _frame: Any) -> None:
    # once: the unwinding (finally blocks, ExitStack callbacks, stop_children) must not be cut short by a second one
    signal.signal(signum, signal.SIG_IGN)
    raise SystemExit(128 + signum)


@contextmanager
def children_die_with_us() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP end the benchmark through ``SystemExit``, so that every ``finally`` runs; on
    leaving (and at interpreter exit as a last resort) every tracked child is stopped with its process group. A
    SIGKILL of the benchmark runs none of that: the children's parent-death signal covers it."""
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(stop_children, None, 5.0)
        _atexit_registered = True
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, _raise_system_exit)
    try:
        yield
    finally:
        try:
            stop_children(grace_s=10.0)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


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
    lines = ["  ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
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
