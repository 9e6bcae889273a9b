"""FPNNet: builds without downloads, honours its config, learns, and applies the cross-class rule."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import resnet50
from torchvision.ops import misc as misc_ops

from models.backbones import TORCH_CACHE
from models.detector import (
    CLASS_NAMES,
    DetectorConfig,
    Detections,
    build_detector,
    detect,
    to_three_channels,
)
from models.errors import WeightsNotFound
from models.fusion import box_iou

# small inputs and few proposals keep these tests fast on two CPU cores; the box head's cost scales with proposals
FAST = {"rpn_pre_nms_top_n_test": 300, "rpn_post_nms_top_n_test": 150}
SMALL = DetectorConfig(min_size=256, max_size=256, **FAST)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def detector() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_detector(SMALL)


def test_class_names_match_label_ids() -> None:
    assert CLASS_NAMES == ("background", "benign", "malignant")


def test_config_is_wired_into_the_network(detector: torch.nn.Module) -> None:
    assert detector.roi_heads.box_predictor.cls_score.out_features == 3
    assert detector.rpn.anchor_generator.sizes == ((16,), (32,), (64,), (128,), (256,))
    assert detector.transform.min_size == (256,) and detector.transform.max_size == 256
    assert detector.roi_heads.score_thresh == 0.3 and detector.roi_heads.nms_thresh == 0.3
    assert detector.roi_heads.detections_per_img == 250
    with pytest.raises(ValueError):
        DetectorConfig(anchor_sizes=(16, 32))


def test_detect_returns_boxes_within_the_image_and_obeys_thresholds(detector: torch.nn.Module) -> None:
    torch.manual_seed(1)
    image = torch.rand(1, 256, 256)
    (result,) = detect(detector, [image], SMALL)
    assert isinstance(result, Detections)
    assert result.boxes.dtype == np.float32 and result.boxes.shape[1] == 4
    assert result.labels.dtype == np.int64 and result.scores.dtype == np.float32
    assert len(result) > 0, "a random network scores about 1/3 per class, so some boxes pass 0.3"
    assert set(result.labels.tolist()) <= {1, 2}
    assert (result.scores >= 0.3).all()
    assert (result.boxes[:, [0, 2]] >= 0).all() and (result.boxes[:, [0, 2]] <= 256).all()
    # cross-class suppression: no benign box overlaps a malignant one by more than 0.5
    benign, malignant = result.boxes[result.labels == 1], result.boxes[result.labels == 2]
    if len(benign) and len(malignant):
        assert (box_iou(benign, malignant) <= 0.5).all()

    strict = DetectorConfig(min_size=256, max_size=256, score_thresh=0.6, detections_per_img=5, **FAST)
    (few,) = detect(detector, [image], strict)
    assert len(few) <= 5 and (few.scores >= 0.6).all()


def test_cross_class_suppression_can_be_switched_off(detector: torch.nn.Module) -> None:
    # score threshold 0 lets every proposal out as a benign and a malignant box: Faster R-CNN's per-class NMS
    # leaves such pairs on the same region, which the released code's rule then resolves
    torch.manual_seed(2)
    images = [torch.rand(1, 256, 256), torch.rand(3, 200, 256)]
    everything = {"min_size": 256, "max_size": 256, "score_thresh": 0.0, **FAST}
    on = detect(detector, images, DetectorConfig(**everything))
    off = detect(detector, images, DetectorConfig(cross_class_suppression=False, **everything))
    assert len(on) == len(off) == 2
    for kept, raw in zip(on, off, strict=True):
        raw_pairs = box_iou(raw.boxes[raw.labels == 1], raw.boxes[raw.labels == 2])
        assert (raw_pairs > 0.5).any()
        kept_pairs = box_iou(kept.boxes[kept.labels == 1], kept.boxes[kept.labels == 2])
        assert not (kept_pairs > 0.5).any()
        # malignant boxes all survive; only benign ones are dropped
        assert (kept.labels == 2).sum() == (raw.labels == 2).sum()
        assert (kept.labels == 1).sum() < (raw.labels == 1).sum()


def test_a_few_sgd_steps_on_one_synthetic_lesion_reduce_the_loss() -> None:
    torch.manual_seed(3)
    model = build_detector(DetectorConfig(
        min_size=128, max_size=128, rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=150,
        rpn_batch_size_per_image=64, box_batch_size_per_image=64, trainable_backbone_layers=0))
    model.train()
    image = torch.full((1, 128, 128), 0.2)
    image[:, 50:62, 70:82] = 0.9
    targets = [{"boxes": torch.tensor([[68.0, 48.0, 84.0, 64.0]]), "labels": torch.tensor([2])}]
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.SGD(params, lr=0.005, momentum=0.9, weight_decay=5e-4)  # the released code's settings
    losses = []
    for _ in range(6):
        loss = sum(model([to_three_channels(image[0:1])], targets).values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses


def test_to_three_channels() -> None:
    grey = torch.rand(1, 4, 5)
    assert torch.equal(to_three_channels(grey)[2], grey[0])
    assert to_three_channels(torch.rand(3, 4, 5)).shape == (3, 4, 5)
    with pytest.raises(ValueError):
        to_three_channels(torch.rand(2, 4, 5))


def test_backbone_weights_never_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsNotFound, match="never downloads"):
        build_detector(SMALL, backbone_weights=TORCH_CACHE)
    with pytest.raises(WeightsNotFound):
        build_detector(SMALL, backbone_weights=tmp_path / "missing.pth")

    # a torchvision-format ResNet50 file placed in the cache by hand is found and used, with frozen BatchNorm
    torch.manual_seed(4)
    reference = resnet50(weights=None).state_dict()
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference, cache / "resnet50-0676ba61.pth")
    with caplog.at_level(logging.INFO, logger="models"):
        model = build_detector(SMALL, backbone_weights=TORCH_CACHE)
    assert "resnet50-0676ba61.pth" in caplog.text
    body = model.backbone.body
    assert torch.equal(body.conv1.weight, reference["conv1.weight"])
    assert torch.equal(body.layer3[0].bn1.running_var, reference["layer3.0.bn1.running_var"])
    assert isinstance(body.bn1, misc_ops.FrozenBatchNorm2d)
