"""End-to-end latency and throughput: PACS C-STORE of a 4-view study -> mccad -> SR stored back in the PACS.

Orthanc plays the PACS on loopback (``tests.peers.orthanc.OrthancPeer``): the synthetic studies are uploaded to it
over REST before the clock starts, then ``POST /modalities/cad/store`` makes Orthanc C-STORE a study to
``mccad serve``; mccad assembles it (``MCCAD_STUDY_IDLE_S`` of quiet), analyses it and C-STOREs its results to
Orthanc (``MCCAD_DESTINATIONS``). Latency is the time from just before that REST call (the first C-STORE follows at
once) to the moment an SR series of that study is visible in Orthanc (polled every 0.1 s).

Modes, all driven through the command line as an operator would run them (subprocesses with ``MCCAD_*`` env):

- ``embedded``: ``mccad serve`` alone (its own worker on the SQLite broker). The first study is reported apart
  (``cold``: it includes the worker loading the models); the others, sent one at a time, give ``warm`` latency.
- ``redis``: ``mccad serve`` on ``redis://127.0.0.1:6379/<db>`` plus one ``mccad worker --preload``; same latency
  figures.
- ``throughput``: Redis with ``--workers N`` workers; ``--throughput-studies`` studies are sent back to back and the
  rate is studies / (time until the last SR arrives) x 3600.

The Redis database ``--redis-db`` (default 14) is reserved for this benchmark: it is emptied (FLUSHDB) before and
after each Redis mode so that no message of an earlier run is consumed.

Run ``python -m bench.e2e`` (see bench/README.md). ``--quick`` uses small images and a toy model bundle (random
weights, tiny input size, written through the registry) so that it proves the plumbing in seconds; it measures
nothing about the real models.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    REPO_ROOT,
    BenchError,
    add_output_arguments,
    child_popen_options,
    children_die_with_us,
    children_peak_rss_mib,
    machine_info,
    print_report,
    progress,
    spawn_child,
    stop_children,
    summarise,
    track_child,
    write_report,
)
from tests.peers.orthanc import OrthancPeer
from tests.peers.ports import free_port, wait_for_port

TARGET_EMBEDDED_S = 60.0
POLL_S = 0.1


@dataclass
class Study:
    """One synthetic 4-view study as held by Orthanc."""

    study_uid: str
    orthanc_id: str
    files: list[Path]


# -- inputs -------------------------------------------------------------------------------------------------------
def make_studies(folder: Path, count: int, rows: int, cols: int) -> list[list[Path]]:
    """``count`` synthetic 4-view MG studies (training.simulate.synth); one list of files per study."""
    from training.simulate.synth import write_synthetic_dataset

    write_synthetic_dataset(folder, count, seed=11, rows=rows, cols=cols)
    studies = [sorted(d.glob("*.dcm")) for d in sorted(p for p in folder.iterdir() if p.is_dir())]
    studies = [s for s in studies if s]
    if len(studies) != count:
        raise BenchError(f"expected {count} synthetic studies in {folder}, found {len(studies)}")
    return studies


def write_toy_bundle(folder: Path) -> Path:
    """A model bundle with random weights and a tiny input size, through the registry (``--quick`` only)."""
    from models.classifier import ClassifierConfig, build_classifier
    from models.detector import DetectorConfig, build_detector
    from models.registry import ModelManifest, save_model

    import torch

    torch.manual_seed(0)
    det_cfg = DetectorConfig(min_size=96, max_size=160, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=20)
    common = {"version": "0.0.0-bench", "synthetic_only": True,
              "training_data": "none: random weights for the end-to-end benchmark's smoke run"}
    save_model(folder / "detector", build_detector(det_cfg, None, frozen_batchnorm=True),
               ModelManifest(name="bench-toy-detector", architecture="fpnnet-resnet50", role="detector",
                             classes=["background", "benign", "malignant"], **common))
    spp_cfg = ClassifierConfig(input_size=64)
    save_model(folder / "sppnet", build_classifier(spp_cfg),
               ModelManifest(name="bench-toy-sppnet", architecture="sppnet-resnet18", role="sppnet",
                             classes=["benign", "malignant"], **common))
    return folder


def upload(orthanc: OrthancPeer, files: list[Path]) -> Study:
    answers = [orthanc.upload(path) for path in files]
    study_ids = {a["ParentStudy"] for a in answers}
    if len(study_ids) != 1:
        raise BenchError(f"the files of one synthetic study landed in {len(study_ids)} Orthanc studies")
    study_id = study_ids.pop()
    uid = orthanc.rest("GET", f"/studies/{study_id}")["MainDicomTags"]["StudyInstanceUID"]
    return Study(uid, study_id, files)


# -- processes ----------------------------------------------------------------------------------------------------
def mccad_env(data_dir: Path, dicom_port: int, http_port: int, orthanc: OrthancPeer, broker_url: str | None,
              model_dir: Path | None, idle_s: float, device: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in [k for k in env if k.startswith("MCCAD_")]:
        del env[key]  # the benchmark's settings only
    env.update({
        "MCCAD_DATA_DIR": str(data_dir),
        "MCCAD_PORT": str(dicom_port),
        "MCCAD_HTTP_PORT": str(http_port),
        "MCCAD_DESTINATIONS": json.dumps([{"ae_title": orthanc.aet, "host": "127.0.0.1",
                                           "port": orthanc.dicom_port}]),
        "MCCAD_STUDY_IDLE_S": str(idle_s),
        "MCCAD_DEVICE": device,
        "MCCAD_LOG_FORMAT": "json",
    })
    if broker_url:
        env["MCCAD_BROKER_URL"] = broker_url
    if model_dir:
        env["MCCAD_MODEL_DIR"] = str(model_dir)
    return env


class Processes:
    """The mccad processes of one mode; stopped with SIGTERM (warm shutdown), killed with their process group if
    they linger. Each runs in its own process group and, on Linux, gets SIGKILL from the kernel should the benchmark
    die, however it dies (``bench.common.child_popen_options``)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.logdir / f"{name}.log", "wb") as log:  # the child writes to its own copy of the descriptor
            proc = spawn_child([sys.executable, "-m", "mccad", *args], env=env, cwd=REPO_ROOT, stdout=log,
                               stderr=subprocess.STDOUT)
        self.procs.append((name, proc))
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise BenchError(f"mccad {name} exited with code {proc.returncode}: {self.tail(name)}")

    def tail(self, name: str, chars: int = 1500) -> str:
        try:
            return (self.logdir / f"{name}.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        stop_children([proc for _, proc in self.procs], grace_s=60.0)
        self.procs.clear()


def wait_healthy(http_port: int, procs: Processes, timeout_s: float) -> None:
    """Until ``/healthz`` of ``mccad serve`` answers 200 (SCP listening, broker and ledger reachable)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        procs.check_alive()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = exc.read().decode(errors="replace")
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise BenchError(f"mccad serve not healthy after {timeout_s} s ({last}); log: {procs.tail('serve')}")


def flush_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).flushdb()
    except redis.RedisError as exc:
        raise BenchError(f"Redis at {url} is not usable ({exc}); start redis-server on 127.0.0.1:6379") from exc


# -- measuring ----------------------------------------------------------------------------------------------------
def sr_present(orthanc: OrthancPeer, study_uid: str) -> bool:
    found = orthanc.rest("POST", "/tools/find", {"Level": "Series",
                                                 "Query": {"StudyInstanceUID": study_uid, "Modality": "SR"}})
    return bool(found)


def send(orthanc: OrthancPeer, studies: list[Study]) -> None:
    orthanc.send_to("cad", [s.orthanc_id for s in studies])


def wait_for_srs(orthanc: OrthancPeer, studies: list[Study], procs: Processes, started: float,
                 timeout_s: float) -> dict[str, float]:
    """Seconds from ``started`` until an SR of each study is in Orthanc."""
    pending = {s.study_uid for s in studies}
    arrived: dict[str, float] = {}
    deadline = started + timeout_s
    while pending:
        now = time.perf_counter()
        if now > deadline:
            raise BenchError(f"{len(pending)} of {len(studies)} SRs not in Orthanc after {timeout_s} s; "
                             f"serve log: {procs.tail('serve', 800)}")
        for uid in list(pending):
            if sr_present(orthanc, uid):
                arrived[uid] = time.perf_counter() - started
                pending.discard(uid)
        procs.check_alive()
        if pending:
            time.sleep(POLL_S)
    return arrived


def latency_mode(name: str, orthanc: OrthancPeer, studies: list[Study], procs: Processes,
                 timeout_s: float) -> dict[str, Any]:
    """Send studies one at a time; the first is the cold figure, the rest the warm ones."""
    seconds = []
    for index, study in enumerate(studies):
        progress(f"{name}: study {index + 1}/{len(studies)}")
        started = time.perf_counter()
        send(orthanc, [study])
        seconds.append(wait_for_srs(orthanc, [study], procs, started, timeout_s)[study.study_uid])
    warm = seconds[1:]
    row: dict[str, Any] = {"mode": name, "workers": 1, "studies": len(studies), "cold_s": seconds[0],
                           "runs_s": seconds}
    if warm:
        stats = summarise(warm)
        row.update({"warm_median_s": stats.median_s, "warm_p95_s": stats.p95_s})
    return row


def throughput_mode(orthanc: OrthancPeer, studies: list[Study], procs: Processes, workers: int,
                    timeout_s: float) -> dict[str, Any]:
    progress(f"throughput: {len(studies)} studies, {workers} workers")
    started = time.perf_counter()
    send(orthanc, studies)
    arrived = wait_for_srs(orthanc, studies, procs, started, timeout_s)
    total = max(arrived.values())
    return {"mode": "throughput_redis", "workers": workers, "studies": len(studies), "total_s": total,
            "studies_per_hour": len(studies) / total * 3600.0, "runs_s": sorted(arrived.values())}


def run_mode(mode: str, args: argparse.Namespace, root: Path, orthanc: OrthancPeer, mccad_port: int,
             studies: list[Study], model_dir: Path | None, workers: int) -> dict[str, Any]:
    data_dir = root / f"data-{mode}"
    logdir = root / f"logs-{mode}"
    logdir.mkdir(parents=True, exist_ok=True)
    http_port = free_port()
    broker = None if mode == "embedded" else f"redis://127.0.0.1:6379/{args.redis_db}"
    env = mccad_env(data_dir, mccad_port, http_port, orthanc, broker, model_dir, args.idle_s, args.device)
    # N workers share the cores: each gets cores / N torch threads (two OpenMP pools on one core thrash)
    threads = args.threads or max(1, (os.cpu_count() or 1) // (workers if broker else 1))
    env["MCCAD_THREADS"] = str(threads)
    procs = Processes(logdir)
    if broker:
        flush_redis(broker)
    try:
        progress(f"{mode}: starting mccad serve" + (f" and {workers} worker(s)" if broker else ""))
        procs.start("serve", ["serve"], env)
        for index in range(workers if broker else 0):
            procs.start(f"worker{index}", ["worker", "--preload", "--hostname", f"bench{index}@%h"], env)
        wait_healthy(http_port, procs, args.start_timeout)
        wait_for_port(mccad_port, 10)
        if mode == "throughput":
            row = throughput_mode(orthanc, studies, procs, workers, args.timeout)
        else:
            row = latency_mode(f"{mode}", orthanc, studies, procs, args.timeout)
        row["logs"] = str(logdir) if args.keep else None
        row["threads_per_process"] = threads
        return row
    finally:
        procs.stop()
        row_rss = children_peak_rss_mib()
        progress(f"{mode}: stopped (largest child peak RSS so far {row_rss:.0f} MiB)")
        if broker:
            flush_redis(broker)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="embedded,redis,throughput",
                        help="comma list of embedded, redis, throughput")
    parser.add_argument("--studies", type=int, default=4, help="studies per latency mode (first one is cold)")
    parser.add_argument("--workers", type=int, default=2, help="Redis workers for the throughput mode")
    parser.add_argument("--threads", type=int, default=None,
                        help="MCCAD_THREADS of each mccad process (default: CPU cores / workers)")
    parser.add_argument("--throughput-studies", type=int, default=8, help="studies sent at once in throughput mode")
    parser.add_argument("--rows", type=int, default=2048, help="rows of the synthetic images")
    parser.add_argument("--cols", type=int, default=1280, help="columns of the synthetic images")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="model bundle for mccad (default: mccad's own default, models/weights/default)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="MCCAD_DEVICE for mccad")
    parser.add_argument("--redis-db", type=int, default=14, help="Redis DB reserved for the benchmark (flushed)")
    parser.add_argument("--idle-s", type=float, default=1.0, help="MCCAD_STUDY_IDLE_S (study complete after quiet)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the SRs of one send")
    parser.add_argument("--start-timeout", type=float, default=120.0, help="seconds for mccad serve to become healthy")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, spool) and print its path")
    add_output_arguments(parser, "e2e")
    args = parser.parse_args(argv)
    if args.quick:
        args.studies, args.throughput_studies = min(args.studies, 2), min(args.throughput_studies, 2)
        args.rows, args.cols, args.workers = min(args.rows, 256), min(args.cols, 160), min(args.workers, 2)
    if args.studies < 1 or args.workers < 1 or args.throughput_studies < 1:
        raise BenchError("--studies, --workers and --throughput-studies must be at least 1")
    return args


COLUMNS = ("mode", "workers", "studies", "cold_s", "warm_median_s", "warm_p95_s", "studies_per_hour", "error")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    machine = machine_info()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - {"embedded", "redis", "throughput"}
    if unknown:
        raise BenchError(f"unknown modes {sorted(unknown)}")
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    with ExitStack() as stack:
        stack.enter_context(children_die_with_us())  # SIGTERM unwinds through every finally; children die with us
        root = Path(tempfile.mkdtemp(prefix="mccad-bench-e2e-")) if args.keep else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="mccad-bench-e2e-")))
        model_dir = args.model_dir
        if args.quick and model_dir is None:
            model_dir = write_toy_bundle(root / "toy-bundle")
            notes.append("--quick: toy bundle with random weights and a 96-160 px input; measures the plumbing only")
        mccad_port = free_port()
        orthanc = OrthancPeer(root / "orthanc", modalities={"cad": ("MCCAD", "127.0.0.1", mccad_port)},
                              popen_kwargs=child_popen_options())
        stack.callback(orthanc.stop)
        orthanc.start()
        if orthanc.process is not None:
            track_child(orthanc.process)
        per_mode = {m: (args.throughput_studies if m == "throughput" else args.studies) for m in modes}
        progress(f"writing {sum(per_mode.values())} synthetic studies of {args.rows}x{args.cols} px")
        files = make_studies(root / "studies", sum(per_mode.values()), args.rows, args.cols)
        uploaded = [upload(orthanc, f) for f in files]
        offset = 0
        for mode in modes:
            batch = uploaded[offset:offset + per_mode[mode]]  # each mode gets studies no mode has seen
            offset += per_mode[mode]
            workers = args.workers if mode == "throughput" else 1
            try:
                rows.append(run_mode(mode, args, root, orthanc, mccad_port, batch, model_dir, workers))
            except BenchError as exc:
                rows.append({"mode": mode, "workers": workers, "error": str(exc)[:2000]})
        if args.keep:
            notes.append(f"work folder kept: {root}")
    embedded = next((r for r in rows if r["mode"] == "embedded" and "error" not in r), None)
    targets = {"embedded_under_s": TARGET_EMBEDDED_S, "applies": not args.quick}
    if embedded:
        figure = embedded.get("warm_median_s", embedded["cold_s"])
        targets.update({"embedded_warm_or_cold_s": figure, "embedded_cold_s": embedded["cold_s"],
                        "embedded_met": figure < TARGET_EMBEDDED_S,
                        "embedded_cold_met": embedded["cold_s"] < TARGET_EMBEDDED_S})
    doc = write_report(args.out, "e2e", args, machine, rows,
                       extra={"targets": targets, "model_dir": str(model_dir) if model_dir else "mccad default",
                              "children_peak_rss_mib": children_peak_rss_mib()}, notes=notes)
    print_report(doc, COLUMNS, "e2e: C-STORE of a 4-view study -> SR in Orthanc")
    print(f"written {args.out}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench.e2e: {exc}", file=sys.stderr)
        sys.exit(2)
