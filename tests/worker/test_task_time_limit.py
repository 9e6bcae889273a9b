"""An attempt longer than ``task_time_limit_s`` fails its study with a clear reason and the worker process exits
(to be restarted), instead of holding the queue; the next worker analyses the next study."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.worker.conftest import make_settings
from tests.worker.studies import spool_study, wait_for_state, write_study
from worker.app import make_celery, publish_study
from worker.assembler import Assembler
from worker.ledger import DEAD_LETTERED, DONE, Ledger
from worker.service import settings_env
from worker.tasks import EXIT_TIME_LIMIT


@pytest.mark.slow
def test_an_attempt_past_the_time_limit_fails_the_study_and_frees_the_queue(tmp_path, redis_url, tiny_model_dir):
    slow = make_settings(tmp_path, broker_url=redis_url, model_dir=tiny_model_dir, task_time_limit_s=0.05)
    ledger, app = Ledger(slow.effective_ledger_url), make_celery(slow)
    assembler = Assembler(ledger, lambda uid, q, m: publish_study(app, uid, queue=q, model_dir=m), slow.study_idle_s)
    study = write_study(tmp_path / "in", "too-long", views=1)
    spool_study(slow, study)
    assert assembler.tick(now=time.time() + 5) == [study.study_uid]
    log = tmp_path / "worker.log"
    worker = subprocess.Popen([sys.executable, "-P", "-m", "mccad", "worker", "--pool", "solo"],
                              env=settings_env(slow), stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        assert worker.wait(180) == EXIT_TIME_LIMIT, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
    record = ledger.get(study.study_uid)
    assert record.state == DEAD_LETTERED and "task_time_limit_s=0.05" in record.reason

    # a worker with the ordinary limit takes the next study at once
    normal = slow.model_copy(update={"task_time_limit_s": 600.0})
    nxt = write_study(tmp_path / "in", "next", views=1, seed=1)
    spool_study(normal, nxt)
    assert assembler.tick(now=time.time() + 5) == [nxt.study_uid]
    worker = subprocess.Popen([sys.executable, "-P", "-m", "mccad", "worker", "--pool", "solo"],
                              env=settings_env(normal), stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        wait_for_state(ledger, nxt.study_uid, {DONE}, timeout_s=240)
    finally:
        worker.terminate()
        worker.wait(60)
    assert ledger.get(study.study_uid).state == DEAD_LETTERED


def test_the_time_limit_starts_with_the_claim_so_a_study_that_needs_no_attempt_is_never_failed(tmp_path):
    """A message for a study already done is skipped, however short the limit: the limit bounds an attempt, and
    before the claim there is none (a limit that started with the message failed queued and done studies alike)."""
    settings = make_settings(tmp_path, task_time_limit_s=1e-4)
    ledger = Ledger(settings.effective_ledger_url)
    ledger.record_instance("1.9.1", "1.9.1.1", "/p", now=1.0)
    ledger.mark_complete("1.9.1", cutoff=2.0)
    claim = ledger.claim("1.9.1", max_attempts=3, worker="w")
    assert ledger.finish("1.9.1", claim.started_at) == DONE
    script = ("import sys, time; from settings.config import Settings; from worker.tasks import run_study\n"
              "settings = Settings.model_validate_json(sys.stdin.read())\n"
              "print(run_study(None, settings, '1.9.1', None)['action']); time.sleep(0.2)\n")
    done = subprocess.run([sys.executable, "-c", script], input=settings.model_dump_json(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "skip", done.stderr[-2000:]
    assert ledger.get("1.9.1").state == DONE
