"""The assembler on the real embedded broker (kombu SQLAlchemy transport): idle studies are queued exactly once,
a broker outage leaves them complete until it is back, and start-up recovery repairs the ledger from the spool."""
from __future__ import annotations

import time

from dicom_io.spool import Spool
from tests.peers.ports import free_port
from tests.worker.conftest import make_settings
from worker.app import make_celery, publish_study, queue_depths
from worker.assembler import Assembler
from worker.ledger import BATCH, COMPLETE, DEAD_LETTERED, DONE, QUEUED, RECEIVING, Ledger
from worker.recovery import register_spool, requeue


def _publisher(app):
    return lambda uid, queue, model_dir: publish_study(app, uid, queue=queue, model_dir=model_dir)


def test_idle_studies_are_published_once_each(tmp_path):
    settings = make_settings(tmp_path, study_idle_s=5.0)
    ledger, app = Ledger(settings.effective_ledger_url), make_celery(settings)
    assembler = Assembler(ledger, _publisher(app), settings.study_idle_s)
    ledger.record_instance("1.9.1", "1.9.1.1", "/p", now=100.0)
    ledger.record_instance("1.9.1", "1.9.1.2", "/p", now=103.0)
    ledger.record_instance("1.9.2", "1.9.2.1", "/p", now=106.0)
    assert assembler.tick(now=107.0) == []  # last instance 4 s ago: still receiving
    assert assembler.tick(now=108.5) == ["1.9.1"]
    assert assembler.tick(now=108.6) == []  # exactly once
    assert assembler.tick(now=111.5) == ["1.9.2"]
    assert ledger.get("1.9.1").state == QUEUED and ledger.get("1.9.2").state == QUEUED
    assert queue_depths(app) == {"interactive": 2, "batch": 0}
    with app.connection_for_read() as conn:  # the message is JSON with the study UID and nothing else
        message = conn.SimpleQueue("interactive", no_ack=True).get(timeout=5)
        assert message.headers["task"] == "mccad.analyze_study" and message.content_type == "application/json"
        assert message.decode()[0] == ["1.9.1"]


def test_a_broker_outage_keeps_studies_complete_until_it_is_back(tmp_path):
    down = make_settings(tmp_path, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    ledger = Ledger(down.effective_ledger_url)
    ledger.record_instance("1.9.3", "1.9.3.1", "/p", now=1.0)
    started = time.monotonic()
    assert Assembler(ledger, _publisher(make_celery(down)), 0.5).tick() == []
    assert time.monotonic() - started < 30
    assert ledger.get("1.9.3").state == COMPLETE
    up = make_settings(tmp_path)  # same data_dir: same ledger, embedded broker reachable
    app = make_celery(up)
    assert Assembler(ledger, _publisher(app), 0.5).tick() == ["1.9.3"]
    assert ledger.get("1.9.3").state == QUEUED and queue_depths(app)["interactive"] == 1


def test_recovery_registers_spooled_instances_and_republishes_unfinished_studies(tmp_path):
    settings = make_settings(tmp_path)
    spool, ledger, app = Spool(settings.spool_dir), Ledger(settings.effective_ledger_url), make_celery(settings)
    # acknowledged to the sender, but the process died before the ledger heard of them
    spool.store("1.8.1", "1.8.1.1", b"DICM-ish bytes")
    spool.store("1.8.1", "1.8.1.2", b"DICM-ish bytes")
    ledger.record_instance("1.8.1", "1.8.1.1", str(spool.path_for("1.8.1", "1.8.1.1")))
    # studies left behind in every state by a crash
    for uid, state in [("1.8.2", QUEUED), ("1.8.3", "analysing"), ("1.8.4", DEAD_LETTERED), ("1.8.5", DONE)]:
        ledger.record_instance(uid, uid + ".1", "/p", now=1.0)
        ledger.mark_complete(uid, cutoff=2.0)
        if state != COMPLETE:
            ledger.mark_queued(uid)
        if state in ("analysing", DEAD_LETTERED, DONE):
            claim = ledger.claim(uid, max_attempts=3, worker="w")
            if state == DEAD_LETTERED:
                ledger.fail(uid, "kills the worker", dead=True)
            elif state == DONE:
                ledger.finish(uid, claim.started_at)

    assert register_spool(spool, ledger) == 1
    assert register_spool(spool, ledger) == 0
    assert ledger.get("1.8.1").instance_count == 2 and ledger.get("1.8.1").state == RECEIVING
    report = requeue(ledger, _publisher(app), include_dead=False)
    assert sorted(report.published) == ["1.8.2", "1.8.3"]
    assert queue_depths(app) == {"interactive": 2, "batch": 0}
    operator = requeue(ledger, _publisher(app), include_dead=True, study_uids=["1.8.4", "1.8.5"], queue=BATCH)
    assert operator.published == ["1.8.4"] and operator.reopened_dead == ["1.8.4"]
    assert operator.skipped == {"1.8.5": DONE}
    assert ledger.get("1.8.4").state == QUEUED and ledger.get("1.8.4").attempts == 0
