"""A destination PACS that is down: delivery is retried as scheduled work (the ledger's ``retry_at``, published by
the supervisor; no task sleeps), spends none of the study's attempts, is delivered on its own once the PACS answers,
and is dead-lettered with the reason only after ``delivery_horizon_s``; `mccad requeue` still delivers it then.
Real Redis broker, real in-thread Celery worker, real Orthanc as the destination."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest
from celery.contrib.testing.worker import start_worker

from dicom_io.spool import Spool
from settings.config import Destination
from tests.peers.orthanc import OrthancPeer
from tests.worker.conftest import make_settings
from tests.worker.studies import spool_study, wait_for_state, write_study
from worker.app import publish_study, ready_study_uids
from worker.assembler import Assembler
from worker.ledger import DEAD_LETTERED, DONE, FAILED, Ledger
from worker.service import destinations_answer, settings_env
from worker.supervisor import Supervisor
from worker.tasks import worker_app


@contextmanager
def supervising(settings, ledger, app):
    """The supervisor loop ``mccad serve`` and ``mccad worker`` run, in a thread."""
    supervisor = Supervisor(settings, ledger, lambda u, q, m: publish_study(app, u, queue=q, model_dir=m),
                            lambda: ready_study_uids(app), destinations_up=lambda: destinations_answer(settings))
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.2):
            supervisor.tick_if_due()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield supervisor
    finally:
        stop.set()
        thread.join(30)


def _queued(settings, name: str):
    study = write_study(settings.data_dir.parent / "in", name, views=1)
    spool_study(settings, study)
    ledger, app = Ledger(settings.effective_ledger_url), worker_app(settings)
    publish = lambda uid, q, m: publish_study(app, uid, queue=q, model_dir=m)  # noqa: E731
    assert Assembler(ledger, publish, settings.study_idle_s).tick(now=time.time() + 5) == [study.study_uid]
    return study, ledger, app


@pytest.mark.slow
def test_destination_down_is_retried_without_spending_attempts_then_dead_lettered_and_requeue_delivers(
        tmp_path, redis_url, tiny_model_dir):
    pacs = OrthancPeer(tmp_path / "pacs")  # ports reserved, not started: the destination is down
    settings = make_settings(tmp_path, broker_url=redis_url, model_dir=tiny_model_dir, max_attempts=1,
                             send_retries=0, retry_backoff_s=0.2, retry_backoff_max_s=0.5, delivery_horizon_s=3,
                             supervise_interval_s=0.2,
                             destinations=[Destination(ae_title="ORTHANC", host="127.0.0.1", port=pacs.dicom_port)])
    study, ledger, app = _queued(settings, "down")
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=60), \
            supervising(settings, ledger, app):
        record = wait_for_state(ledger, study.study_uid, {DEAD_LETTERED}, timeout_s=240)
    # several deliveries were tried on the single attempt max_attempts allows: a delivery spends no attempt
    assert record.attempts <= 1 and record.delivery_failures >= 3
    assert f"ORTHANC@127.0.0.1:{pacs.dicom_port}" in record.reason and "delivery_horizon_s=3" in record.reason
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


@pytest.mark.slow
def test_results_are_delivered_on_their_own_once_the_pacs_answers_again(tmp_path, redis_url, tiny_model_dir):
    """No operator: the study waits ``failed`` with its next try scheduled, and is delivered when Orthanc starts."""
    pacs = OrthancPeer(tmp_path / "pacs")
    settings = make_settings(tmp_path, broker_url=redis_url, model_dir=tiny_model_dir, send_retries=0,
                             retry_backoff_s=0.5, retry_backoff_max_s=2, delivery_horizon_s=3600,
                             supervise_interval_s=0.2,
                             destinations=[Destination(ae_title="ORTHANC", host="127.0.0.1", port=pacs.dicom_port)])
    study, ledger, app = _queued(settings, "later")
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=60), \
            supervising(settings, ledger, app):
        record = wait_for_state(ledger, study.study_uid, {FAILED}, timeout_s=240)
        assert record.delivery_failures >= 1 and record.retry_at is not None
        with pacs:
            record = wait_for_state(ledger, study.study_uid, {DONE}, timeout_s=240)
            assert pacs.find_instances(StudyInstanceUID=study.study_uid)
    assert record.attempts == 1 and record.delivery_failures == 0
