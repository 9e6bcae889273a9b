"""``bench.inference`` on a crops-trained (tiled) detector bundle: the ``default`` rows are a whole standardised
mammogram run through ``detect_tiled`` (tiles, FLOPs summed over them), the faster paths run the EfficientNet-Lite
backbone with the equality check on the merged output, and SPPNet rows work for a Lite trunk."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

TILING = {"tile": 512, "overlap": 64, "batch": 2}  # the shipped shape; --quick swaps in bench's toy tiling


def _tiled_lite_bundle(folder: Path) -> Path:
    """Random-weight Lite0 detector (narrow, few proposals, every box kept) with ``tiling`` and a 0.1 mm spacing,
    plus a Lite0 SPPNet: the architectures of the crops-trained bundle at toy widths."""
    from models.classifier import ClassifierConfig, build_classifier
    from models.detector import CLASS_NAMES, DetectorConfig, build_detector
    from models.registry import ModelManifest, save_model

    torch.manual_seed(0)
    det_cfg = DetectorConfig(backbone="efficientnet_lite0", min_size=96, max_size=96, fpn_channels=24,
                             box_head_size=40, score_thresh=0.0, detections_per_img=20,
                             rpn_pre_nms_top_n_test=60, rpn_post_nms_top_n_test=30)
    save_model(folder / "detector", build_detector(det_cfg), ModelManifest(
        name="tiny-tiled-lite", version="0.0.0-test", architecture="fpnnet-efficientnet_lite0", role="detector",
        classes=list(CLASS_NAMES), input_spec={"standardise": {"spacing_mm": 0.1}, "tiling": TILING},
        synthetic_only=True), dtype=torch.float32)
    spp_cfg = ClassifierConfig(backbone="efficientnet_lite0", levels=(1, 2), input_size=64, patch_size=32)
    save_model(folder / "sppnet", build_classifier(spp_cfg), ModelManifest(
        name="tiny-lite-sppnet", version="0.0.0-test", architecture="sppnet-efficientnet_lite0", role="sppnet",
        classes=["benign", "malignant"], synthetic_only=True), dtype=torch.float32)
    return folder


def test_tiled_bundle_rows_are_whole_mammograms_with_tiles_and_equality(tmp_path: Path) -> None:
    pytest.importorskip("timm", reason="the EfficientNet-Lite backbone needs timm")
    from bench import inference

    bundle = _tiled_lite_bundle(tmp_path / "bundle")
    out = tmp_path / "inference.json"
    paths = "torchscript,onnxruntime" if inference.onnxruntime_available() else "torchscript"
    code = inference.main(["--quick", "--devices", "cpu", "--resolutions", "default", "--cpu-paths", paths,
                           "--threads", "1", "--model-dir", str(bundle), "--out", str(out)])
    doc = json.loads(out.read_text())
    assert code == 0, [r.get("error") for r in doc["rows"]]
    assert doc["models"]["detector_mode"] == "tiled"
    assert doc["models"]["tiling_bundle"] == {"hflip": False, **TILING}
    assert doc["detector_resolutions"]["mode"] == "tiled"
    detector = {r["path"]: r for r in doc["rows"] if r["model"] == "detector"}
    assert set(detector) == {"eager", *paths.split(",")}
    quick = inference.QUICK_TILING
    expected_tiles = len(quick.grid(256, 160))
    for row in detector.values():
        assert row["detector_mode"] == "tiled" and row["spacing_mm"] == 0.1
        assert row["input"] == "256x160" and row["network_input"] == f"{quick.tile}x{quick.tile}"
        assert row["tiles_per_image"] == expected_tiles > 1
        # FLOPs are per whole image: the sum over its tiles
        assert row["gflops_per_image"] == pytest.approx(row["gflops_per_tile"] * expected_tiles)
        assert row["per_image_median_s"] > 0 and row["per_study_median_s"] > 0 and row["pct_of_matmul_peak"] > 0
    for path in paths.split(","):
        row = detector[path]
        for field in ("equal", "detections_equal", "boxes_matched", "boxes_unmatched", "max_box_diff_px",
                      "max_score_diff", "feature_rel_err"):
            assert field in row, field
        assert row["feature_rel_err"] < inference.FEATURE_REL_TOL
        # score_thresh 0: every tile has boxes, so the box-level check compares something
        assert row["reference_boxes"] > 0 and row["boxes_matched"] > 0 and row["equal"] is True, row
    # the 6 s target is judged on the whole-mammogram row, not on a tile
    targets = doc["targets"]
    assert targets["detector_mode"] == "tiled" and f"{expected_tiles} tiles" in targets["scope"]
    assert targets["detector_cpu_eager_median_s"] == detector["eager"]["per_image_median_s"]
    # SPPNet with an EfficientNet-Lite trunk: every path runs and agrees with eager
    sppnet = {r["path"]: r for r in doc["rows"] if r["model"] == "sppnet"}
    assert doc["models"]["sppnet"]["architecture"] == "sppnet-efficientnet_lite0"
    for path in paths.split(","):
        assert sppnet[path]["equal"] is True and sppnet[path]["max_prob_diff"] <= inference.SCORE_TOL


def test_tiled_resolutions_follow_the_bundle_spacing() -> None:
    """default = the breast at the bundle's spacing, full = the same breast at 0.05 mm (dropped when the bundle is
    already that fine); sizes only, no model runs."""
    from bench import inference
    from models.detector import DetectorConfig
    from models.tiling import TilingSpec

    images = [torch.zeros(1, 2048, 1300)]
    tiling = TilingSpec(tile=512, overlap=64, batch=2)
    models = inference.LoadedModels(None, DetectorConfig(), None, None, {}, tiling, 0.1)  # type: ignore[arg-type]
    notes: list[str] = []
    default, full = inference.detector_cases(models, ["default", "full"], images, notes)
    assert default.fields["input"] == "2048x1300" and default.fields["spacing_mm"] == 0.1
    assert default.fields["tiles_per_image"] == 15  # 5 rows x 3 columns of 512 px tiles, 64 px overlap
    assert full.fields["input"] == "4096x2600" and full.fields["spacing_mm"] == 0.05
    assert full.fields["tiles_per_image"] == len(tiling.grid(4096, 2600))
    assert default.fields["readings_per_image"] == 1
    flipped = inference.LoadedModels(None, DetectorConfig(), None, None, {}, TilingSpec(tile=512, overlap=64, batch=2,
                                                                                        hflip=True), 0.1)
    assert inference.detector_cases(flipped, ["default"], images, notes)[0].fields["readings_per_image"] == 2
    assert not notes
    fine = inference.LoadedModels(None, DetectorConfig(), None, None, {}, tiling, 0.05)  # type: ignore[arg-type]
    (only,) = inference.detector_cases(fine, ["default", "full"], [torch.zeros(1, 256, 160)], notes)
    assert only.resolution == "default" and only.fields["input"] == "512x320"
    assert any("full dropped" in note for note in notes)
    # a whole-image bundle keeps the bundle's resize (default) and the image's own size (full)
    whole = inference.LoadedModels(None, DetectorConfig(), None, None, {})  # type: ignore[arg-type]
    default, full = inference.detector_cases(whole, ["default", "full"], images, [])
    assert "tiles_per_image" not in default.fields and default.config.max_size == DetectorConfig().max_size
    assert (full.config.min_size, full.config.max_size) == (1300, 2048)
