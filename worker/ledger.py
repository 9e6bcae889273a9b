"""The ledger: what happened to every study and instance, in a database that survives crashes.

Nothing received is lost, and every study is processed at least once: the broker only carries *requests to work*;
the ledger says what is true. Every state change is one conditional ``UPDATE ... WHERE state IN (...)`` so that two
processes racing on a study cannot both win (the assembler enqueues a study exactly once; a duplicate task message
finds nothing to do), and a crash at any point leaves a state from which ``mccad requeue`` can carry on.

States of a study::

    receiving ──idle──▶ complete ──published──▶ queued ──claimed──▶ analysing ──▶ sending ──▶ done
        ▲                                          ▲                  │  │                       │
        │                                          └──── retry ◀── failed (reason) ──▶ dead_lettered
        └──────────── a new instance re-opens complete / done / failed / dead_lettered ──────────┘

SQLite is the default (one file in ``data_dir``); any SQLAlchemy URL works, PostgreSQL included, for deployments
where SCP and GPU workers run on several hosts. Timestamps are UNIX seconds (UTC) so comparisons are portable.
"""
from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

RECEIVING = "receiving"
COMPLETE = "complete"
QUEUED = "queued"
ANALYSING = "analysing"
SENDING = "sending"
DONE = "done"
FAILED = "failed"
DEAD_LETTERED = "dead_lettered"
STATES = (RECEIVING, COMPLETE, QUEUED, ANALYSING, SENDING, DONE, FAILED, DEAD_LETTERED)

#: States from which a task may (re)start work: ``analysing``/``sending`` too, because a worker that died mid-task
#: leaves them behind and its message is delivered again (``task_reject_on_worker_lost`` / visibility timeout).
CLAIMABLE = (COMPLETE, QUEUED, ANALYSING, SENDING, FAILED)
#: Acknowledged but not finished: what recovery re-publishes (dead-lettered only when an operator asks).
UNFINISHED = (COMPLETE, QUEUED, ANALYSING, SENDING, FAILED)
#: A new instance for a study in one of these states makes it a study that is being received again.
REOPENABLE = (COMPLETE, DONE, FAILED, DEAD_LETTERED)
#: For the guard of :meth:`Ledger.claim` ``complete`` and ``queued`` are one state: the publisher writes
#: ``complete -> queued`` after the broker took the message, which an idle Redis worker may be claiming already.
#: Giving way to that write left the study ``queued`` with its only message acknowledged: a stalled study.
_CLAIM_SAME_STATE = {COMPLETE: (COMPLETE, QUEUED), QUEUED: (COMPLETE, QUEUED)}

#: What a study starts over with when it is re-opened, re-run or done.
_FRESH_BUDGETS: dict[str, Any] = dict(crashes=0, retry_at=None, delivery_failures=0, delivery_since=None)

INTERACTIVE = "interactive"
BATCH = "batch"

metadata = sa.MetaData()

studies = sa.Table(
    "mccad_studies", metadata,
    sa.Column("study_uid", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("reason", sa.Text, nullable=True, doc="last error, or why the study was dead-lettered"),
    sa.Column("attempts", sa.Integer, nullable=False, default=0, doc="claims since the last (re)queue by an operator"),
    sa.Column("failures", sa.Integer, nullable=False, default=0, doc="failed attempts over the study's lifetime"),
    sa.Column("instance_count", sa.Integer, nullable=False, default=0),
    sa.Column("queue", sa.String(16), nullable=True),
    sa.Column("model_dir", sa.Text, nullable=True, doc="model bundle asked for (None: the worker's default)"),
    sa.Column("model_used", sa.Text, nullable=True, doc="model bundle the last successful run used"),
    sa.Column("worker", sa.String(255), nullable=True, doc="host/pid of the worker that claimed it last"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False, index=True),
    sa.Column("last_instance_at", sa.Float, nullable=False),
    sa.Column("completed_at", sa.Float, nullable=True),
    sa.Column("queued_at", sa.Float, nullable=True),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True, index=True),
    sa.Column("duration_s", sa.Float, nullable=True, doc="wall time of the last successful task"),
    sa.Column("crashes", sa.Integer, nullable=False, default=0, server_default="0",
              doc="attempts ended by the death of the worker process (they do not spend ``attempts``)"),
    sa.Column("retry_at", sa.Float, nullable=True, doc="when a failed study is due to be published again"),
    sa.Column("delivery_failures", sa.Integer, nullable=False, default=0, server_default="0",
              doc="failed deliveries in a row (they do not spend ``attempts``; the back-off doubles with each)"),
    sa.Column("delivery_since", sa.Float, nullable=True, doc="first failed delivery of the current outage"),
)

