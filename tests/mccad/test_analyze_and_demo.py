"""The two user-facing jobs end to end, through the real `mccad` command, on small synthetic studies."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from dicom_io.result_reader import read_measurement_report
from training.simulate.synth import write_synthetic_dataset


@pytest.fixture(scope="module")
def synth_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(out, 1, seed=3, rows=384, cols=256)
    return out


def _mccad(args: list[str], env_extra: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-P", "-m", "mccad", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_analyze_writes_every_output_and_the_sr_reads_back_as_result_json(synth_study: Path, tiny_model_dir: Path,
                                                                         tmp_path: Path) -> None:
    proc = _mccad(["analyze", str(synth_study), "--out", str(tmp_path / "out")],
                  {"MCCAD_MODEL_DIR": str(tiny_model_dir), "MCCAD_DATA_DIR": str(tmp_path / "data")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (summary,) = json.loads(proc.stdout)
    assert summary["images"] == 4 and len(summary["overlays"]) == 4 and len(summary["heatmaps"]) == 4
    assert summary["warnings"] == ["NOT FOR CLINICAL USE: model trained on synthetic data only"]
    result = json.loads(Path(summary["result"]).read_text())
    assert {b["laterality"] for b in result["breasts"]} == {"L", "R"}  # 4 views fused into two breasts
    kinds = sorted(Path(p).name.split("-")[0] for p in summary["dicom"])
    assert kinds == ["gsps"] * 4 + ["seg"] * 4 + ["sr"] * 2
    srs = [pydicom.dcmread(p) for p in summary["dicom"] if Path(p).name.startswith("sr-tid1500")]
    assert len(srs) == 1
    assert read_measurement_report(srs[0]).model_dump() == result
    html = Path(summary["html"]).read_text()
    assert "NOT FOR CLINICAL USE" in html
    assert all(Path(p).name in html for p in summary["overlays"] + summary["heatmaps"] + summary["dicom"])


def test_analyze_reports_a_non_dicom_file_and_goes_on(synth_study: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 10)
    proc = _mccad(["analyze", str(junk), str(synth_study / "SYN00000" / "LCC.dcm"), "--out", str(tmp_path / "o"),
                   "--no-explain"], {"MCCAD_MODEL_DIR": str(tiny_model_dir)})
    assert proc.returncode == 1
    assert "junk.dcm" in proc.stderr
    assert len(json.loads(proc.stdout)) == 1  # the good file was still analysed


def test_analyze_refuses_a_tampered_model_with_a_clear_message(synth_study: Path, tiny_model_dir: Path,
                                                               tmp_path: Path) -> None:
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_model_dir, bundle)
    weights = bundle / "detector" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    proc = _mccad(["analyze", str(synth_study), "--out", str(tmp_path / "o")], {"MCCAD_MODEL_DIR": str(bundle)})
    assert proc.returncode == 2
    assert "sha256" in proc.stderr.lower() or "tamper" in proc.stderr.lower()


def test_demo_sends_a_study_through_the_service_and_reads_the_sr_back_from_the_pacs(
        synth_study: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    inputs = sorted(str(p) for p in (synth_study / "SYN00000").glob("*.dcm"))
    proc = _mccad(["demo", "--out", str(tmp_path / "demo"), "--timeout", "500", "--inputs", *inputs],
                  {"MCCAD_MODEL_DIR": str(tiny_model_dir)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert list(report["studies"].values()) == ["done"]  # a synthetic study is one study of 4 views
    assert len(report["verdicts_read_back_from_pacs_sr"]) == 4
    assert len(report["objects_received_by_pacs"]) == 10  # 2 SR + 4 SEG + 4 GSPS
    assert all(Path(p).is_file() for p in report["overlays"] + report["html"])
    # the four overlays side by side in one picture, each scaled to the sheet's height
    from PIL import Image

    sheet = Image.open(report["overlays_contact_sheet"])
    assert len(report["overlays"]) == 4 and sheet.height == 420 and sheet.width > 4 * 100
