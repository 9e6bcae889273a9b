"""Each benchmark runs end to end with ``--quick`` and writes a JSON report whose rows carry the figures it promises.

The benchmarks are measurements, not tests; these smoke runs keep them working as the code they measure
changes. Sizes are toy sizes, so no figure is checked against a target, only that it was measured.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.common import dcmtk_tool

pytestmark = pytest.mark.slow


def _report(path: Path, bench: str) -> dict:
    doc = json.loads(path.read_text())
    assert doc["bench"] == bench
    assert doc["quick"] is True
    assert doc["rows"], "a report without rows measured nothing"
    assert doc["machine"]["cpu_cores"] >= 1
    return doc


def test_inference_quick_measures_eager_and_a_faster_path_with_equality(tmp_path: Path) -> None:
    from bench import inference

    out = tmp_path / "inference.json"
    code = inference.main(["--quick", "--devices", "cpu", "--resolutions", "default", "--cpu-paths", "torchscript",
                           "--threads", "1", "--out", str(out)])
    doc = _report(out, "inference")
    assert code == 0, [r.get("error") for r in doc["rows"]]
    rows = {(r["model"], r["path"]): r for r in doc["rows"]}
    assert set(rows) == {("detector", "eager"), ("detector", "torchscript"), ("sppnet", "eager"),
                         ("sppnet", "torchscript")}
    for row in rows.values():
        assert 0 < row["per_image_median_s"] <= row["per_image_p95_s"] + 1e-12
        assert row["per_study_median_s"] > 0
        assert row["peak_rss_mib"] > 50  # torch and a ResNet50 are resident
        assert row["gflops_per_image"] > 0
    # TorchScript (frozen, BatchNorm folded) computes the same function: the equality check must say so
    assert rows[("detector", "torchscript")]["feature_rel_err"] < 1e-3
    assert rows[("sppnet", "torchscript")]["equal"] is True
    assert doc["matmul_peak"]["cpu_fp32_gflops"] > 0


@pytest.mark.skipif(not (dcmtk_tool("storescu") and dcmtk_tool("storescp")), reason="dcmtk is not installed")
def test_ingest_quick_compares_our_scp_with_storescp(tmp_path: Path) -> None:
    from bench import ingest

    out = tmp_path / "ingest.json"
    assert ingest.main(["--quick", "--workdir", str(tmp_path / "work"), "--out", str(out)]) == 0
    doc = _report(out, "ingest")
    by_receiver = {r["receiver"]: r for r in doc["rows"]}
    assert set(by_receiver) == {"mccad_scp", "dcmtk_storescp"}
    for row in by_receiver.values():
        assert row["instances"] == 4 and row["instances_per_s"] > 0 and row["mb_per_s"] > 0
    expected = by_receiver["mccad_scp"]["instances_per_s"] / by_receiver["dcmtk_storescp"]["instances_per_s"]
    assert doc["comparison"]["ratio_ours_to_storescp"] == pytest.approx(expected)


@pytest.mark.skipif(not shutil.which("Orthanc"), reason="Orthanc is not installed")
def test_e2e_quick_measures_cstore_to_sr_in_orthanc(tmp_path: Path) -> None:
    from bench import e2e

    out = tmp_path / "e2e.json"
    code = e2e.main(["--quick", "--modes", "embedded", "--studies", "1", "--out", str(out)])
    doc = _report(out, "e2e")
    assert code == 0, doc["rows"]
    (row,) = doc["rows"]
    assert row["mode"] == "embedded" and row["studies"] == 1
    assert row["cold_s"] > 0
