"""The Celery app: how study work travels from the SCP host to the GPU workers.

An embedded default and a real production set-up: with no ``broker_url`` the broker is kombu's SQLAlchemy transport on a
SQLite file in ``data_dir`` (no server to run; ``mccad serve`` starts the worker as its own child process). With
``MCCAD_BROKER_URL=redis://...`` the same tasks run on any number of ``mccad worker`` processes on other hosts.

Settings follow Celery's guidance for long GPU tasks on Redis: JSON only, messages carry study UIDs (never
pixels), ``acks_late`` + ``reject_on_worker_lost`` (a message is acknowledged only when its task ended), prefetch 1
(a GPU worker holds one study at a time), a Redis ``visibility_timeout`` from settings that must exceed the longest
analysis plus queue wait. No result backend: the ledger is the truth about every study.

This module defines the app and how to publish to it; the task itself lives in :mod:`worker.tasks`, which imports
this module and registers ``analyze_study`` on an app (:func:`worker.tasks.worker_app`), as Celery's guide lays out
an application module and its tasks module. Publishing needs no registered task (messages name it), so the
PACS-facing process never loads the models.
"""
from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from settings.config import Settings
from settings.logs import short_uid
from worker.broker_peek import waiting_messages
from worker.ledger import BATCH, INTERACTIVE

TASK_ANALYZE = "mccad.analyze_study"
QUEUES = (INTERACTIVE, BATCH)


class BrokerUnavailable(RuntimeError):
    """The task message could not be handed to the broker; the study stays ``complete`` and is published later."""


def transport_options(settings: Settings) -> dict[str, Any]:
    """Broker options. For Redis, unacknowledged messages of a worker that died come back after the visibility
    timeout; the restore sweep runs often enough to honour a short timeout (tests, small sites)."""
    if not settings.effective_broker_url.startswith(("redis://", "rediss://")):
        return {}
    vt = int(settings.visibility_timeout_s)
    return {
        "visibility_timeout": vt,
        "unacked_restore_interval": max(1, min(60, vt // 4)),
        "unacked_restore_throttle": 1,
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
        "health_check_interval": 10,
    }


def make_celery(settings: Settings, *, main: str = "mccad") -> Celery:
    """A configured Celery app for publishing and inspecting our queues; building one touches no broker. A worker
    consumes with :func:`worker.tasks.worker_app`, which registers the task on it."""
    if settings.embedded_broker:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery(main, broker=settings.effective_broker_url, set_as_current=False)
    exchange = Exchange("mccad", type="direct")
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        # prefork pool: a child past the limit is killed; the study was already failed by the task's own watchdog
        task_time_limit=settings.task_time_limit_s + 60,
        worker_concurrency=1,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        task_queues=[Queue(name, exchange, routing_key=name) for name in QUEUES],
        task_default_queue=INTERACTIVE,
        task_default_exchange="mccad",
        task_default_routing_key=INTERACTIVE,
        task_create_missing_queues=False,
        broker_transport_options=transport_options(settings),
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5,
                                   "interval_max": 2.0},
        enable_utc=True,
    )
    app.mccad_settings = settings  # type: ignore[attr-defined]
    return app


def publish_study(app: Celery, study_uid: str, *, queue: str = INTERACTIVE, model_dir: str | None = None) -> None:
    """Hand an ``analyze_study`` request for one study to the broker; raises :class:`BrokerUnavailable`."""
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; use one of {', '.join(QUEUES)}")
    try:
        # argsrepr: Celery logs task arguments; UIDs go into logs only hashed.
        # exchange "": the nameless exchange routes by queue name. Through the "mccad" exchange kombu's Redis
        # transport looks the queue up in a binding set kept in Redis, which a restart without persistence empties
        # while the publisher's in-process cache says it is declared: every message would be dropped silently.
        app.send_task(TASK_ANALYZE, args=[study_uid], kwargs={"model_dir": model_dir}, queue=queue,
                      routing_key=queue, exchange="", argsrepr=f"[study {short_uid(study_uid)}]",
                      kwargsrepr=repr({"model_dir": model_dir}))
    except Exception as exc:  # kombu raises transport-specific errors (redis, sqlalchemy, socket)
        raise BrokerUnavailable(f"cannot publish study to queue {queue!r} on broker "
                                f"{safe_broker_url(app)}: {exc.__class__.__name__}: {exc}") from exc


def safe_broker_url(app: Celery) -> str:
    with app.connection_for_write() as conn:
        return conn.as_uri()  # kombu masks the password


def broker_reachable(app: Celery, timeout_s: float = 2.0) -> bool:
    """True when a connection to the broker can be opened now (the health check)."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout_s)
            conn.default_channel  # noqa: B018  (opens the channel: SQLite file, Redis socket)
        return True
    except Exception:
        return False


def queue_depths(app: Celery) -> dict[str, int]:
    """Messages waiting in each queue (not counting those a worker holds); raises when the broker is down."""
    depths: dict[str, int] = {}
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)  # fail fast: a scrape must not wait for the broker to come back
        channel = conn.default_channel
        for name in QUEUES:
            try:
                depths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
            except Exception:  # a queue nobody declared yet is empty
                depths[name] = 0
    return depths

def ready_study_uids(app: Celery) -> set[str] | None:
    """Study UIDs of the messages waiting in our queues now (not those a worker holds); None when the broker cannot
    be read. The supervisor publishes a ``queued`` study again when its message is not among them."""
    found = waiting_messages(app.mccad_settings)  # type: ignore[attr-defined]
    return None if found is None else {uid for uids in found.values() for uid in uids}
