"""SPPNet: ResNet18 with spatial pyramid pooling before the classifier (Lin et al. 2025, section 2.5; He et al. 2015).

The paper's baseline classifies whole mammograms from image-level labels; the same network classifies patches cropped
around malignant detections for the pathotype and ER heads (section 2.8 / Table 4-5). Spatial pyramid pooling makes
the feature vector independent of the input size: each pyramid level ``n`` max-pools the last feature map into an
``n x n`` grid, and the grids of all levels are concatenated (512 * sum(n^2) features), so whole images of any
aspect ratio and small patches go through one network without warping.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from models.backbones import load_backbone_weights
from models.efficientnet_lite import efficientnet_lite_backbone, lite_variant, resolve_lite_weights
from models.manifest_config import ManifestConfig

log = logging.getLogger(__name__)

ARCHITECTURE = "sppnet-resnet18"  # the paper's network, and the default
#: trunks before the pyramid: the paper's ResNet18, or EfficientNet-Lite (ImageNet weights installable here)
BACKBONES = ("resnet18", "efficientnet_lite0", "efficientnet_lite2")
MIN_INPUT = 32  # ResNet18 downsamples by 32: anything smaller has no layer4 feature left
STAGES = ("layer1", "layer2", "layer3", "layer4")


@dataclass(frozen=True)
class ClassifierConfig(ManifestConfig):
    """What shapes an SPPNet and its inputs (stored in the model's manifest).

    ``input_size`` is the long side whole images are resized to; ``patch_size`` the side of lesion patches for the
    pathotype and ER heads. ``classify`` uses ``input_size`` unless told otherwise.
    """

    manifest_name: ClassVar[str] = "classifier"

    backbone: str = "resnet18"
    levels: tuple[int, ...] = (1, 2, 4)
    input_size: int = 512
    patch_size: int = 128
    num_classes: int = 2
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.25, 0.25, 0.25)

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown SPPNet backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if not self.levels or min(self.levels) < 1:
            raise ValueError(f"pyramid levels must be positive integers, got {self.levels}")
        if self.num_classes < 2:
            raise ValueError("num_classes must be at least 2")
        if min(self.input_size, self.patch_size) < MIN_INPUT:
            raise ValueError(f"input_size and patch_size must be at least {MIN_INPUT}")

    @property
    def architecture(self) -> str:
        """The manifest's name for this network (``sppnet-<backbone>``)."""
        return f"sppnet-{self.backbone}"


class SpatialPyramidPool(nn.Module):
    """Max-pool a (B, C, h, w) map into n x n grids for each level and concatenate: (B, C * sum(n^2))."""

    def __init__(self, levels: tuple[int, ...]) -> None:
        super().__init__()
        self.levels = tuple(int(n) for n in levels)

    def output_features(self, channels: int) -> int:
        return channels * sum(n * n for n in self.levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.adaptive_max_pool2d(x, n).flatten(1) for n in self.levels], dim=1)


