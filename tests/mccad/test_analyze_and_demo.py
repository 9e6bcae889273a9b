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
from mccad.cli import UserError, build_parser
from mccad.commands import demo
from settings.config import load_settings
from settings.logs import short_uid
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


def test_demo_sends_a_study_through_the_service_and_prints_one_line_per_study_and_one_page(
        synth_study: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    inputs = sorted(str(p) for p in (synth_study / "SYN00000").glob("*.dcm"))
    out = tmp_path / "demo"
    proc = _mccad(["demo", "--out", str(out), "--timeout", "500", "--inputs", *inputs],
                  {"MCCAD_MODEL_DIR": str(tiny_model_dir)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    # plain lines only on the terminal: the JSON logs of the service and its worker and Celery's banner are in the file
    assert proc.stderr == "" and not any(line.lstrip().startswith(("{", "-")) for line in lines), proc.stdout
    assert f"logs of the service and its worker: {out / 'mccad.log'}" in lines
    events = [json.loads(line).get("event") for line in (out / "mccad.log").read_text().splitlines()
              if line.startswith("{")]
    assert {"serve_ready", "task_done"} <= set(events)  # this process's records and the embedded worker's
    source = pydicom.dcmread(inputs[0], stop_before_pixels=True)
    folder = out / "service" / "results" / source.StudyInstanceUID
    result = json.loads((folder / "result.json").read_text())
    (line,) = [line for line in lines if line.startswith("study ")]  # a synthetic study is one study of 4 views
    assert line.startswith(f"study {short_uid(source.StudyInstanceUID)} ") and str(source.PatientName) not in line
    assert sorted(line.split()[2:6]) == ["LCC", "LMLO", "RCC", "RMLO"]
    exam = result["exam"]
    assert f"{exam['label']}, P(cancer) {exam['malignancy_probability']:.2f}" in line
    count = sum(len(img["lesions"]) for img in result["images"])
    assert (f"{count} lesion" if count else "no lesions") in line
    overlays = sorted(folder.glob("overlay-*.png"))
    assert len(overlays) == 4 and line.endswith(" ".join(str(p) for p in overlays))
    assert ("the stand-in PACS received 10 objects (4 PR, 4 SEG, 2 SR); the SRs of 1 of 1 studies read back as "
            "their result.json") in lines
    assert "note: NOT FOR CLINICAL USE: model trained on synthetic data only" in lines
    assert f"every study side by side: {out / 'index.html'}" in lines
    page = (out / "index.html").read_text()
    rel = f"service/results/{source.StudyInstanceUID}"
    assert f'href="{rel}/index.html"' in page and f'href="{rel}/result.json"' in page
    assert all(f'src="{rel}/{p.name}"' in page for p in overlays) and "NOT FOR CLINICAL USE" in page


def test_demo_names_a_missing_model_bundle_before_starting_anything(synth_study: Path, tmp_path: Path) -> None:
    args = build_parser("demo").parse_args(["demo", "--out", str(tmp_path / "demo"), "--inputs",
                                            str(synth_study / "SYN00000" / "LCC.dcm")])
    missing = tmp_path / "no-such-bundle"
    with pytest.raises(UserError) as raised:
        demo.run(args, load_settings(model_dir=missing))
    assert str(raised.value) == f"model folder {missing} does not exist; point MCCAD_MODEL_DIR at a model bundle"
    assert not (tmp_path / "demo").exists()
