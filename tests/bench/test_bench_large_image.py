"""The large-image benchmark runs end to end (``--quick``: small sizes) and writes its report; the bound it states
(60 s, 2 GiB) decides its exit status."""
from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_large_image_quick_reports_seconds_memory_and_ratio(tmp_path: Path) -> None:
    from bench import large_image

    out = tmp_path / "large-image.json"
    assert large_image.main(["--quick", "--out", str(out), "--threads", "1"]) == 0
    doc = json.loads(out.read_text())
    assert doc["bench"] == "large_image" and [row["side"] for row in doc["rows"]] == [400, 800]
    for row in doc["rows"]:
        assert row["seconds"] > 0 and row["peak_rss_mib"] > 0 and row["ratio"] > 0
        assert row["cpu_seconds"] > 0 and 0 < row["outputs_seconds"] < row["seconds"]
    assert doc["targets"] == {"seconds": 60.0, "peak_rss_mib": 2048.0} and isinstance(doc["met"], bool)


def test_the_bound_is_60_s_and_2_gib() -> None:
    from bench.large_image import bound_met

    assert bound_met({"seconds": 59.0, "peak_rss_mib": 2000.0})
    assert not bound_met({"seconds": 61.0, "peak_rss_mib": 2000.0})
    assert not bound_met({"seconds": 30.0, "peak_rss_mib": 2100.0})


@pytest.mark.slow
def test_large_image_steps_quick_gives_each_step_its_cpu_seconds_and_peak_and_unwraps(tmp_path: Path) -> None:
    import dicom_io.reader as reader
    import models.pipeline as pipeline
    from bench import large_image_steps

    originals = (reader.read_mammogram, pipeline.detector_cam)
    out = tmp_path / "steps.json"
    assert large_image_steps.main(["--quick", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    rows = {row["step"]: row for row in doc["rows"]}
    for step in ("read", "standardise", "detection + breast gate", "Grad-CAM", "pictures",
                 "DICOM objects (SR, SEG, GSPS)"):
        assert step in rows, step
    assert rows["detection + breast gate"]["cpu_seconds"] > 0 and rows["Grad-CAM"]["cpu_seconds"] > 0
    assert all(row["peak_rss_mib"] >= doc["resident_before_mib"] for row in rows.values() if row["peak_rss_mib"])
    assert doc["total"]["side"] == 400 and doc["total"]["cpu_seconds"] > 0
    assert (reader.read_mammogram, pipeline.detector_cam) == originals  # the run leaves the code as it found it
