"""The ledger's state machine on SQLite and, when the machine has one, PostgreSQL."""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from worker.ledger import (ANALYSING, COMPLETE, DEAD_LETTERED, DONE, FAILED, QUEUED, RECEIVING, Ledger)

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _postgres_url() -> tuple[str, str]:
    """A schema of our own in the machine's PostgreSQL, or a skip that says why there is none."""
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'mccad[postgres]')")
    schema = f"mccad_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_URL, connect_timeout=2, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {PG_URL}: {exc}")
    return f"{PG_URL}?options=-csearch_path%3D{schema}", schema


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request, tmp_path):
    if request.param == "sqlite":
        led = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
        yield led
        led.close()
        return
    url, schema = _postgres_url()
    led = Ledger(url)
    yield led
    led.close()
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_instances_open_a_study_and_duplicates_change_nothing(ledger):
    assert ledger.record_instance("1.2.3", "1.2.3.1", "/spool/a", now=100.0)
    assert ledger.record_instance("1.2.3", "1.2.3.2", "/spool/b", now=101.0)
    assert not ledger.record_instance("1.2.3", "1.2.3.1", "/spool/a2", now=102.0)
    study = ledger.get("1.2.3")
    assert (study.state, study.instance_count, study.last_instance_at) == (RECEIVING, 2, 101.0)
    assert [i["path"] for i in ledger.instances_of("1.2.3")] == ["/spool/a2", "/spool/b"]


