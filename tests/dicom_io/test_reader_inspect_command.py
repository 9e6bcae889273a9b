"""``mccad inspect`` run as the operator runs it: a subprocess on real files."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from tests.dicom_io.mg_factory import RLELossless, encoded, mg_dataset, ramp


def run_inspect(*args: str, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MCCAD_DATA_DIR": str(tmp_path / "data"), "MCCAD_LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "mccad", "inspect", *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)


def test_inspect_prints_metadata_for_a_good_file_and_the_typed_error_for_a_bad_one(tmp_path, real_sample_cases):
    good = real_sample_cases[0]["lmlo"]
    generated = tmp_path / "generated.dcm"
    generated.write_bytes(encoded(mg_dataset(ramp(rows=40, columns=48), PatientName="Secretname^Jane"), RLELossless))
    bad = tmp_path / "cut.dcm"
    bad.write_bytes(generated.read_bytes()[:-100])
    result = run_inspect(str(good), str(generated), str(bad), tmp_path=tmp_path)
    assert result.returncode == 1, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["ok"] for line in lines] == [True, True, False]
    assert (lines[0]["meta"]["laterality"], lines[0]["meta"]["view"]) == ("L", "MLO")
    assert "laterality-from-0020,0060" in lines[0]["meta"]["quirks"]
    assert lines[1]["meta"]["rows"] == 40
    assert (lines[2]["error"], lines[2]["status"]) == ("TruncatedFile", "0xC000")
    assert "Secretname" not in result.stdout + result.stderr


def test_inspect_exits_zero_when_all_files_are_good_and_can_decode(tmp_path):
    path = tmp_path / "one.dcm"
    path.write_bytes(encoded(mg_dataset(ramp(rows=40, columns=48)), RLELossless))
    result = run_inspect("--decode", str(path), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["pixels"]["min"] == 0.0 and report["pixels"]["max"] == 1.0
    assert np.isclose(report["pixels"]["mean"], 0.5, atol=0.01)
