"""``mccad worker`` outlives a restart of Redis in every state it can be in: idle, in the middle of a study (its
message unacknowledged: kombu 5.7's ``restore_unacked`` raised AttributeError and Celery stopped the worker), and
with a study waiting for its retry. Each case ends with the study done and the same worker process still running.

Redis here is our own server on a free port, with the persistence the runbook prescribes (appendonly); the machine's
Redis on 6379 is never touched."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.peers.ports import free_port
from tests.peers.redis_server import start_redis
from tests.worker.conftest import make_settings
from tests.worker.studies import spool_study, wait_for_state, write_study
from worker.app import make_celery, publish_study
from worker.assembler import Assembler
from worker.ledger import ANALYSING, DONE, FAILED, Ledger
from worker.service import settings_env


def _restart(redis: subprocess.Popen, port: int, folder: Path, down_s: float = 1.0) -> subprocess.Popen:
    redis.terminate()
    redis.wait(30)
    time.sleep(down_s)
    return start_redis(port, folder)


@pytest.mark.slow
@pytest.mark.parametrize("moment,pool", [("idle", "solo"), ("mid-task", "solo"), ("mid-task", "prefork"),
                                         ("waiting-for-retry", "solo")])
def test_the_worker_outlives_a_redis_restart(tmp_path, tiny_model_dir, moment, pool):
    """With the prefork pool the worker's consumer keeps polling Redis during the study, sees the connection drop
    and closes its channel holding the study's unacknowledged message: the case kombu's restore failed on."""
    port, folder = free_port(), tmp_path / "redis"
    redis = start_redis(port, folder)
    settings = make_settings(tmp_path, broker_url=f"redis://127.0.0.1:{port}/0", model_dir=tiny_model_dir,
                             retry_backoff_s=4.0, supervise_interval_s=0.5)
    ledger, app = Ledger(settings.effective_ledger_url), make_celery(settings)
    assembler = Assembler(ledger, lambda uid, q, m: publish_study(app, uid, queue=q, model_dir=m),
                          settings.study_idle_s)
    study = write_study(tmp_path / "in", moment, views=1)
    log = tmp_path / "worker.log"
    worker = subprocess.Popen([sys.executable, "-P", "-m", "mccad", "worker", "--pool", pool],
                              env=settings_env(settings), stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not ledger.heartbeats() and time.monotonic() < deadline:  # the worker is up (it beats at start)
            time.sleep(0.1)
        if moment == "idle":
            time.sleep(2)
            redis = _restart(redis, port, folder)
            spool_study(settings, study)
            assert assembler.tick(now=time.time() + 5) == [study.study_uid]
        elif moment == "mid-task":
            spool_study(settings, study)
            assert assembler.tick(now=time.time() + 5) == [study.study_uid]
            wait_for_state(ledger, study.study_uid, {ANALYSING}, timeout_s=120, interval_s=0.02)
            redis = _restart(redis, port, folder, down_s=8.0)
        else:  # the first attempt fails (its results folder is blocked by a file) and a retry is scheduled
            blocker = settings.results_dir / study.study_uid
            blocker.parent.mkdir(parents=True, exist_ok=True)
            blocker.write_text("not a folder")
            spool_study(settings, study)
            assert assembler.tick(now=time.time() + 5) == [study.study_uid]
            record = wait_for_state(ledger, study.study_uid, {FAILED}, timeout_s=120)
            assert record.retry_at is not None and record.retry_at > time.time()
            blocker.unlink()
            redis = _restart(redis, port, folder)
        record = wait_for_state(ledger, study.study_uid, {DONE}, timeout_s=240)
        assert worker.poll() is None, log.read_text()[-4000:]
        assert "Unrecoverable error" not in log.read_text()
        assert record.crashes == 0
    finally:
        worker.terminate()
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
        redis.terminate()
        redis.wait(30)