workers = sa.Table(
    "mccad_workers", metadata,
    sa.Column("name", sa.String(255), primary_key=True, doc="host/pid, as in mccad_studies.worker"),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
)

instances = sa.Table(
    "mccad_instances", metadata,
    sa.Column("study_uid", sa.String(64), primary_key=True),
    sa.Column("sop_uid", sa.String(64), primary_key=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("calling_ae", sa.String(16), nullable=True),
    sa.Column("size_bytes", sa.BigInteger, nullable=True),
)


class LedgerError(RuntimeError):
    """The ledger database cannot be reached or used; the message names the URL without its password."""


@dataclass(frozen=True)
class StudyRecord:
    """One row of the studies table."""

    study_uid: str
    state: str
    reason: str | None
    attempts: int
    failures: int
    instance_count: int
    queue: str | None
    model_dir: str | None
    model_used: str | None
    worker: str | None
    created_at: float
    updated_at: float
    last_instance_at: float
    completed_at: float | None
    queued_at: float | None
    started_at: float | None
    finished_at: float | None
    duration_s: float | None
    crashes: int = 0
    retry_at: float | None = None
    delivery_failures: int = 0
    delivery_since: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class Claim:
    """What a task may do with a study: ``run`` (attempt number ``attempt``), ``skip`` or ``dead`` (gave up)."""

    action: str
    state: str | None
    attempt: int = 0
    started_at: float = 0.0
    model_dir: str | None = None
    reason: str | None = None
    crashed_before: bool = False  # the previous attempt ended with its worker process


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (the driver we install), unless psycopg2 is what is available."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        rest = url.split("://", 1)[1]
        try:
            import psycopg  # noqa: F401

            return "postgresql+psycopg://" + rest
        except ImportError:
            return "postgresql://" + rest
    return url


def _engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:  # WAL: readers never block the writer
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _add_missing_columns(engine: Engine) -> None:
    """Bring a ledger made by an earlier version up to this table definition (new columns only, with defaults)."""
    present = {c["name"] for c in sa.inspect(engine).get_columns(studies.name)}
    missing = [c for c in studies.columns if c.name not in present]
    if not missing:
        return
    with engine.begin() as conn:
        for column in missing:
            default = f" DEFAULT {column.server_default.arg}" if column.server_default is not None else ""
            null = " NOT NULL" if not column.nullable and default else ""
            conn.execute(sa.text(f"ALTER TABLE {studies.name} ADD COLUMN {column.name} "
                                 f"{column.type.compile(engine.dialect)}{default}{null}"))


def worker_is_gone(name: str | None, heartbeat_at: float | None, *, now: float, stale_s: float) -> bool:
    """Whether the worker process ``name`` (``host/pid``) that claimed a study is dead: its heartbeat is older than
    ``stale_s``, or it ran on this host and its process no longer exists (known at once, without waiting)."""
    if not name:
        return True
    host, _, pid = name.rpartition("/")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    return heartbeat_at is None or now - heartbeat_at > stale_s


class Ledger:
    """Study and instance states in one database; safe to share between threads, processes and hosts."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine = _engine(url)
            metadata.create_all(self.engine, checkfirst=True)
            _add_missing_columns(self.engine)
        except SQLAlchemyError as exc:
            raise LedgerError(f"cannot open the ledger at {self.safe_url}: {exc.__class__.__name__}: "
                              f"{str(exc).splitlines()[0]}") from exc

    @property
    def safe_url(self) -> str:
        return sa.engine.make_url(normalise_url(self.url)).render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    # receiving ---------------------------------------------------------------------------------------------------
    def record_instance(self, study_uid: str, sop_uid: str, path: str, *, calling_ae: str | None = None,
                        size_bytes: int | None = None, now: float | None = None) -> bool:
        """Register an instance that is on disk. Returns True when it is new to the ledger.

        A new instance of a study that was complete, done, failed or dead-lettered re-opens it (state
        ``receiving``, attempts reset): the study is analysed again with all its instances once it goes idle.
        A repeated instance (same SOP Instance UID) only refreshes its path: duplicate sends change nothing.
        While a study is queued or being analysed, a new instance leaves the state alone; :meth:`finish` sees
        that it arrived after the task started and re-opens the study instead of marking it done.
        """
        now = time.time() if now is None else now
        for _ in range(3):  # two SCP threads inserting the first instances of one study can collide once
            try:
                with self.engine.begin() as conn:
                    return self._record_instance(conn, study_uid, sop_uid, path, calling_ae, size_bytes, now)
            except IntegrityError:
                continue
        raise LedgerError(f"could not register instance of study {study_uid[:12]}... after 3 tries")

    @staticmethod
    def _record_instance(conn: sa.Connection, study_uid: str, sop_uid: str, path: str, calling_ae: str | None,
                         size_bytes: int | None, now: float) -> bool:
        key = (instances.c.study_uid == study_uid) & (instances.c.sop_uid == sop_uid)
        known = conn.execute(sa.select(instances.c.sop_uid).where(key)).first()
        if known:
            conn.execute(instances.update().where(key).values(path=path, size_bytes=size_bytes))
            return False
        conn.execute(instances.insert().values(study_uid=study_uid, sop_uid=sop_uid, path=path, received_at=now,
                                               calling_ae=calling_ae, size_bytes=size_bytes))
        row = conn.execute(sa.select(studies.c.state).where(studies.c.study_uid == study_uid)).first()
        if row is None:
            conn.execute(studies.insert().values(
                study_uid=study_uid, state=RECEIVING, attempts=0, failures=0, instance_count=1, created_at=now,
                updated_at=now, last_instance_at=now))
            return True
        values: dict[str, Any] = dict(instance_count=studies.c.instance_count + 1, last_instance_at=now, updated_at=now)
        if row.state in REOPENABLE:
            values.update(state=RECEIVING, attempts=0, reason=None, queue=None, **_FRESH_BUDGETS)
        conn.execute(studies.update().where(studies.c.study_uid == study_uid).values(**values))
        return True

    # assembling and queueing -------------------------------------------------------------------------------------
    def idle_studies(self, cutoff: float) -> list[str]:
        """Studies still receiving whose last instance arrived at or before ``cutoff``."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(studies.c.study_uid).where(
                (studies.c.state == RECEIVING) & (studies.c.last_instance_at <= cutoff))
                .order_by(studies.c.last_instance_at))
            return [r.study_uid for r in rows]

    def mark_complete(self, study_uid: str, cutoff: float, queue: str = INTERACTIVE) -> bool:
        """``receiving`` -> ``complete`` if still idle; True for exactly one caller however many race."""
        now = time.time()
        return self._transition(study_uid, (RECEIVING,), extra=studies.c.last_instance_at <= cutoff,
                                state=COMPLETE, completed_at=now, queue=queue)

    def mark_queued(self, study_uid: str) -> bool:
        """``complete`` -> ``queued`` after the task message was handed to the broker."""
        return self._transition(study_uid, (COMPLETE,), state=QUEUED, queued_at=time.time())

    def prepare_rerun(self, study_uid: str, *, queue: str, model_dir: str | None, states: Sequence[str]) -> bool:
        """For reprocessing or an operator's requeue: a study in ``states`` becomes ``complete`` on ``queue`` with
        a fresh attempt budget, ready to be published."""
        return self._transition(study_uid, tuple(states), state=COMPLETE, queue=queue, model_dir=model_dir,
                                attempts=0, reason=None, completed_at=time.time(), **_FRESH_BUDGETS)

    def republish_due(self, study_uid: str, states: Sequence[str]) -> bool:
        """After the supervisor published a study again: a ``failed`` study whose retry is due becomes ``queued``;
        a ``queued`` (or orphaned ``analysing``/``sending``) study only gets a new ``queued_at``."""
        now = time.time()
        if FAILED in states and self._transition(study_uid, (FAILED,), state=QUEUED, queued_at=now, retry_at=None):
            return True
        others = tuple(st for st in states if st != FAILED)
        return bool(others) and self._transition(study_uid, others, queued_at=now)

    # running -----------------------------------------------------------------------------------------------------
    def claim(self, study_uid: str, *, max_attempts: int, worker: str, max_crashes: int = 10,
              worker_stale_s: float = 60.0) -> Claim:
        """Start an attempt. A study that already failed ``max_attempts`` times is dead-lettered instead.

        A study left ``analysing`` or ``sending`` by a worker that is gone (:func:`worker_is_gone`: no heartbeat for
        ``worker_stale_s``, or its process on this host has exited) is taken over: that attempt ended in a crash of
        our own process, which costs the study a *crash* (``crashes``), not one of its ``max_attempts``; a study
        that stopped its worker ``max_crashes`` times is dead-lettered. While its worker is alive a duplicate
        message is skipped. Two messages for one study claimed at the same moment: one wins, the other skips."""
        record = self.get(study_uid)
        if record is None:
            return Claim("skip", None, reason="unknown study")
        if record.state not in CLAIMABLE:
            return Claim("skip", record.state, reason=f"study is {record.state}")
        now = time.time()
        crashed = record.state in (ANALYSING, SENDING)
        if crashed and not worker_is_gone(record.worker, self.heartbeat_of(record.worker), now=now,
                                          stale_s=worker_stale_s):
            return Claim("skip", record.state, reason=f"worker {record.worker} is still on this study")
        # another claim in between raised ``attempts``; a re-opened or finished study left the state (group) read
        guard = (studies.c.attempts == record.attempts) & (studies.c.crashes == record.crashes) & studies.c.state.in_(
            _CLAIM_SAME_STATE.get(record.state, (record.state,)))
        crashes = record.crashes + int(crashed)
        attempt = record.attempts if crashed else record.attempts + 1
        reason = None
        if crashed and crashes >= max_crashes:
            reason = (f"gave up: the worker process stopped during this study {crashes} times "
                      f"(max_crashes={max_crashes}); last error: {record.reason or 'none'}")
        elif not crashed and record.attempts >= max_attempts:
            reason = (f"gave up after {record.attempts} attempts (max_attempts={max_attempts}); "
                      f"last error: {record.reason or 'the worker stopped during the task'}")
        if reason is not None:
            if self._transition(study_uid, CLAIMABLE, extra=guard, state=DEAD_LETTERED, reason=reason,
                                finished_at=now, failures=studies.c.failures + 1, crashes=crashes, retry_at=None):
                return Claim("dead", DEAD_LETTERED, attempt=record.attempts, reason=reason)
        else:
            self.heartbeat(worker, now)  # before the claim is visible: a racing claim must see this worker alive
            if self._transition(study_uid, CLAIMABLE, extra=guard, state=ANALYSING, attempts=max(attempt, 1),
                                crashes=crashes, started_at=now, worker=worker, retry_at=None):
                return Claim("run", ANALYSING, attempt=max(attempt, 1), started_at=now,
                             model_dir=record.model_dir, crashed_before=crashed)
        return Claim("skip", None, reason="another worker changed the study at the same moment")

    # workers -----------------------------------------------------------------------------------------------------
    def heartbeat(self, worker: str, now: float | None = None) -> None:
        """Record that the worker process ``worker`` (``host/pid``) is alive."""
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            if conn.execute(workers.update().where(workers.c.name == worker).values(heartbeat_at=now)).rowcount:
                return
            try:
                with conn.begin_nested():
                    conn.execute(workers.insert().values(name=worker, heartbeat_at=now))
            except IntegrityError:  # inserted by another thread of the same worker meanwhile
                conn.execute(workers.update().where(workers.c.name == worker).values(heartbeat_at=now))

    def heartbeat_of(self, worker: str | None) -> float | None:
        if not worker:
            return None
        with self.engine.connect() as conn:
            return conn.execute(sa.select(workers.c.heartbeat_at).where(workers.c.name == worker)).scalar()

    def heartbeats(self) -> dict[str, float]:
        with self.engine.connect() as conn:
            return {r.name: r.heartbeat_at for r in conn.execute(sa.select(workers.c.name, workers.c.heartbeat_at))}

    def mark_sending(self, study_uid: str) -> bool:
        return self._transition(study_uid, (ANALYSING,), state=SENDING)

    def finish(self, study_uid: str, started_at: float, *, model_used: str | None = None) -> str | None:
        """End a successful attempt: ``done``, or ``receiving`` when instances arrived after the task started (the
        study is then assembled and analysed again with them). Returns the new state (None: not ours any more)."""
        now = time.time()
        reopened = self._transition(study_uid, (ANALYSING, SENDING), extra=studies.c.last_instance_at > started_at,
                                    state=RECEIVING, attempts=0, reason=None, finished_at=now,
                                    duration_s=now - started_at, model_used=model_used, **_FRESH_BUDGETS)
        if reopened:
            return RECEIVING
        if self._transition(study_uid, (ANALYSING, SENDING), state=DONE, reason=None, finished_at=now,
                            duration_s=now - started_at, model_used=model_used, retry_at=None,
                            delivery_failures=0, delivery_since=None):  # ``crashes`` stays: the study's history
            return DONE
        return None

    def fail(self, study_uid: str, reason: str, *, dead: bool, retry_at: float | None = None) -> bool:
        """Record a failed attempt: ``failed`` (published again at ``retry_at`` by the supervisor) or
        ``dead_lettered`` (no more automatic tries)."""
        return self._transition(study_uid, (ANALYSING, SENDING), state=DEAD_LETTERED if dead else FAILED,
                                reason=reason[:4000], failures=studies.c.failures + 1, finished_at=time.time(),
                                retry_at=None if dead else (time.time() if retry_at is None else retry_at))

    def fail_delivery(self, study_uid: str, reason: str, *, horizon_s: float, backoff_s: float,
                      backoff_max_s: float, now: float | None = None) -> tuple[str, float | None]:
        """Record a delivery that failed (the analysis succeeded): it spends no attempt. The study is ``failed``
        with ``retry_at`` after a back-off that doubles per failure (``backoff_s``, capped at ``backoff_max_s``),
        until ``horizon_s`` seconds after the first failure of this outage; then ``dead_lettered``.
        Returns (new state, retry_at)."""
        now = time.time() if now is None else now
        record = self.get(study_uid)
        if record is None or record.state not in (ANALYSING, SENDING):
            return (record.state if record else "unknown", None)
        since = record.delivery_since if record.delivery_since is not None else now
        failures = record.delivery_failures + 1
        common = dict(failures=studies.c.failures + 1, finished_at=now, delivery_failures=failures,
                      delivery_since=since, attempts=max(record.attempts - 1, 0))
        if now - since >= horizon_s:
            dead_reason = (f"delivery given up {now - since:.0f} s after its first failure "
                           f"(delivery_horizon_s={horizon_s:.0f}, {failures} tries); last error: {reason}")
            self._transition(study_uid, (ANALYSING, SENDING), state=DEAD_LETTERED, reason=dead_reason[:4000],
                             retry_at=None, **common)
            return DEAD_LETTERED, None
        retry_at = now + min(backoff_max_s, backoff_s * 2 ** (failures - 1))
        self._transition(study_uid, (ANALYSING, SENDING), state=FAILED, retry_at=retry_at,
                         reason=f"delivery failed ({failures} in a row, retrying): {reason}"[:4000], **common)
        return FAILED, retry_at

    def due_now(self, now: float | None = None) -> list[StudyRecord]:
        """``failed`` studies whose retry is due (``retry_at`` passed or unset)."""
        now = time.time() if now is None else now
        query = studies.select().where((studies.c.state == FAILED)
                                       & (studies.c.retry_at.is_(None) | (studies.c.retry_at <= now)))
        with self.engine.connect() as conn:
            return [StudyRecord(**r._mapping) for r in conn.execute(query.order_by(studies.c.retry_at))]

    def delivery_waiting(self) -> list[StudyRecord]:
        """``failed`` studies waiting for a destination to come back (their analysis is done)."""
        query = studies.select().where((studies.c.state == FAILED) & (studies.c.delivery_failures > 0))
        with self.engine.connect() as conn:
            return [StudyRecord(**r._mapping) for r in conn.execute(query)]

    def retry_now(self, study_uids: Iterable[str]) -> int:
        """Make the retries of ``study_uids`` (still ``failed``) due at once (a destination answers again)."""
        n = 0
        for uid in study_uids:
            n += self._transition(uid, (FAILED,), retry_at=time.time())
        return n

    # reading -----------------------------------------------------------------------------------------------------
    def get(self, study_uid: str) -> StudyRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(studies.select().where(studies.c.study_uid == study_uid)).first()
        return StudyRecord(**row._mapping) if row else None

    def studies_in(self, states: Iterable[str], *, since: float | None = None,
                   limit: int | None = None) -> list[StudyRecord]:
        """Studies in ``states`` (newest change last); ``since`` filters on the last change."""
        query = studies.select().where(studies.c.state.in_(list(states)))
        if since is not None:
            query = query.where(studies.c.updated_at >= since)
        query = query.order_by(studies.c.updated_at)
        if limit is not None:
            query = query.order_by(None).order_by(studies.c.updated_at.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [StudyRecord(**r._mapping) for r in conn.execute(query)]

    def finished_since(self, since: float) -> list[StudyRecord]:
        """Studies that reached ``done``, ``failed`` or ``dead_lettered`` at or after ``since`` (for reprocessing)."""
        query = studies.select().where(studies.c.state.in_([DONE, FAILED, DEAD_LETTERED])
                                       & (studies.c.finished_at >= since)).order_by(studies.c.finished_at)
        with self.engine.connect() as conn:
            return [StudyRecord(**r._mapping) for r in conn.execute(query)]

    def counts_by_state(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        with self.engine.connect() as conn:
            for state, n in conn.execute(sa.select(studies.c.state, sa.func.count()).group_by(studies.c.state)):
                counts[state] = int(n)
        return counts

    def total_failures(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(studies.c.failures), 0))).scalar_one())

    def duration_histogram(self, bounds: Sequence[float]) -> tuple[list[int], int, float]:
        """Cumulative counts of successful task durations per upper bound, total count and sum (Prometheus form)."""
        with self.engine.connect() as conn:
            measured = studies.c.duration_s.is_not(None)
            cumulative = [int(conn.execute(sa.select(sa.func.count()).where(measured & (studies.c.duration_s <= b)))
                              .scalar_one()) for b in bounds]
            count, total = conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(studies.c.duration_s),
                                                                                     0.0)).where(measured)).one()
        return cumulative, int(count), float(total)

    def instances_of(self, study_uid: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(instances.select().where(instances.c.study_uid == study_uid)
                                .order_by(instances.c.sop_uid))
            return [dict(r._mapping) for r in rows]

    def instance_keys(self) -> set[tuple[str, str]]:
        """(study UID, SOP UID) of every registered instance: what recovery compares the spool against."""
        with self.engine.connect() as conn:
            return {(r.study_uid, r.sop_uid) for r in conn.execute(sa.select(instances.c.study_uid,
                                                                              instances.c.sop_uid))}

    def count_instances(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(instances)).scalar_one())

    # --------------------------------------------------------------------------------------------------------------
    def _transition(self, study_uid: str, from_states: Sequence[str], *, extra: Any = None, **values: Any) -> bool:
        where = (studies.c.study_uid == study_uid) & studies.c.state.in_(list(from_states))
        if extra is not None:
            where = where & extra
        values.setdefault("updated_at", time.time())
        with self.engine.begin() as conn:
            return conn.execute(studies.update().where(where).values(**values)).rowcount == 1
