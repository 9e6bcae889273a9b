"""Faults around the broker, each ending with "nothing acknowledged is lost" checked by counting instances:
a worker process killed in the middle of a study, and Redis stopped and restarted while studies are queued."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker

from dicom_io.spool import Spool
from tests.peers.ports import free_port
from tests.peers.redis_server import start_redis
from tests.worker.conftest import make_settings
from tests.worker.studies import spool_study, wait_for_state, write_study
from worker.app import make_celery, publish_study, queue_depths
from worker.assembler import Assembler
from worker.ledger import ANALYSING, COMPLETE, DONE, QUEUED, Ledger
from worker.service import settings_env
from worker.tasks import worker_app


def _assembler(ledger, app, settings) -> Assembler:
    return Assembler(ledger, lambda uid, q, m: publish_study(app, uid, queue=q, model_dir=m), settings.study_idle_s)


def _start_worker_process(settings, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-P", "-m", "mccad", "worker", "--pool", "solo"],
                            env=settings_env(settings), stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _assert_nothing_lost(settings, ledger, expected: int) -> None:
    spooled = sum(len(Spool(settings.spool_dir).instances(uid)) for uid in Spool(settings.spool_dir).studies())
    assert spooled == ledger.count_instances() == expected


@pytest.mark.slow
def test_a_worker_killed_mid_study_is_replaced_and_the_study_finishes(tmp_path, redis_url, tiny_model_dir):
    settings = make_settings(tmp_path, broker_url=redis_url, model_dir=tiny_model_dir, visibility_timeout_s=4)
    study = write_study(tmp_path / "in", "killed", views=1)
    spool_study(settings, study)
    ledger, app = Ledger(settings.effective_ledger_url), make_celery(settings)
    assert _assembler(ledger, app, settings).tick(now=time.time() + 5) == [study.study_uid]
    log = tmp_path / "workers.log"
    first = _start_worker_process(settings, log)
    try:
        wait_for_state(ledger, study.study_uid, {ANALYSING}, timeout_s=120, interval_s=0.05)
    finally:
        first.kill()  # SIGKILL: no warm shutdown, no acknowledgement, the message stays unacked in Redis
        first.wait(30)
    assert ledger.get(study.study_uid).state == ANALYSING, log.read_text()[-3000:]
    second = _start_worker_process(settings, log)
    try:
        record = wait_for_state(ledger, study.study_uid, {DONE}, timeout_s=240)
    finally:
        second.terminate()
        second.wait(60)
    # the kill was a crash of our own process: it spends the crash budget, not one of the study's attempts
    assert (record.attempts, record.crashes) == (1, 1), "the redelivered message took over as the same attempt"
    assert (settings.results_dir / study.study_uid / "result.json").is_file()
    _assert_nothing_lost(settings, ledger, expected=1)


@pytest.mark.slow
def test_redis_restart_while_studies_are_queued_loses_nothing(tmp_path, tiny_model_dir):
    port = free_port()
    redis = start_redis(port, tmp_path / "redis")  # our own Redis: the machine's one is never stopped
    try:
        settings = make_settings(tmp_path, broker_url=f"redis://127.0.0.1:{port}/0", model_dir=tiny_model_dir)
        ledger, app = Ledger(settings.effective_ledger_url), worker_app(settings)
        assembler = _assembler(ledger, app, settings)
        queued = write_study(tmp_path / "in", "before-restart", views=1)
        spool_study(settings, queued)
        assert assembler.tick(now=time.time() + 5) == [queued.study_uid]
        assert queue_depths(app)["interactive"] == 1

        redis.terminate()  # Redis goes away with a study queued ...
        redis.wait(30)
        during = write_study(tmp_path / "in", "during-outage", views=1, seed=1)
        spool_study(settings, during)  # ... and another study arrives meanwhile
        assert assembler.tick(now=time.time() + 5) == []
        assert ledger.get(during.study_uid).state == COMPLETE and ledger.get(queued.study_uid).state == QUEUED

        redis = start_redis(port, tmp_path / "redis")
        assert queue_depths(app)["interactive"] == 1, "appendonly kept the queued message"
        assert assembler.tick() == [during.study_uid]
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=60):
            for study in (queued, during):
                wait_for_state(ledger, study.study_uid, {DONE}, timeout_s=240)
        _assert_nothing_lost(settings, ledger, expected=2)
        assert queue_depths(app) == {"interactive": 0, "batch": 0}
    finally:
        redis.terminate()
        redis.wait(30)