class SPPNet(nn.Module):
    """ResNet18 (or EfficientNet-Lite) trunk -> spatial pyramid pooling -> one linear layer; returns logits
    (B, num_classes).

    Inputs are (B, 1 or 3, H, W) in [0, 1] with H, W >= 32; grey is repeated to three channels and normalised with
    ``image_mean`` / ``image_std`` inside the model, so callers pass pixels exactly as the detector receives them.
    The four stages (``layer1``..``layer4``, strides 4-32) are the same for both trunks, so explanations and the
    feature-layer pictures do not depend on the backbone.
    """

    def __init__(
        self, num_classes: int = 2, levels: tuple[int, ...] = (1, 2, 4), backbone_weights: str | Path | None = None,
        image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        image_std: tuple[float, float, float] = (0.25, 0.25, 0.25), backbone: str = "resnet18",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.lite_variant = lite_variant(backbone)
        if self.lite_variant is not None:
            path = resolve_lite_weights(backbone_weights, self.lite_variant)
            self.trunk = efficientnet_lite_backbone(self.lite_variant, out_indices=(1, 2, 3, 4), weights_file=path)
            channels = int(self.trunk.feature_info.channels()[-1])
            self._last_stage = self.trunk.feature_info.module_name()[-1]
        else:
            trunk = resnet18(weights=None)
            load_backbone_weights(trunk, backbone_weights, "resnet18")
            self.conv1, self.bn1, self.relu, self.maxpool = trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool
            self.layer1, self.layer2, self.layer3, self.layer4 = trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4
            channels = 512
        self.spp = SpatialPyramidPool(levels)
        self.fc = nn.Linear(self.spp.output_features(channels), num_classes)
        self.register_buffer("image_mean", torch.tensor(image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std).view(1, 3, 1, 1), persistent=False)
        self.num_classes = num_classes
        self.levels = self.spp.levels

    @property
    def target_layer(self) -> nn.Module:
        """The module Grad-CAM hooks: the last stage (ResNet ``layer4``, or the Lite block at stride 32)."""
        if self.lite_variant is not None:
            return self.trunk.get_submodule(self._last_stage)
        return self.layer4

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected (B, 1|3, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < MIN_INPUT:
            raise ValueError(f"SPPNet needs inputs at least {MIN_INPUT} px on each side, got {tuple(x.shape[-2:])}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.image_mean) / self.image_std

    def feature_stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs of layer1..layer4 (the paper's per-stage feature maps, section 3.2 / Fig. 3e)."""
        if self.lite_variant is not None:
            return dict(zip(STAGES, self.trunk(self._normalise(x)), strict=True))
        x = self.maxpool(self.relu(self.bn1(self.conv1(self._normalise(x)))))
        stages = {}
        for name in STAGES:
            x = getattr(self, name)(x)
            stages[name] = x
        return stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.spp(self.feature_stages(x)["layer4"]))


def build_classifier(config: ClassifierConfig = ClassifierConfig(),
                     backbone_weights: str | Path | None = None) -> SPPNet:
    """Build an SPPNet from a config; ``backbone_weights`` as in ``build_detector`` (a resnet18 file, or for a Lite
    trunk ``"imagenet"`` / its file). Never downloads."""
    model = SPPNet(config.num_classes, config.levels, backbone_weights, config.image_mean, config.image_std,
                   backbone=config.backbone)
    model.mccad_config = config  # type: ignore[assignment]
    return model


def fit_to_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (C, H, W) so its long side is ``size`` (aspect kept), then pad right/bottom with 0 to size x size.

    Zero is the background of a standardised mammogram, so padding adds no structure; keeping the aspect ratio avoids
    stretching round calcifications into ellipses.
    """
    if image.ndim == 2:
        image = image.unsqueeze(0)
    if image.ndim != 3:
        raise ValueError(f"expected (C, H, W), got {tuple(image.shape)}")
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = F.interpolate(image[None].float(), size=(nh, nw), mode="bilinear", align_corners=False,
                            antialias=scale < 1)[0]
    return F.pad(resized, (0, size - nw, 0, size - nh))


def classify(
    model: SPPNet, images: list[torch.Tensor], config: ClassifierConfig, size: int | None = None,
    batch_size: int = 8,
) -> np.ndarray:
    """Softmax probabilities (B, num_classes) for images (C, H, W) in [0, 1].

    Each image is fitted to one square size (``size`` or ``config.input_size``; pass ``config.patch_size`` for lesion
    patches) so that the batch stacks; grey and colour inputs may be mixed.
    """
    if not images:
        return np.zeros((0, config.num_classes), dtype=np.float32)
    side = size or config.input_size
    model.eval()
    device = next(model.parameters()).device
    probabilities = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            batch = torch.stack([fit_to_square(img.float(), side).expand(3, -1, -1) for img in chunk]).to(device)
            probabilities.append(torch.softmax(model(batch).float(), dim=1).cpu().numpy())
    return np.concatenate(probabilities).astype(np.float32)
