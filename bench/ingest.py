"""Ingest throughput: our Storage SCP (durable writes, fsync on) against dcmtk's ``storescp``, in one run.

Both receivers get the same synthetic MG files from the same sender, dcmtk's ``storescu``, over loopback, one
association carrying every file. A run is timed from the start of ``storescu`` to its exit (so association set-up and
the last acknowledgement are inside), and counts only when the receiver holds every file afterwards. Runs alternate
between the two receivers (ours first on even repeats, storescp first on odd ones) so that a slow moment of the
machine does not land on one side only. Each run writes into a fresh folder.

Reported: instances per second and MB/s (file bytes sent / seconds) for each receiver, and ours / storescp as a ratio
(target: at least 0.8). dcmtk 3.6.7's ``storescp`` has no fsync option: it leaves its files in the page cache,
whereas ours acknowledges only after ``fsync`` of the file and its folder (nothing received is lost), so
the ratio is conservative for us. Our SCP runs in this process with its production settings (chunked receive to a
temporary file, header checks, the spool), as ``mccad serve`` runs it.

Run ``python -m bench.ingest`` (see bench/README.md); ``--quick`` is a smoke run with a handful of small files.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    BenchError,
    add_output_arguments,
    dcmtk_tool,
    machine_info,
    print_report,
    progress,
    summarise,
    write_report,
)
from dicom_io.scp import SCPConfig, StorageSCP
from dicom_io.spool import Spool

TARGET_RATIO = 0.8
SENDER_AE = "BENCHSCU"


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def require_tool(name: str) -> str:
    path = dcmtk_tool(name)
    if path is None:
        raise BenchError(f"{name} (dcmtk) is not installed: apt-get install dcmtk")
    return path


def make_files(folder: Path, studies: int, rows: int, cols: int) -> list[Path]:
    """``studies`` synthetic 4-view MG studies (training.simulate.synth), the files the senders send."""
    from training.simulate.synth import write_synthetic_dataset

    write_synthetic_dataset(folder, studies, seed=7, rows=rows, cols=cols)
    files = sorted(folder.rglob("*.dcm"))
    if not files:
        raise BenchError(f"the synthetic dataset writer made no DICOM files in {folder}")
    return files


def filesystem_of(path: Path) -> str:
    """The mount point and type holding ``path`` (fsync cost depends on it)."""
    best = ("", "unknown")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and str(path.resolve()).startswith(parts[1]) and len(parts[1]) >= len(best[0]):
                best = (parts[1], parts[2])
    except OSError:
        pass
    return f"{best[1]} at {best[0]}"


def send(files: list[Path], port: int, called_ae: str, timeout_s: float) -> float:
    """Send every file on one association with storescu; returns its wall-clock seconds."""
    cmd = [require_tool("storescu"), "-aet", SENDER_AE, "-aec", called_ae, "127.0.0.1", str(port),
           *map(str, files)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise BenchError(f"storescu to {called_ae} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return elapsed


def count_received(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".tmp"))


def run_ours(files: list[Path], workdir: Path, timeout_s: float) -> float:
    out = workdir / "ours"
    scp = StorageSCP(SCPConfig(ae_title="MCCAD", host="127.0.0.1", port=0), Spool(out))
    scp.start()
    try:
        seconds = send(files, scp.port, "MCCAD", timeout_s)
    finally:
        scp.stop()
    received = count_received(out)
    shutil.rmtree(out, ignore_errors=True)
    if received != len(files):
        raise BenchError(f"our SCP holds {received} of {len(files)} files after the run")
    return seconds


def run_storescp(files: list[Path], workdir: Path, timeout_s: float) -> float:
    out = workdir / "storescp"
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen([require_tool("storescp"), "-aet", "STORESCP", "-od", str(out), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port)
        seconds = send(files, port, "STORESCP", timeout_s)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    received = count_received(out)
    shutil.rmtree(out, ignore_errors=True)
    if received != len(files):
        raise BenchError(f"storescp holds {received} of {len(files)} files after the run")
    return seconds


RECEIVERS = {"mccad_scp": run_ours, "dcmtk_storescp": run_storescp}


def measure(files: list[Path], workdir: Path, repeats: int, timeout_s: float) -> dict[str, list[float]]:
    """Alternate the receivers ``repeats`` times; returns the seconds of every run per receiver."""
    samples: dict[str, list[float]] = {name: [] for name in RECEIVERS}
    for repeat in range(repeats):
        order = list(RECEIVERS) if repeat % 2 == 0 else list(reversed(RECEIVERS))
        for name in order:
            progress(f"repeat {repeat + 1}/{repeats}: {name}")
            samples[name].append(RECEIVERS[name](files, workdir, timeout_s))
    return samples


def rows_from(samples: dict[str, list[float]], files: list[Path]) -> list[dict[str, Any]]:
    total_bytes = sum(p.stat().st_size for p in files)
    rows = []
    for name, seconds in samples.items():
        stats = summarise(seconds)
        rows.append({
            "receiver": name, "fsync": name == "mccad_scp", "instances": len(files),
            "mb": total_bytes / 1e6, "median_s": stats.median_s, "p95_s": stats.p95_s,
            "instances_per_s": len(files) / stats.median_s, "mb_per_s": total_bytes / 1e6 / stats.median_s,
            "runs": seconds,
        })
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=10, help="synthetic 4-view studies to send (4 files each)")
    parser.add_argument("--rows", type=int, default=1024, help="image rows of the synthetic files")
    parser.add_argument("--cols", type=int, default=640, help="image columns of the synthetic files")
    parser.add_argument("--repeats", type=int, default=5, help="runs per receiver (alternating)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where files are made and received (default: a temporary folder; fsync cost depends "
                             "on its file system)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one storescu run may take")
    add_output_arguments(parser, "ingest")
    args = parser.parse_args(argv)
    if args.quick:
        args.studies, args.rows, args.cols, args.repeats = 1, 256, 160, 1
    return args


COLUMNS = ("receiver", "fsync", "instances", "mb", "median_s", "p95_s", "instances_per_s", "mb_per_s")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    machine = machine_info()
    require_tool("storescu")
    require_tool("storescp")
    base = args.workdir
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mccad-bench-ingest-", dir=base) as tmp:
        workdir = Path(tmp)
        progress(f"writing {args.studies} synthetic studies of {args.rows}x{args.cols} px")
        files = make_files(workdir / "send", args.studies, args.rows, args.cols)
        machine["receive_filesystem"] = filesystem_of(workdir)
        samples = measure(files, workdir, args.repeats, args.timeout)
        rows = rows_from(samples, files)
    ours, theirs = rows[0], rows[1]
    ratio = ours["instances_per_s"] / theirs["instances_per_s"]
    comparison = {"ratio_ours_to_storescp": ratio, "target_ratio": TARGET_RATIO, "target_met": ratio >= TARGET_RATIO,
                  "mean_file_mb": ours["mb"] / ours["instances"]}
    notes = ["dcmtk 3.6.7 storescp does not fsync; ours fsyncs each file and its folder before acknowledging"]
    if args.quick:
        notes.append("--quick: a handful of small files, one run; the figures measure nothing")
    doc = write_report(args.out, "ingest", args, machine, rows, extra={"comparison": comparison}, notes=notes)
    print_report(doc, COLUMNS, "ingest: storescu -> receiver over loopback, one association")
    print(f"ratio ours / storescp (instances per second): {ratio:.2f} (target >= {TARGET_RATIO}: "
          f"{'met' if comparison['target_met'] else 'NOT met'})")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench.ingest: {exc}", file=sys.stderr)
        sys.exit(2)