def test_an_idle_study_is_completed_and_queued_exactly_once_under_contention(ledger):
    ledger.record_instance("1.2.4", "1.2.4.1", "/p", now=10.0)
    ledger.record_instance("1.2.5", "1.2.5.1", "/p", now=50.0)
    assert ledger.idle_studies(cutoff=20.0) == ["1.2.4"]
    wins: list[bool] = []
    threads = [threading.Thread(target=lambda: wins.append(ledger.mark_complete("1.2.4", cutoff=20.0)))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 5 + [True]
    assert ledger.mark_queued("1.2.4") and not ledger.mark_queued("1.2.4")
    assert ledger.get("1.2.4").state == QUEUED and ledger.get("1.2.5").state == RECEIVING


def test_attempts_are_counted_per_failure_and_the_study_is_dead_lettered_after_the_last(ledger):
    ledger.record_instance("1.2.6", "1.2.6.1", "/p", now=1.0)
    ledger.mark_complete("1.2.6", cutoff=5.0)
    first = ledger.claim("1.2.6", max_attempts=2, worker="w/1")
    assert (first.action, first.attempt) == ("run", 1) and ledger.get("1.2.6").state == ANALYSING
    assert ledger.fail("1.2.6", "boom", dead=False) and ledger.get("1.2.6").state == FAILED
    second = ledger.claim("1.2.6", max_attempts=2, worker="w/2")
    assert (second.action, second.attempt) == ("run", 2)
    assert ledger.fail("1.2.6", "boom again", dead=False)
    third = ledger.claim("1.2.6", max_attempts=2, worker="w/3")
    record = ledger.get("1.2.6")
    assert third.action == "dead" and record.state == DEAD_LETTERED
    assert "gave up after 2 attempts" in record.reason and "boom again" in record.reason
    assert ledger.claim("1.2.6", max_attempts=2, worker="w/4").action == "skip"
    assert ledger.total_failures() == 3


def test_a_crash_of_the_worker_spends_no_attempt_but_a_crash_budget(ledger):
    """The message of a study whose worker died comes back while it is still ``analysing``: taking it over costs a
    crash, not an attempt, so three crashes of a healthy study do not dead-letter it (max_attempts=2 here); a study
    that stops its worker ``max_crashes`` times is dead-lettered. A duplicate message while the worker is alive
    (its heartbeat is fresh) is skipped."""
    ledger.record_instance("1.2.5", "1.2.5.1", "/p", now=1.0)
    ledger.mark_complete("1.2.5", cutoff=5.0)
    assert ledger.claim("1.2.5", max_attempts=2, worker="w/1").attempt == 1
    duplicate = ledger.claim("1.2.5", max_attempts=2, worker="w/2")  # w/1 beat just now: it is alive
    assert duplicate.action == "skip" and ledger.get("1.2.5").worker == "w/1"
    for n in range(1, 4):  # w/n died (no heartbeat for longer than worker_stale_s)
        takeover = ledger.claim("1.2.5", max_attempts=2, worker=f"w/{n + 1}", max_crashes=5, worker_stale_s=0.0)
        assert (takeover.action, takeover.attempt, takeover.crashed_before) == ("run", 1, True)
        assert (ledger.get("1.2.5").crashes, ledger.get("1.2.5").attempts) == (n, 1)
    last = None
    for n in range(4, 6):
        last = ledger.claim("1.2.5", max_attempts=2, worker=f"w/{n + 1}", max_crashes=5, worker_stale_s=0.0)
    record = ledger.get("1.2.5")
    assert last.action == "dead" and record.state == DEAD_LETTERED and record.crashes == 5
    assert "stopped during this study 5 times" in record.reason


def test_a_worker_process_that_exited_on_this_host_is_known_dead_at_once(ledger):
    import os
    import socket
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = f"{socket.gethostname()}/{proc.stdout.strip()}"
    ledger.record_instance("1.2.4", "1.2.4.1", "/p", now=1.0)
    ledger.mark_complete("1.2.4", cutoff=5.0)
    assert ledger.claim("1.2.4", max_attempts=2, worker=dead).action == "run"  # its heartbeat is fresh
    takeover = ledger.claim("1.2.4", max_attempts=2, worker=f"{socket.gethostname()}/{os.getpid()}")
    assert (takeover.action, takeover.crashed_before) == ("run", True)


def test_finish_marks_done_or_reopens_when_instances_arrived_during_the_task(ledger):
    ledger.record_instance("1.2.7", "1.2.7.1", "/p", now=1.0)
    ledger.mark_complete("1.2.7", cutoff=5.0)
    claim = ledger.claim("1.2.7", max_attempts=3, worker="w")
    assert ledger.mark_sending("1.2.7")
    assert ledger.finish("1.2.7", claim.started_at, model_used="/m") == DONE
    record = ledger.get("1.2.7")
    assert record.duration_s is not None and record.duration_s >= 0 and record.model_used == "/m"
    assert ledger.claim("1.2.7", max_attempts=3, worker="w").action == "skip"  # duplicate message: nothing to do

    # a later instance re-opens a done study ...
    assert ledger.record_instance("1.2.7", "1.2.7.2", "/q")
    assert ledger.get("1.2.7").state == RECEIVING
    # ... and one arriving while it is analysed sends it back to receiving instead of done
    ledger.mark_complete("1.2.7", cutoff=time.time() + 1)
    claim = ledger.claim("1.2.7", max_attempts=3, worker="w")
    ledger.record_instance("1.2.7", "1.2.7.3", "/r", now=claim.started_at + 0.5)
    assert ledger.get("1.2.7").state == ANALYSING
    assert ledger.finish("1.2.7", claim.started_at) == RECEIVING
    assert ledger.get("1.2.7").instance_count == 3


def test_rerun_gives_a_fresh_budget_and_reports_count_states(ledger):
    ledger.record_instance("1.2.8", "1.2.8.1", "/p", now=1.0)
    ledger.mark_complete("1.2.8", cutoff=5.0)
    ledger.claim("1.2.8", max_attempts=1, worker="w")
    ledger.fail("1.2.8", "destination down", dead=True)
    assert ledger.prepare_rerun("1.2.8", queue="batch", model_dir="/models/v2", states=[DEAD_LETTERED])
    record = ledger.get("1.2.8")
    assert (record.state, record.attempts, record.queue, record.model_dir) == (COMPLETE, 0, "batch", "/models/v2")
    assert not ledger.prepare_rerun("1.2.8", queue="batch", model_dir=None, states=[DONE])
    counts = ledger.counts_by_state()
    assert counts[COMPLETE] == 1 and sum(counts.values()) == 1
    assert [r.study_uid for r in ledger.studies_in([COMPLETE])] == ["1.2.8"]
    cumulative, count, total = ledger.duration_histogram([1.0, 10.0])
    assert (cumulative, count, total) == ([0, 0], 0, 0.0)


def test_an_unreachable_ledger_says_where_it_looked():
    from worker.ledger import LedgerError

    with pytest.raises(LedgerError, match=r"127\.0\.0\.1:1/nothing") as err:
        Ledger("postgresql://mccad:secret@127.0.0.1:1/nothing")
    assert "secret" not in str(err.value)


def test_simultaneous_claims_count_every_attempt_exactly_once(ledger):
    """Claims race through an optimistic guard (state and attempt count): each run gets its own attempt number.
    A claim that finds the study already being analysed takes it over (its worker may be dead): duplicates are
    harmless because outputs are idempotent, but they must never share or lose an attempt."""
    ledger.record_instance("1.2.9", "1.2.9.1", "/p", now=1.0)
    ledger.mark_complete("1.2.9", cutoff=5.0)
    claims = []
    threads = [threading.Thread(target=lambda i=i: claims.append(ledger.claim("1.2.9", max_attempts=3,
                                                                               worker=f"w/{i}")))
               for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runs = sorted(c.attempt for c in claims if c.action == "run")
    assert len(claims) == 6 and runs == list(range(1, len(runs) + 1))
    assert ledger.get("1.2.9").attempts == len(runs) <= 3  # and a fourth claim would dead-letter, never run
