"""What ``mccad serve`` runs: the Storage SCP, the assembler, health and metrics, and (embedded mode) a worker.

Start-up order keeps the promise that nothing received is lost: first the ledger is reconciled with the spool and every
acknowledged, unfinished study is published again; only then does the SCP accept new associations. Shutdown runs the
other way: the SCP stops accepting, the embedded worker gets SIGTERM (Celery's warm shutdown lets the running study
finish; if it does not within ``shutdown_grace_s`` it is killed and its study is re-published at the next start).

Embedded mode (no ``broker_url``): the worker is a child process (``python -P -m mccad worker --pool solo``) on the
SQLite broker; it is restarted, with a recovery pass, if it dies. With ``MCCAD_BROKER_URL=redis://...`` no worker is
started here: ``mccad worker`` runs on the GPU hosts.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from dicom_io.scp import SCPConfig, StorageSCP
from dicom_io.scu import echo
from dicom_io.spool import Spool
from dicom_io.tls import client_context
from settings.config import Settings
from settings.logs import short_uid
from worker.app import broker_reachable, make_celery, publish_study, queue_depths, ready_study_uids
from worker.assembler import Assembler
from worker.health import HealthServer, tcp_listening
from worker.ledger import Ledger
from worker.metrics import ServiceMetrics
from worker.recovery import register_spool, requeue
from worker.supervisor import Supervisor, stuck_studies

LOG = logging.getLogger("worker.service")

#: Shortest time between two restarts of a crashing embedded worker.
WORKER_RESTART_MIN_S = 5.0


def settings_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment that gives a child process exactly these settings (``MCCAD_*``, lists and objects as JSON)."""
    env = dict(os.environ if base is None else base)
    for name, value in settings.model_dump(mode="json").items():
        key = f"MCCAD_{name.upper()}"
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value if isinstance(value, str) else json.dumps(value)
    return env


def exit_with_parent(parent_pid: int) -> None:
    """Called in the embedded worker: on Linux it gets SIGTERM (a warm shutdown) when ``mccad serve`` dies, so no
    orphan keeps consuming; if the parent is already gone, exit now."""
    if sys.platform == "linux":
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            LOG.warning("cannot ask to be stopped with the parent process", extra={"event": "pdeathsig_failed"})
    if os.getppid() != parent_pid:
        raise SystemExit("mccad serve, which started this worker, is gone")


def scp_config(settings: Settings) -> SCPConfig:
    return SCPConfig(ae_title=settings.ae_title, host=settings.host, port=settings.port,
                     allowed_calling_aes=tuple(settings.allowed_calling_aes), accept_non_mg=settings.accept_non_mg,
                     max_associations=settings.max_associations, max_instance_bytes=settings.max_instance_bytes,
                     max_pixels=settings.max_pixels, tls_cert=settings.tls_cert, tls_key=settings.tls_key,
                     tls_ca=settings.tls_ca)


