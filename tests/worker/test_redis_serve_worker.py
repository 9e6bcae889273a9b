"""`mccad serve` on Redis with a separate `mccad worker --preload` process: studies sent one after the other each get
their results (the second study of bench/e2e.py's Redis mode once stalled until its timeout).

The stall: an idle worker blocked in BRPOP takes a message the moment ``mccad serve`` publishes it, while serve is
still writing ``complete -> queued`` into the ledger. The worker's claim read ``complete``, the guard of its update
then found ``queued`` and the claim answered "skip"; the message was acknowledged and the study stayed ``queued``
with no message left anywhere. The ledger-level test pins that interleaving; the end-to-end test runs the real
processes (the worker is idle, models preloaded, before each study arrives: the condition that opened the race).
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dicom_io.scp import SCPConfig, StorageSCP
from dicom_io.scu import send_files
from dicom_io.spool import Spool
from settings.config import Destination
from tests.peers.ports import free_port
from tests.worker.conftest import make_settings
from tests.worker.studies import wait_for_state, write_study
from worker.ledger import ANALYSING, COMPLETE, DONE, Ledger
from worker.service import settings_env

PACS_AE = "TESTPACS"


def test_a_claim_racing_the_publishers_mark_queued_still_runs(tmp_path, monkeypatch):
    """The worker reads the study ``complete``; serve marks it ``queued`` before the worker's update: still a run."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    ledger.record_instance("1.2.3", "1.2.3.1", "/spool/x.dcm", now=100.0)
    assert ledger.mark_complete("1.2.3", cutoff=200.0)
    real_get = Ledger.get

    def get_then_publisher_marks_queued(self, study_uid):
        record = real_get(self, study_uid)
        assert record.state == COMPLETE
        assert self.mark_queued(study_uid)  # what the assembler does right after the broker took the message
        return record

    monkeypatch.setattr(Ledger, "get", get_then_publisher_marks_queued)
    claim = ledger.claim("1.2.3", max_attempts=3, worker="w/1")
    monkeypatch.undo()
    assert (claim.action, claim.attempt) == ("run", 1), claim
    assert ledger.get("1.2.3").state == ANALYSING
    assert not ledger.mark_queued("1.2.3"), "a study already claimed is not put back to queued"


def test_two_claims_of_one_queued_study_one_runs_one_skips(tmp_path, monkeypatch):
    """The guard still keeps two messages for one study from both running it."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    ledger.record_instance("1.2.4", "1.2.4.1", "/spool/y.dcm", now=100.0)
    assert ledger.mark_complete("1.2.4", cutoff=200.0) and ledger.mark_queued("1.2.4")
    real_get = Ledger.get
    other: list = []

    def get_then_other_worker_claims(self, study_uid):
        record = real_get(self, study_uid)
        monkeypatch.setattr(Ledger, "get", real_get)  # the other worker's claim reads as usual
        other.append(self.claim(study_uid, max_attempts=3, worker="w/2"))
        return record

    monkeypatch.setattr(Ledger, "get", get_then_other_worker_claims)
    claim = ledger.claim("1.2.4", max_attempts=3, worker="w/1")
    monkeypatch.undo()
    assert other[0].action == "run" and claim.action == "skip", (other, claim)
    assert ledger.get("1.2.4").attempts == 1


def test_the_solo_pools_process_init_keeps_what_preload_loaded(monkeypatch):
    """``worker_process_init`` comes from the solo pool in the worker's own process: ``--preload`` must survive it
    (it was thrown away, and the first study loaded the bundle again); a forked child still drops it."""
    import worker.tasks as tasks

    key = ("/bundle", "cpu", True)
    monkeypatch.setitem(tasks._PIPELINES, key, preloaded := object())
    tasks._after_fork()
    assert tasks._PIPELINES[key] is preloaded
    monkeypatch.setattr(tasks, "_OWNER_PID", -1)  # as seen in a forked pool child
    tasks._after_fork()
    assert key not in tasks._PIPELINES


def _wait_for(predicate, what: str, timeout_s: float, log: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what}: process exited with {proc.returncode}\n{log.read_text()[-4000:]}"
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} after {timeout_s} s\n{log.read_text()[-4000:]}")


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return resp.status == 200 and json.loads(resp.read())["checks"]["broker"]
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_studies_in_a_row_through_serve_and_a_separate_redis_worker(tmp_path, redis_url, tiny_model_dir):
    pacs = StorageSCP(SCPConfig(ae_title=PACS_AE, port=0, accept_non_mg=True), Spool(tmp_path / "pacs"))
    pacs.start()
    serve = worker = None
    try:
        settings = make_settings(tmp_path, broker_url=redis_url, model_dir=tiny_model_dir, port=free_port(),
                                 http_port=free_port(), study_idle_s=0.5, explain=False,
                                 destinations=[Destination(ae_title=PACS_AE, host="127.0.0.1", port=pacs.port)])
        # each study sent while the worker waits idle can hit the race (about one in three did): four in a row
        studies = [write_study(tmp_path / "in", f"redis-row-{i}", views=2, seed=i) for i in range(4)]
        env = settings_env(settings)
        worker_log, serve_log = tmp_path / "worker.log", tmp_path / "serve.log"
        worker = subprocess.Popen([sys.executable, "-m", "mccad", "worker", "--preload", "--hostname", "row@%h"],
                                  env=env, stdout=worker_log.open("wb"), stderr=subprocess.STDOUT)
        serve = subprocess.Popen([sys.executable, "-m", "mccad", "serve", "--shutdown-grace", "20"],
                                 env=env, stdout=serve_log.open("wb"), stderr=subprocess.STDOUT)
        _wait_for(lambda: "row@" in worker_log.read_text() and " ready." in worker_log.read_text(),
                  "worker not ready", 90, worker_log, worker)
        _wait_for(lambda: _healthy(settings.http_port), "serve not healthy", 60, serve_log, serve)
        ledger = Ledger(settings.effective_ledger_url)
        for index, study in enumerate(studies):
            sent = send_files(study.paths, ae_title=settings.ae_title, host="127.0.0.1", port=settings.port,
                              calling_ae=PACS_AE)
            assert not sent.failed and len(sent.sent) == len(study.paths)
            try:
                record = wait_for_state(ledger, study.study_uid, {DONE}, timeout_s=30, interval_s=0.1)
            except TimeoutError as exc:
                state = ledger.get(study.study_uid).state
                raise AssertionError(f"study {index + 1} of {len(studies)} stuck in {state!r}\n"
                                     f"{worker_log.read_text()[-3000:]}") from exc
            assert record.attempts == 1, record
            assert Spool(tmp_path / "pacs").instances(study.study_uid), f"no result of study {index + 1} in the PACS"
        assert {ledger.get(s.study_uid).state for s in studies} == {DONE}
        assert "another worker changed the study" not in worker_log.read_text()
        assert worker_log.read_text().count("model bundle loaded") == 1, "--preload: loaded once, before study 1"
        ledger.close()
    finally:
        _stop(serve)
        _stop(worker)
        pacs.stop()
