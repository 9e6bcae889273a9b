"""The task ``analyze_study``: spool -> pipeline -> output objects -> C-STORE to each destination -> ledger ``done``.

Celery's task guide (at-least-once processing, idempotent outputs): the message carries a study UID
(and optionally the model bundle for reprocessing), never pixels. Running it twice is harmless: outputs land in
``results_dir/<study_uid>/`` through durable writes, their UIDs are derived by the writer from the study UID and the
model versions, so a repeat replaces files and PACS objects instead of adding copies.

Attempts are counted in the ledger at claim time, not by Celery. Nothing here sleeps or asks Celery for a delayed
retry: a failure is written to the ledger with the time its retry is due (``retry_at``), and the supervisor
(:mod:`worker.supervisor`) publishes the study again then, so a waiting retry survives a broker or worker restart
and never holds a worker.

- An analysis error spends one of ``max_attempts``; the retry waits ``retry_backoff_s * 2**(attempt-1)``.
- A delivery error spends no attempt: the objects are kept (``work.json``) and re-sent with a back-off that doubles
  up to ``retry_backoff_max_s``, for ``delivery_horizon_s`` after the first failure, then the study is dead-lettered.
- An attempt ended by the death of the worker process (crash, kill, out of memory) spends one of ``max_crashes``
  instead (:meth:`worker.ledger.Ledger.claim`): a crash of ours is not the study's fault, but a study that kills its
  worker every time still stops.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pydicom
import torch
from celery import Celery, Task
from celery.signals import worker_process_init

from dicom_io.durable import write_text_durably
from dicom_io.errors import DicomInputError
from dicom_io.reader import read_mammogram
from dicom_io.scu import SendError, send_files
from dicom_io.spool import Spool
from dicom_io.tls import client_context
from models.pipeline import Pipeline
from settings.config import Settings
from settings.logs import short_uid
from settings.version import __version__
from worker.app import TASK_ANALYZE, make_celery
from worker.ledger import DONE, Claim, Ledger
from worker.memory import release_freed_memory
from worker.outputs import write_study_outputs

LOG = logging.getLogger("worker.tasks")


class PermanentStudyError(RuntimeError):
    """Retrying cannot help (no readable mammogram in the study): the study is dead-lettered at once."""


class DeliveryError(RuntimeError):
    """A destination refused or could not take the result objects."""


# --- per-process resources (a worker process loads each model bundle once) ------------------------------------------
_PIPELINES: dict[tuple[str, str, bool, str], Pipeline] = {}
_PIPELINE_LOCK = threading.Lock()
_LEDGERS: dict[str, Ledger] = {}
#: The process the resources above belong to (see :func:`_after_fork`).
_OWNER_PID = os.getpid()


def pipeline_for(model_dir: Path, device: str, threads: int | None = None, explain: bool = True,
                 runtime: str = "eager") -> Pipeline:
    """The loaded pipeline for a bundle, built on first use in this process (after any fork, so CUDA is safe, and
    so an ONNX Runtime session's threads belong to the process that uses them)."""
    key = (str(Path(model_dir).resolve()), device, explain, runtime)
    with _PIPELINE_LOCK:
        if key not in _PIPELINES:
            started = time.monotonic()
            if threads:
                torch.set_num_threads(threads)
            pipeline = Pipeline.from_model_dir(Path(model_dir), device=device, explain=explain, runtime=runtime)
            _PIPELINES[key] = pipeline
            LOG.info("model bundle loaded", extra={"event": "model_loaded", "model_dir": key[0], "device": device,
                                                   "runtime": pipeline.detector_runtime,
                                                   "seconds": round(time.monotonic() - started, 2)})
        return _PIPELINES[key]


def forget_pipelines() -> None:
    """Drop loaded models (called in a freshly forked child: CUDA state must not cross a fork)."""
    with _PIPELINE_LOCK:
        _PIPELINES.clear()


def ledger_for(settings: Settings) -> Ledger:
    url = settings.effective_ledger_url
    if url not in _LEDGERS:
        _LEDGERS[url] = Ledger(url)
    return _LEDGERS[url]


def worker_name() -> str:
    return f"{socket.gethostname()}/{os.getpid()}"


#: Seconds between two heartbeats of a worker process (``Settings.worker_stale_s`` must be several of these).
HEARTBEAT_S = 5.0
_HEARTBEATS: dict[str, threading.Thread] = {}


def ensure_heartbeat(ledger: Ledger) -> None:
    """Start (once per process and ledger) a daemon thread that writes this process's heartbeat every
    :data:`HEARTBEAT_S`: while it beats, a study it claimed is not taken over by another worker."""
    key = f"{os.getpid()}:{ledger.url}"
    if key in _HEARTBEATS and _HEARTBEATS[key].is_alive():
        return

    def beat() -> None:
        while True:
            try:
                ledger.heartbeat(worker_name())
            except Exception:  # the ledger is down for a moment: the next beat tries again
                LOG.warning("heartbeat not written", extra={"event": "heartbeat_failed"})
            time.sleep(HEARTBEAT_S)

    thread = threading.Thread(target=beat, name="mccad-heartbeat", daemon=True)
    thread.start()
    _HEARTBEATS[key] = thread


# --- the work itself ---------------------------------------------------------------------------------------------
def work_key(study_uid: str, instance_paths: list[Path], model_dir: Path) -> str:
    """Identifies one analysis: the instances (names, sizes, times), the model bundle's manifests and our version.
    When an attempt only failed to deliver, the next attempt finds the same key and re-sends without re-analysing."""
    digest = hashlib.sha256(f"{__version__}\x1f{study_uid}".encode())
    for path in instance_paths:
        st = path.stat()
        digest.update(f"\x1f{path.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    for manifest in sorted(Path(model_dir).glob("*/manifest.json")):
        digest.update(manifest.parent.name.encode() + manifest.read_bytes())
    return digest.hexdigest()


def analyse_from_spool(settings: Settings, study_uid: str, model_dir: Path) -> list[Path]:
    """Read the study's instances from the spool, run the pipeline, write every output; returns the DICOM objects
    to send. Outputs of an earlier attempt with the same :func:`work_key` are reused (``work.json`` records them)."""
    paths = Spool(settings.spool_dir).instances(study_uid)
    if not paths:
        raise PermanentStudyError("the spool holds no instance of this study (was the spool folder removed?)")
    out_dir = settings.results_dir / study_uid  # study_uid was validated by the spool (PS3.5 9.1 digits and dots)
    key = work_key(study_uid, paths, model_dir)
    record = out_dir / "work.json"
    if record.is_file():
        done = json.loads(record.read_text())
        objects = [out_dir / name for name in done.get("dicom_objects", [])]
        if done.get("key") == key and all(p.is_file() for p in objects):
            LOG.info("outputs of an earlier attempt reused", extra={"event": "outputs_reused",
                                                                     "study": short_uid(study_uid)})
            return objects
    images, sources, refused = [], {}, []
    for path in paths:
        try:
            image = read_mammogram(path, max_pixels=settings.max_pixels)
        except DicomInputError as exc:
            refused.append(f"{path.name[:16]}...: {type(exc).__name__}")
            LOG.warning("instance skipped: %s", type(exc).__name__,
                        extra={"event": "instance_skipped", "study": short_uid(study_uid), "detail": str(exc)[:200]})
            continue
        images.append(image)
        sources[image.meta.sop_instance_uid] = pydicom.dcmread(path, stop_before_pixels=True)
    if not images:
        raise PermanentStudyError(f"none of the {len(paths)} instances is a usable mammogram: {'; '.join(refused)}")
    analysis = pipeline_for(model_dir, settings.device, settings.threads, settings.explain,
                            settings.detector_runtime).analyze(images)
    outputs = write_study_outputs(analysis, images, out_dir, sources=sources, dicom=True)
    objects = list(outputs.dicom_objects)
    write_text_durably(record, json.dumps({"key": key, "model_dir": str(model_dir),
                                           "dicom_objects": [str(p.relative_to(out_dir)) for p in objects]}, indent=2))
    return objects


def deliver(settings: Settings, paths: list[Path]) -> list[str]:
    """C-STORE ``paths`` to every configured destination; raises :class:`DeliveryError` naming those that failed."""
    problems: list[str] = []
    delivered: list[str] = []
    for dest in settings.destinations:
        tls = client_context(settings.tls_ca, settings.tls_cert, settings.tls_key) if dest.tls else None
        try:
            result = send_files(paths, ae_title=dest.ae_title, host=dest.host, port=dest.port,
                                calling_ae=settings.ae_title, tls_context=tls, retries=settings.send_retries,
                                backoff_s=0.0)  # waiting is the ledger's job (retry_at), never a sleep here
        except SendError as exc:
            problems.append(f"{dest.ae_title}@{dest.host}:{dest.port}: {exc}")
            continue
        if result.failed:
            statuses = ", ".join(sorted({f"0x{s:04X}" for s in result.failed.values()}))
            problems.append(f"{dest.ae_title}@{dest.host}:{dest.port} refused {len(result.failed)} of {len(paths)} "
                            f"objects (status {statuses})")
        else:
            delivered.append(dest.ae_title)
    if problems:
        raise DeliveryError("; ".join(problems))
    return delivered


#: Exit status of a worker process stopped by the per-task time limit (systemd ``Restart=on-failure`` and
#: ``mccad serve`` start a fresh one).
EXIT_TIME_LIMIT = 75


def _time_limit_hit(settings: Settings, study_uid: str, limit_s: float) -> None:
    """The attempt outlived ``task_time_limit_s``: the study is dead-lettered with that reason, then this process
    exits at once. A computation inside PyTorch or NumPy cannot be interrupted from another thread, and the queue
    must not wait for it: the worker is restarted by its supervisor (``mccad serve``, systemd, compose) and the
    message, if Redis gives it back, finds the study dead-lettered and is skipped."""
    reason = (f"the analysis took longer than task_time_limit_s={limit_s:g} s and was stopped (a very large image "
              f"or too slow a worker); raise the limit or reprocess the study on a faster worker")
    try:
        ledger_for(settings).fail(study_uid, reason, dead=True)
        LOG.error("study stopped by the task time limit; the worker process exits", extra={
            "event": "task_time_limit", "study": short_uid(study_uid), "limit_s": limit_s})
    finally:
        logging.shutdown()
        os._exit(EXIT_TIME_LIMIT)


def run_study(task: Task, settings: Settings, study_uid: str, model_dir: str | None) -> dict[str, Any]:
    """One attempt at a study, with the ledger bookkeeping around it. Returns a small summary for logs.

    The attempt, from the moment the study is claimed, is bounded by ``settings.task_time_limit_s``
    (:func:`_time_limit_hit`): the limit starts with the claim, so a study is never failed while still ``queued``."""
    try:
        return _run_study(task, settings, study_uid, model_dir)
    finally:
        release_freed_memory()  # a large image's copies must not stay in the process through the next studies


def _start_watchdog(settings: Settings, study_uid: str) -> threading.Timer:
    """The time limit of a claimed attempt: :func:`_time_limit_hit` after ``task_time_limit_s`` unless cancelled."""
    watchdog = threading.Timer(settings.task_time_limit_s, _time_limit_hit,
                               args=(settings, study_uid, settings.task_time_limit_s))
    watchdog.daemon = True
    watchdog.start()
    return watchdog


def _run_study(task: Task, settings: Settings, study_uid: str, model_dir: str | None) -> dict[str, Any]:
    ledger = ledger_for(settings)
    ensure_heartbeat(ledger)
    claim = ledger.claim(study_uid, max_attempts=settings.max_attempts, worker=worker_name(),
                         max_crashes=settings.max_crashes, worker_stale_s=settings.worker_stale_s)
    tag = short_uid(study_uid)
    if claim.action == "skip":
        LOG.info("nothing to do for study: %s", claim.reason, extra={"event": "task_skipped", "study": tag})
        return {"study": tag, "action": "skip", "state": claim.state}
    if claim.action == "dead":
        LOG.error("study dead-lettered: %s", claim.reason, extra={"event": "dead_lettered", "study": tag})
        return {"study": tag, "action": "dead"}
    if claim.crashed_before:
        LOG.warning("taking over a study whose worker stopped during it (a crash: no attempt spent)",
                    extra={"event": "crash_recovered", "study": tag, "attempt": claim.attempt})
    bundle = Path(model_dir or claim.model_dir or settings.model_dir)
    watchdog = _start_watchdog(settings, study_uid)
    try:
        return _attempt(settings, ledger, claim, study_uid, bundle)
    finally:
        watchdog.cancel()


def _attempt(settings: Settings, ledger: Ledger, claim: Claim, study_uid: str, bundle: Path) -> dict[str, Any]:
    """Analyse a claimed study, deliver its objects and record the outcome in the ledger."""
    tag = short_uid(study_uid)
    LOG.info("analysing study", extra={"event": "task_started", "study": tag, "attempt": claim.attempt,
                                       "model_dir": str(bundle)})
    try:
        objects = analyse_from_spool(settings, study_uid, bundle)
    except PermanentStudyError as exc:
        ledger.fail(study_uid, f"{exc}", dead=True)
        LOG.error("study dead-lettered: %s", exc, extra={"event": "dead_lettered", "study": tag})
        return {"study": tag, "action": "dead"}
    except Exception as exc:
        reason = f"attempt {claim.attempt}: {type(exc).__name__}: {exc}"
        dead = claim.attempt >= settings.max_attempts
        countdown = settings.retry_backoff_s * (2 ** (claim.attempt - 1))
        ledger.fail(study_uid, reason, dead=dead, retry_at=time.time() + countdown)
        if dead:
            LOG.error("study dead-lettered after %d attempts", claim.attempt,
                      extra={"event": "dead_lettered", "study": tag, "reason": reason[:500]})
            return {"study": tag, "action": "dead"}
        LOG.warning("study failed, retry due in %.1f s", countdown,
                    extra={"event": "task_retry", "study": tag, "reason": reason[:500]})
        return {"study": tag, "action": "retry", "in_s": countdown}
    ledger.mark_sending(study_uid)
    try:
        delivered = deliver(settings, objects) if objects else []
    except Exception as exc:
        state, retry_at = ledger.fail_delivery(study_uid, f"{type(exc).__name__}: {exc}",
                                               horizon_s=settings.delivery_horizon_s,
                                               backoff_s=max(settings.retry_backoff_s, 0.1),
                                               backoff_max_s=settings.retry_backoff_max_s)
        if state == "dead_lettered":
            LOG.error("delivery given up after the delivery horizon", extra={
                "event": "dead_lettered", "study": tag, "reason": str(exc)[:500]})
            return {"study": tag, "action": "dead"}
        LOG.warning("delivery failed, next try in %.1f s", (retry_at or time.time()) - time.time(),
                    extra={"event": "delivery_retry", "study": tag, "reason": str(exc)[:500]})
        return {"study": tag, "action": "delivery_retry"}
    state = ledger.finish(study_uid, claim.started_at, model_used=str(bundle))
    LOG.info("study finished", extra={"event": "task_done" if state == DONE else "task_reopened", "study": tag,
                                      "state": str(state), "objects": len(objects),
                                      "destinations": ",".join(delivered),
                                      "seconds": round(time.time() - claim.started_at, 2)})
    return {"study": tag, "action": "run", "state": state}


def worker_app(settings: Settings) -> Celery:
    """The Celery app a worker consumes with: :func:`worker.app.make_celery`'s app with ``analyze_study``
    registered on it."""
    app = make_celery(settings)
    register_tasks(app)
    return app


def register_tasks(app: Celery) -> None:
    """Register ``mccad.analyze_study`` on ``app``; the task reads its settings from ``app.mccad_settings``."""
    @app.task(name=TASK_ANALYZE, bind=True, shared=False, acks_late=True, reject_on_worker_lost=True,
              ignore_result=True, max_retries=None)
    def analyze_study(self: Task, study_uid: str, model_dir: str | None = None) -> dict[str, Any]:
        return run_study(self, self.app.mccad_settings, study_uid, model_dir)


def _after_fork(**_: Any) -> None:
    """``worker_process_init``: in a forked pool child, drop what the parent loaded. The solo pool sends the signal
    in the worker's own process too; there nothing was forked and what ``mccad worker --preload`` loaded stays."""
    global _OWNER_PID
    if os.getpid() == _OWNER_PID:
        return
    _OWNER_PID = os.getpid()
    forget_pipelines()
    _LEDGERS.clear()  # database connections must not be shared with the parent process
    _HEARTBEATS.clear()  # threads do not cross a fork: the child beats for itself


worker_process_init.connect(_after_fork, weak=False)
