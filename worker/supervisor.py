"""The supervisor: every few seconds it reconciles the ledger (the truth about every study) with the broker (the
requests to work), so that no study stalls after a fault and no operator is needed.

Runs in ``mccad serve`` and in every ``mccad worker`` (several may run at once: publishing a study twice is harmless,
the second message finds it claimed or done). Each :meth:`Supervisor.tick`:

1. publishes every ``failed`` study whose retry is due (``retry_at``, written by the task that failed);
2. publishes again every ``queued`` study whose message is no longer waiting in the broker (a Redis restart without
   persistence, a purge), once it has been queued for ``lost_after_s``;
3. publishes again every ``analysing`` or ``sending`` study whose worker is gone (no heartbeat for
   ``worker_stale_s``, or its process on this host exited); the next claim takes it over as a crash;
4. probes the destinations (C-ECHO) while deliveries wait for them, and makes those retries due at once when every
   destination answers again;
5. removes the spooled instances of studies delivered ``spool_retention_s`` ago (:mod:`worker.retention`).

:func:`stuck_studies` says which studies wait longer than ``stuck_after_s`` and why: ``/healthz`` turns
``degraded`` with those reasons, ``mccad status`` lists them.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from settings.config import Settings
from settings.logs import short_uid
from worker.assembler import Publisher
from worker.ledger import (ANALYSING, COMPLETE, FAILED, INTERACTIVE, QUEUED, RECEIVING, SENDING, Ledger,
                           worker_is_gone)
from worker.retention import purge_delivered

LOG = logging.getLogger("worker.supervisor")

#: How often the destinations are probed while deliveries wait, and how often the spool retention runs (seconds).
PROBE_EVERY_S = 30.0
RETENTION_EVERY_S = 60.0


@dataclass
class TickReport:
    """What one tick did (study UIDs), for logs and tests."""

    retried: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    destinations_back: list[str] = field(default_factory=list)
    purged: int = 0


@dataclass(frozen=True)
class Stuck:
    """A study waiting longer than it should, with the reason an operator reads."""

    study_uid: str
    state: str
    waiting_s: float
    why: str


class Supervisor:
    """Reconciles one ledger with one broker; ``ready`` returns the study UIDs waiting in the broker (None: the
    broker cannot be read now, so nothing is concluded about lost messages)."""

    def __init__(self, settings: Settings, ledger: Ledger, publish: Publisher,
                 ready: Callable[[], set[str] | None], *, spool: object | None = None,
                 destinations_up: Callable[[], bool] | None = None) -> None:
        self.settings = settings
        self.ledger = ledger
        self.publish = publish
        self.ready = ready
        self.spool = spool
        self.destinations_up = destinations_up
        self.lost_after_s = max(3 * settings.supervise_interval_s, 1.0)
        self._next_tick = 0.0
        self._next_probe = 0.0
        self._next_retention = 0.0

    def tick_if_due(self) -> TickReport | None:
        """:meth:`tick` at most every ``supervise_interval_s``; errors are logged, never raised (it runs in a loop
        that must go on)."""
        now = time.monotonic()
        if now < self._next_tick:
            return None
        self._next_tick = now + self.settings.supervise_interval_s
        try:
            return self.tick()
        except Exception:
            LOG.exception("supervisor tick failed; trying again", extra={"event": "supervisor_error"})
            return None

    def tick(self, now: float | None = None) -> TickReport:
        """One reconciliation at ``now`` (default: the time of day): failed studies whose retry is due are published
        again, then messages the broker lost and studies of workers that are gone; deliveries waiting on
        destinations that answer again are made due, and delivered studies past retention are purged. A publish
        the broker refuses ends the tick there (the next one tries again)."""
        now = time.time() if now is None else now
        report = TickReport()
        if not self._retry_due(now, report) or not self._republish_lost(now, report):
            return report
        if self.destinations_up is not None and time.monotonic() >= self._next_probe:
            self._probe_destinations(now, report)
        if self.spool is not None and time.monotonic() >= self._next_retention:
            self._next_retention = time.monotonic() + RETENTION_EVERY_S
            report.purged = purge_delivered(self.ledger, self.spool, self.settings.spool_retention_s, now)[0]
        return report

    def _retry_due(self, now: float, report: TickReport) -> bool:
        """Publish the failed studies whose retry is due; False when the broker refused one."""
        for record in self.ledger.due_now(now):
            if not self._publish(record.study_uid, record.queue, record.model_dir, "retry due"):
                return False
            self.ledger.republish_due(record.study_uid, [FAILED])
            report.retried.append(record.study_uid)
        return True

    def _republish_lost(self, now: float, report: TickReport) -> bool:
        """Publish again the queued studies the broker no longer holds ("lost") and the studies in work whose worker
        is gone ("orphaned"), once they have waited ``lost_after_s``; nothing when the broker cannot be read. False
        when the broker refused a publish."""
        candidates = [r for r in self.ledger.studies_in([QUEUED, ANALYSING, SENDING])
                      if (r.queued_at or r.started_at or 0.0) <= now - self.lost_after_s]
        if not candidates:
            return True
        ready = self.ready()
        if ready is None:
            return True
        heartbeats = self.ledger.heartbeats()
        for r in candidates:
            if r.study_uid in ready:
                continue
            if r.state == QUEUED:
                kind = "lost"
            elif worker_is_gone(r.worker, heartbeats.get(r.worker or ""), now=now,
                                stale_s=self.settings.worker_stale_s):
                kind = "orphaned"
            else:
                continue
            if not self._publish(r.study_uid, r.queue, r.model_dir, f"message {kind}"):
                return False
            self.ledger.republish_due(r.study_uid, [r.state])
            getattr(report, kind).append(r.study_uid)
        return True

    def _probe_destinations(self, now: float, report: TickReport) -> None:
        """When deliveries wait for a later retry, ask whether the destinations answer again (at most every
        ``PROBE_EVERY_S``); if they do, those deliveries are due now."""
        waiting = [r.study_uid for r in self.ledger.delivery_waiting() if (r.retry_at or 0.0) > now]
        if not waiting:
            return
        self._next_probe = time.monotonic() + PROBE_EVERY_S
        if self.destinations_up():
            self.ledger.retry_now(waiting)
            report.destinations_back = waiting
            LOG.info("destinations answer again; %d deliveries are due now", len(waiting),
                     extra={"event": "destinations_back", "studies": len(waiting)})

    def _publish(self, study_uid: str, queue: str | None, model_dir: str | None, why: str) -> bool:
        try:
            self.publish(study_uid, queue or INTERACTIVE, model_dir)
        except Exception as exc:  # the broker is down: the next tick tries again
            LOG.warning("supervisor could not publish %s (%s): %s", short_uid(study_uid), why, exc,
                        extra={"event": "publish_failed", "study": short_uid(study_uid)})
            return False
        LOG.warning("study published again: %s", why, extra={"event": "republished", "study": short_uid(study_uid),
                                                             "why": why})
        return True


def stuck_studies(ledger: Ledger, settings: Settings, now: float | None = None) -> list[Stuck]:
    """Studies that have waited longer than ``settings.stuck_after_s`` in a state that should not last (or whose
    attempt outlived ``task_time_limit_s``), each with why. One query per state; no broker access (fast)."""
    now = time.time() if now is None else now
    limit = settings.stuck_after_s
    found: list[Stuck] = []
    heartbeats = ledger.heartbeats()
    for r in ledger.studies_in([RECEIVING, COMPLETE, QUEUED, ANALYSING, SENDING, FAILED]):
        if r.state == RECEIVING:
            since = r.last_instance_at + settings.study_idle_s
            why = "complete but not assembled: is `mccad serve` running?"
        elif r.state == COMPLETE:
            since, why = r.completed_at or r.updated_at, "not handed to the broker: is the broker reachable?"
        elif r.state == QUEUED:
            since, why = r.queued_at or r.updated_at, "queued, no worker has taken it: is a `mccad worker` running?"
        elif r.state in (ANALYSING, SENDING):
            since = r.started_at or r.updated_at
            gone = worker_is_gone(r.worker, heartbeats.get(r.worker or ""), now=now, stale_s=settings.worker_stale_s)
            why = (f"{r.state} by worker {r.worker}, which is gone; waiting to be taken over" if gone
                   else f"{r.state} by worker {r.worker} for longer than expected")
            if now - since > settings.task_time_limit_s + settings.worker_stale_s:
                found.append(Stuck(r.study_uid, r.state, now - since, why))
                continue
            if not gone:
                continue
        else:  # failed: waiting for its retry
            since = r.retry_at or r.updated_at
            if r.delivery_failures:
                why = f"delivery failing since {now - (r.delivery_since or now):.0f} s: {r.reason}"
                since = r.delivery_since or r.updated_at
            else:
                why = f"retry overdue: {r.reason}"
        if now - since > limit:
            found.append(Stuck(r.study_uid, r.state, now - since, why))
    return found
