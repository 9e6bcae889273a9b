"""`mccad reprocess` says what it will do per study and does it: the same model's stored result is re-sent,
--force analyses it again (the worker no longer finds a work record to re-send), another model analyses again and
names the result it replaces."""
from __future__ import annotations

import json

import pytest

from dicom_io.spool import SUFFIX, Spool
from mccad.cli import main
from tests.worker.conftest import make_settings
from tests.worker.test_reprocess_commands import _study
from worker.ledger import DONE, Ledger
from worker.service import settings_env
from worker.tasks import work_key

UID = "1.6.9"


@pytest.fixture
def done_study(tmp_path, monkeypatch, capsys, tiny_model_dir):
    settings = make_settings(tmp_path)
    for key, value in settings_env(settings, base={}).items():
        monkeypatch.setenv(key, value)
    _study(Ledger(settings.effective_ledger_url), UID, DONE)
    folder = Spool(settings.spool_dir).study_dir(UID)
    folder.mkdir(parents=True)
    (folder / f"{UID}.1{SUFFIX}").write_bytes(b"instance")
    out = settings.results_dir / UID
    out.mkdir(parents=True)
    (out / "result.json").write_text(json.dumps({"models": [{"role": "detector", "name": "fpnnet",
                                                             "version": "0.6.2"}]}))

    def record(model_dir) -> None:
        key = work_key(UID, Spool(settings.spool_dir).instances(UID), model_dir)
        (out / "work.json").write_text(json.dumps({"key": key, "dicom_objects": []}))

    def run(*argv: str) -> dict:
        assert main(["reprocess", "--study", UID, "--model", str(tiny_model_dir), "--json", *argv]) == 0
        return json.loads(capsys.readouterr().out)["plans"][UID]

    return out, record, run


def test_same_model_resends_force_analyses_another_model_replaces(done_study, tiny_model_dir, tmp_path):
    out, record, run = done_study
    record(tiny_model_dir)
    plan = run()
    assert plan["action"] == "re-send" and plan["replaces"] == [] and (out / "work.json").is_file()

    plan = run("--force")
    assert plan["action"] == "analyse" and plan["why"] == "forced" and not (out / "work.json").exists()

    other = tmp_path / "other-bundle"
    (other / "detector").mkdir(parents=True)
    (other / "detector" / "manifest.json").write_text('{"version": "9"}')
    record(other)
    plan = run()
    assert plan["action"] == "analyse" and plan["replaces"] == ["detector=fpnnet@0.6.2"]
    assert not (out / "work.json").exists()
