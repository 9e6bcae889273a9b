"""A destination PACS that is down: bounded retries, dead-letter with the reason, `mccad requeue` delivers once it
is back. Real Redis broker, real in-thread Celery worker, real Orthanc as the destination."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from celery.contrib.testing.worker import start_worker

from dicom_io.spool import Spool
from mccad.config import Destination
from tests.peers.orthanc import OrthancPeer
from tests.worker.conftest import make_settings
from tests.worker.studies import spool_study, wait_for_state, write_study
from worker.app import make_celery, publish_study
from worker.assembler import Assembler
from worker.ledger import DEAD_LETTERED, DONE, Ledger
from worker.service import settings_env


@pytest.mark.slow
def test_destination_down_dead_letters_with_reason_and_requeue_delivers(tmp_path, redis_url, tiny_model_dir):
    pacs = OrthancPeer(tmp_path / "pacs")  # ports reserved, not started: the destination is down
    settings = make_settings(tmp_path, broker_url=redis_url, model_dir=tiny_model_dir, max_attempts=2,
                             send_retries=0, retry_backoff_s=0.2,
                             destinations=[Destination(ae_title="ORTHANC", host="127.0.0.1", port=pacs.dicom_port)])
    study = write_study(tmp_path / "in", "down", views=1)
    spool_study(settings, study)
    ledger, app = Ledger(settings.effective_ledger_url), make_celery(settings)
    publish = lambda uid, q, m: publish_study(app, uid, queue=q, model_dir=m)  # noqa: E731
    assert Assembler(ledger, publish, settings.study_idle_s).tick(now=time.time() + 5) == [study.study_uid]

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=60):
        record = wait_for_state(ledger, study.study_uid, {DEAD_LETTERED})
    assert record.attempts == 2 and record.failures == 2
    assert f"ORTHANC@127.0.0.1:{pacs.dicom_port}" in record.reason and "attempt 2" in record.reason
    work = json.loads((settings.results_dir / study.study_uid / "work.json").read_text())
    assert work["dicom_objects"], "the analysis ran and wrote its objects before delivery failed"
    # nothing acknowledged is lost: every instance is still in the spool and the ledger
    assert len(Spool(settings.spool_dir).instances(study.study_uid)) == len(study.paths) == ledger.count_instances()

    with pacs:
        proc = subprocess.run([sys.executable, "-m", "mccad", "requeue", "--json"], env=settings_env(settings),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["published"] == [study.study_uid] and report["reopened_dead_lettered"] == [study.study_uid]
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=60):
            record = wait_for_state(ledger, study.study_uid, {DONE})
        stored = pacs.find_instances(StudyInstanceUID=study.study_uid)
        received = {i["MainDicomTags"]["SOPInstanceUID"] for i in stored}
    from pydicom import dcmread

    ours = {dcmread(settings.results_dir / study.study_uid / name, stop_before_pixels=True).SOPInstanceUID
            for name in work["dicom_objects"]}
    assert ours <= received
    assert record.attempts == 1 and record.reason is None
