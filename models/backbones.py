"""ImageNet initialisation of the ResNet backbones, from local files only.

The paper initialises FPNNet from pretrained weights (section 2.6). mccad never downloads anything (models are data),
so a caller names a file, or asks for torchvision's own cache (``torch.hub.get_dir()/checkpoints``) where
an operator may have placed the file by hand. ``None`` means random initialisation (tests, synthetic demos).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from models.errors import BackboneWeightsInvalid, WeightsNotFound

log = logging.getLogger(__name__)

TORCH_CACHE = "torch-cache"

# torchvision's published ImageNet files (torchvision.models.resnet, IMAGENET1K_V1 then V2): the file names are what
# torch.hub would have stored in its cache.
TORCHVISION_FILES: dict[str, tuple[str, ...]] = {
    "resnet18": ("resnet18-f37072fd.pth",),
    "resnet50": ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"),
}


def torch_cache_dir() -> Path:
    """Where torch.hub keeps downloaded checkpoints (honours ``TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_backbone_weights(spec: str | Path | None, arch: str) -> Path | None:
    """Turn a ``backbone_weights`` argument into a file path, or None for random initialisation.

    Raises WeightsNotFound when a file is named but missing, or when ``"torch-cache"`` finds no torchvision file.
    """
    if spec is None:
        return None
    if str(spec) == TORCH_CACHE:
        cache = torch_cache_dir()
        for name in TORCHVISION_FILES[arch]:
            candidate = cache / name
            if candidate.is_file():
                return candidate
        raise WeightsNotFound(cache / TORCHVISION_FILES[arch][0], f"no torchvision {arch} ImageNet file in the cache")
    path = Path(spec)
    if not path.is_file():
        raise WeightsNotFound(path, f"{arch} ImageNet weights")
    return path


def load_backbone_weights(backbone: nn.Module, spec: str | Path | None, arch: str) -> Path | None:
    """Load ImageNet weights into a torchvision ResNet (its ``fc`` layer is ignored); log which file was used.

    Returns the file used, or None when the backbone keeps its random initialisation.
    """
    path = resolve_backbone_weights(spec, arch)
    if path is None:
        log.info("backbone %s: random initialisation (no pretrained weights)", arch)
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise BackboneWeightsInvalid(
            path, f"not a torchvision {arch} state dict: missing {missing[:3]}, unexpected {list(unexpected)[:3]}"
        )
    log.info("backbone %s: ImageNet weights from %s", arch, path)
    return path
