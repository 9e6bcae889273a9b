"""`mccad reprocess`, `mccad requeue` and `mccad status` against a real ledger and the real embedded broker."""
from __future__ import annotations

import json

import pytest

from mccad.cli import main
from tests.peers.ports import free_port
from tests.worker.conftest import make_settings
from worker.app import make_celery, queue_depths
from worker.ledger import BATCH, COMPLETE, DEAD_LETTERED, DONE, QUEUED, RECEIVING, Ledger
from worker.service import settings_env


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    settings = make_settings(tmp_path)
    for key, value in settings_env(settings, base={}).items():
        monkeypatch.setenv(key, value)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return settings, run


def _study(ledger: Ledger, uid: str, final: str) -> None:
    ledger.record_instance(uid, uid + ".1", "/p", now=1.0)
    if final == RECEIVING:
        return
    ledger.mark_complete(uid, cutoff=2.0)
    claim = ledger.claim(uid, max_attempts=1, worker="w")
    if final == DONE:
        ledger.finish(uid, claim.started_at)
    else:
        ledger.fail(uid, "C-STORE to ORTHANC failed", dead=True)


def test_reprocess_queues_finished_studies_on_the_batch_queue_with_the_model_asked_for(cli, tiny_model_dir, tmp_path):
    settings, run = cli
    ledger = Ledger(settings.effective_ledger_url)
    for uid, final in [("1.6.1", DONE), ("1.6.2", DONE), ("1.6.3", RECEIVING), ("1.6.4", DEAD_LETTERED)]:
        _study(ledger, uid, final)

    code, _, err = run("reprocess", "--study", "1.6.1", "--model", str(tmp_path / "no-such-bundle"))
    assert code == 2 and "does not exist" in err
    code, out, _ = run("reprocess", "--study", "1.6.1", "1.6.3", "--model", str(tiny_model_dir), "--json")
    report = json.loads(out)
    assert code == 0 and report["queued"] == ["1.6.1"] and report["skipped"] == {"1.6.3": RECEIVING}
    record = ledger.get("1.6.1")
    assert (record.state, record.queue, record.model_dir) == (QUEUED, BATCH, str(tiny_model_dir.resolve()))

    code, out, _ = run("reprocess", "--since", "2000-01-01", "--json")
    assert code == 0 and sorted(json.loads(out)["queued"]) == ["1.6.2", "1.6.4"]
    app = make_celery(settings)
    assert queue_depths(app) == {"interactive": 0, "batch": 3}
    with app.connection_for_read() as conn:
        message = conn.SimpleQueue("batch", no_ack=True).get(timeout=5)
        assert message.decode()[0:2] == [["1.6.1"], {"model_dir": str(tiny_model_dir.resolve())}]


def test_status_and_requeue_show_and_recover_failures(cli, monkeypatch):
    settings, run = cli
    ledger = Ledger(settings.effective_ledger_url)
    _study(ledger, "1.5.1", DEAD_LETTERED)
    _study(ledger, "1.5.2", DONE)
    _study(ledger, "1.5.3", DEAD_LETTERED)
    code, out, _ = run("status", "--json")
    report = json.loads(out)
    assert code == 0 and report["studies"][DEAD_LETTERED] == 2 and report["studies"][DONE] == 1
    assert {f["study_uid"] for f in report["last_failures"]} == {"1.5.1", "1.5.3"}
    assert all("C-STORE to ORTHANC failed" in f["reason"] for f in report["last_failures"])
    code, out, _ = run("status")
    assert code == 0 and "dead_lettered=2" in out and "C-STORE to ORTHANC failed" in out

    code, out, _ = run("requeue", "--no-dead", "--json")
    assert code == 0 and json.loads(out)["published"] == []
    code, out, _ = run("requeue", "--json", "--study", "1.5.1", "1.5.2")
    assert code == 0 and json.loads(out)["published"] == ["1.5.1"]
    assert ledger.get("1.5.1").state == QUEUED and ledger.get("1.5.2").state == DONE
    assert queue_depths(make_celery(settings))["interactive"] == 1

    # broker down: the operator is told, and the study waits as "complete" for `mccad serve` to publish it
    monkeypatch.setenv("MCCAD_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    code, _, err = run("requeue", "--study", "1.5.3")
    assert code == 2 and "start the broker" in err
    assert ledger.get("1.5.3").state == COMPLETE and ledger.get("1.5.3").attempts == 0
