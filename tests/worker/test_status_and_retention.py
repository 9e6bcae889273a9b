"""``mccad status`` lists each stuck study with why and loads neither Celery nor the training modules; the spool
retention policy removes delivered studies' instances after ``spool_retention_s`` and nothing else; the spool's
size is a metric."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from prometheus_client import generate_latest

from dicom_io.spool import Spool
from tests.worker.conftest import make_settings
from worker.ledger import Ledger
from worker.metrics import ServiceMetrics
from worker.retention import purge_delivered
from worker.service import settings_env
from worker.supervisor import Supervisor


def _done(ledger: Ledger, uid: str) -> None:
    ledger.mark_complete(uid, cutoff=time.time() + 1)
    claim = ledger.claim(uid, max_attempts=3, worker="w/1")
    ledger.mark_sending(uid)
    ledger.finish(uid, claim.started_at)


def test_status_shows_each_stuck_study_with_why_without_loading_celery_or_training(tmp_path):
    settings = make_settings(tmp_path, stuck_after_s=1)
    ledger = Ledger(settings.effective_ledger_url)
    ledger.record_instance("1.6.1", "1.6.1.1", "/p", now=time.time() - 100)
    ledger.mark_complete("1.6.1", cutoff=time.time())
    ledger.mark_queued("1.6.1")
    ledger.record_instance("1.6.2", "1.6.2.1", "/p", now=time.time() + 3600)  # still arriving: not stuck
    time.sleep(1.2)
    env = settings_env(settings)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "mccad", "status", "--json"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert [(s["study_uid"], s["state"]) for s in report["stuck"]] == [("1.6.1", "queued")]
    assert "no worker has taken it" in report["stuck"][0]["why"]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    assert not {"celery", "scipy", "torch", "training"} & imported
    text = subprocess.run([sys.executable, "-m", "mccad", "status"], env=env, capture_output=True, text=True,
                          timeout=120).stdout
    assert "stuck (1):" in text and "1.6.1" in text


def test_retention_removes_only_delivered_studies_past_their_time(tmp_path):
    settings = make_settings(tmp_path)
    ledger, spool = Ledger(settings.effective_ledger_url), Spool(settings.spool_dir)
    for uid in ("1.6.3", "1.6.4", "1.6.5"):
        path = spool.store(uid, uid + ".1", b"x" * 1000)
        ledger.record_instance(uid, uid + ".1", str(path))
    _done(ledger, "1.6.3")
    _done(ledger, "1.6.4")  # delivered too, but a late resend of it arrives after delivery ...
    time.sleep(0.05)
    late = spool.store("1.6.4", "1.6.4.2", b"y" * 10)
    os.utime(late, (time.time() + 5, time.time() + 5))
    metrics = ServiceMetrics(ledger, spool=spool)
    assert "mccad_spool_bytes 3010.0" in generate_latest(metrics.registry).decode()

    assert purge_delivered(ledger, spool, retention_s=3600) == (0, 0)  # not old enough yet
    purged, freed = purge_delivered(ledger, spool, retention_s=3600, now=time.time() + 3601)
    assert (purged, freed) == (2, 2000)
    assert spool.instances("1.6.3") == [] and not spool.study_dir("1.6.3").exists()
    assert spool.instances("1.6.4") == [late]  # ... and is kept
    assert len(spool.instances("1.6.5")) == 1  # never delivered: kept whatever its age
    assert "mccad_spool_bytes 1010.0" in generate_latest(metrics.registry).decode()


def test_the_supervisor_applies_the_retention_policy(tmp_path):
    settings = make_settings(tmp_path, spool_retention_s=0)
    ledger, spool = Ledger(settings.effective_ledger_url), Spool(settings.spool_dir)
    path = spool.store("1.6.6", "1.6.6.1", b"x")
    ledger.record_instance("1.6.6", "1.6.6.1", str(path))
    _done(ledger, "1.6.6")
    supervisor = Supervisor(settings, ledger, lambda *a: None, lambda: set(), spool=spool)
    assert supervisor.tick(now=time.time() + 1).purged == 1
    assert spool.studies() == []