class Service:
    """The PACS-facing process. ``start()`` / ``stop()`` for tests, ``run()`` for the command line."""

    def __init__(self, settings: Settings, *, shutdown_grace_s: float = 120.0,
                 worker_args: tuple[str, ...] = ("--pool", "solo")) -> None:
        self.settings = settings
        self.shutdown_grace_s = shutdown_grace_s
        self.worker_args = worker_args
        self.stop_requested = threading.Event()
        self.worker_proc: subprocess.Popen[bytes] | None = None
        self._worker_started_at = 0.0
        self.scp: Any = None
        self.health: HealthServer | None = None
        self._refusals: logging.Handler | None = None
        self._recovered = False
        self._last_recovery = 0.0

    # -- wiring ----------------------------------------------------------------------------------------------------
    def _publish(self, study_uid: str, queue: str, model_dir: str | None) -> None:
        publish_study(self.app, study_uid, queue=queue, model_dir=model_dir)

    def start(self) -> "Service":
        s = self.settings
        self.ledger = Ledger(s.effective_ledger_url)
        self.spool = Spool(s.spool_dir)
        self.app = make_celery(s)
        self.metrics = ServiceMetrics(self.ledger, lambda: queue_depths(self.app), spool=self.spool)
        self.assembler = Assembler(self.ledger, self._publish, s.study_idle_s,
                                   on_registered=self.metrics.count_received)
        self.supervisor = Supervisor(s, self.ledger, self._publish, lambda: ready_study_uids(self.app),
                                     spool=self.spool, destinations_up=lambda: destinations_answer(s))
        self.recover()
        self._refusals = self.metrics.refusal_handler()
        logging.getLogger("dicom_io.scp").addHandler(self._refusals)
        self.scp = StorageSCP(scp_config(s), self.spool, on_received=self.assembler.on_received)
        self.scp.start()
        checks = {"scp": lambda: tcp_listening(s.host, self.scp.port), "broker": lambda: broker_reachable(self.app),
                  "ledger": self.ledger.ping}
        if s.embedded_broker:
            checks["worker"] = lambda: self.worker_proc is not None and self.worker_proc.poll() is None
            self.start_worker()
        self.health = HealthServer(s.http_host, s.http_port, checks, self.metrics.registry,
                                   degraded=self.degraded_reasons).start()
        LOG.info("mccad serve ready", extra={"event": "serve_ready", "scp_port": self.scp.port,
                                              "http_port": self.health.port, "embedded": s.embedded_broker})
        return self

    def degraded_reasons(self) -> list[str]:
        """Why ``/healthz`` says degraded: each stuck study (hashed UID) with its reason, the oldest first."""
        stuck = sorted(stuck_studies(self.ledger, self.settings), key=lambda st: -st.waiting_s)
        return [f"study {short_uid(st.study_uid)} {st.state} for {st.waiting_s:.0f} s: {st.why}" for st in stuck[:20]]

    def recover(self) -> None:
        """The start-up recovery pass (also after the embedded worker died): spool -> ledger -> broker. If the
        broker is down, :meth:`tick` repeats the pass until every unfinished study was published."""
        self._last_recovery = time.monotonic()
        register_spool(self.spool, self.ledger)
        report = requeue(self.ledger, self._publish, include_dead=False)
        self._recovered = not report.not_published
        if report.not_published:
            LOG.warning("broker unavailable during recovery; %d studies will be published when it is back",
                        len(report.not_published), extra={"event": "recovery_incomplete"})

    # -- embedded worker -------------------------------------------------------------------------------------------
    def start_worker(self) -> None:
        cmd = [sys.executable, "-P", "-m", "mccad", "worker", "--parent-pid", str(os.getpid()), *self.worker_args]
        self.worker_proc = subprocess.Popen(cmd, env=settings_env(self.settings))
        self._worker_started_at = time.monotonic()
        LOG.info("embedded worker started", extra={"event": "worker_started", "pid": self.worker_proc.pid})

    def supervise_worker(self) -> None:
        """Restart a dead embedded worker (not faster than every ``WORKER_RESTART_MIN_S``) after a recovery pass:
        the messages it had taken from the SQLite broker died with it."""
        proc = self.worker_proc
        if proc is None or proc.poll() is None:
            return
        if time.monotonic() - self._worker_started_at < WORKER_RESTART_MIN_S:
            return
        LOG.error("embedded worker exited with code %s; restarting it", proc.returncode,
                  extra={"event": "worker_died", "returncode": proc.returncode})
        self.recover()
        self.start_worker()

    def stop_worker(self) -> None:
        proc = self.worker_proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # Celery warm shutdown: the running study finishes
        try:
            proc.wait(self.shutdown_grace_s)
        except subprocess.TimeoutExpired:
            LOG.warning("worker did not stop in %.0f s; killing it (its study is re-queued at next start)",
                        self.shutdown_grace_s, extra={"event": "worker_killed"})
            proc.kill()
            proc.wait(10)

    # -- running ---------------------------------------------------------------------------------------------------
    def tick(self) -> None:
        try:
            if not self._recovered and time.monotonic() - self._last_recovery >= WORKER_RESTART_MIN_S:
                self.recover()
            self.assembler.tick()
        except Exception:
            LOG.exception("assembler tick failed; trying again", extra={"event": "assembler_error"})
        self.supervisor.tick_if_due()
        self.supervise_worker()

    def stop(self) -> None:
        if self.scp is not None:
            self.scp.stop()
            self.scp = None
        self.stop_worker()
        if self.health is not None:
            self.health.stop()
            self.health = None
        if self._refusals is not None:
            logging.getLogger("dicom_io.scp").removeHandler(self._refusals)
            self._refusals = None
        self.ledger.close()
        LOG.info("mccad serve stopped", extra={"event": "serve_stopped"})

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT, then shut down cleanly."""
        previous = {sig: signal.signal(sig, lambda *_: self.stop_requested.set())
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            interval = min(1.0, max(0.1, self.settings.study_idle_s / 4))
            while not self.stop_requested.wait(interval):
                self.tick()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if hasattr(self, "ledger"):
                self.stop()
        return 0


def destinations_answer(settings: Settings) -> bool:
    """True when every configured destination answers a C-ECHO now (the supervisor's probe while deliveries wait)."""
    for dest in settings.destinations:
        tls = client_context(settings.tls_ca, settings.tls_cert, settings.tls_key) if dest.tls else None
        if not echo(ae_title=dest.ae_title, host=dest.host, port=dest.port, calling_ae=settings.ae_title,
                    tls_context=tls, timeout_s=5):
            return False
    return bool(settings.destinations)


def model_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a model bundle, or None (checked before reprocessing with it)."""
    if not path.is_dir():
        return f"model folder {path} does not exist"
    if not (path / "detector" / "manifest.json").is_file():
        return f"{path} is not a model bundle (it has no detector/manifest.json)"
    return None
