"""Explanations: class activation maps of FPNNet and SPPNet, and the paper's per-stage feature maps.

Lin et al. 2025 show CAMs of FPNNet (Fig. 4) and channel-summed, normalised feature maps of each backbone stage
(Fig. 3e). Here both are Grad-CAM (Selvaraju et al. 2017): the feature maps of a layer weighted by the spatial mean
of the gradient of the target class score, summed over channels, rectified. Every function returns float32 arrays
in [0, 1] with the (H, W) of the image tensor it was given (model-input pixels); the pipeline maps them to the
original DICOM pixels with the preprocessing coordinate map.

The CAM functions need gradients, so they run outside ``torch.inference_mode``; they take the gradients of the
feature maps only (``torch.autograd.grad``), leave every parameter's ``.grad`` as it was, and put the model in eval
mode.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.image_list import ImageList

from models.classifier import SPPNet
from models.detector import to_three_channels

DETECTOR_STAGES = {"0": "layer1", "1": "layer2", "2": "layer3", "3": "layer4"}
DETECTOR_CAM_LEVELS = ("0", "1", "2", "3")  # FPN P2..P5; the max-pooled P6 only repeats P5


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Min-max scale to [0, 1]; a constant map becomes all zeros (nothing stands out)."""
    lo, hi = x.min(), x.max()
    if float(hi - lo) <= 1e-12:
        return torch.zeros_like(x)
    return (x - lo) / (hi - lo)


def _to_input_pixels(m: torch.Tensor, padded_hw: tuple[int, int], valid_hw: tuple[int, int],
                     out_hw: tuple[int, int]) -> torch.Tensor:
    """Feature-grid map (h, w) of a padded batch tensor -> (H, W) of the caller's image.

    torchvision's detector resizes the image to ``valid_hw`` and pads the batch to ``padded_hw``: upsample to the
    padded size, cut the padding off, then resize to the caller's size.
    """
    up = F.interpolate(m[None, None], size=padded_hw, mode="bilinear", align_corners=False)
    up = up[..., : valid_hw[0], : valid_hw[1]]
    return F.interpolate(up, size=out_hw, mode="bilinear", align_corners=False)[0, 0]


def _grad_cam(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """(1, C, h, w) activation and gradient -> (h, w) rectified Grad-CAM."""
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * activation).sum(dim=1))[0]


def _as_numpy(x: torch.Tensor) -> np.ndarray:
    return normalise(x.detach().float()).cpu().numpy().astype(np.float32)


def _image_hw(image: torch.Tensor) -> tuple[int, int]:
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected an image tensor (1|3, H, W), got {tuple(image.shape)}")
    return int(image.shape[1]), int(image.shape[2])


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _detector_input(model: FasterRCNN, image: torch.Tensor) -> ImageList:
    """The detector's own input transform (``model.transform``: resize by its ``min_size`` / ``max_size``, normalise,
    pad to ``size_divisible``) with the resize first and on the grey channel alone, then the three channels: the
    normalised three-channel copies are then of the resized image. torchvision normalises before it resizes; both
    are linear, so the two orders differ by float rounding only, and a 64 Mpx grey image explained at 1.5 Mpx no longer
    makes two 768 MiB three-channel copies."""
    transform = model.transform
    resized, _ = transform.resize(image, None)
    x = transform.normalize(to_three_channels(resized))
    batch = transform.batch_images([x], size_divisible=transform.size_divisible)
    return ImageList(batch, [(int(x.shape[-2]), int(x.shape[-1]))])


def detector_cam(model: FasterRCNN, image: torch.Tensor, target_label: int = 2,
                 levels: Iterable[str] = DETECTOR_CAM_LEVELS, out_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Grad-CAM of FPNNet for one class (2 malignant, 1 benign), over the FPN levels, in input pixels.

    The score explained is the sum of the class probabilities of the region proposals that pass the detector's score
    threshold for that class (the boxes it would report); when none pass, the single most confident proposal, so an
    image without detections still shows where the network looked. The CAMs of the FPN levels P2..P5 are each
    brought to input size and summed: small lesions are detected on the fine levels, which a CAM of the coarsest level
    alone would miss.

    ``out_hw`` is the grid of the returned map, covering the whole image (default: the image's own (H, W)). A caller
    explaining a very large image asks for a coarser grid and resamples it once
    (``models.preprocess.CoordinateMap.heatmap_to_original(..., coarse=True)``): the map's detail is that of the
    feature grid (stride 4 or more), and an input-sized float map of a 64 Mpx image is 256 MiB.

    Only the box head is differentiated: the backbone and the RPN run without autograd and the FPN levels enter the
    box head as leaves (the RPN's proposals carry no gradient, so the gradients are the same), which keeps no
    backbone activation alive for a backward pass.
    """
    image_hw = _image_hw(image)
    out_hw = (int(out_hw[0]), int(out_hw[1])) if out_hw is not None else image_hw
    model.eval()
    device = _device(model)
    with torch.no_grad():
        batch = _detector_input(model, image.to(device=device, dtype=torch.float32))
        levels_out = model.backbone(batch.tensors)
        chosen = [k for k in levels if k in levels_out]
        if not chosen:
            raise ValueError(f"no FPN level among {list(levels)}; the backbone has {list(levels_out)}")
        proposals, _ = model.rpn(batch, levels_out)
    features = OrderedDict((k, v.detach().requires_grad_(k in chosen)) for k, v in levels_out.items())
    del levels_out
    with torch.enable_grad():
        heads = model.roi_heads
        pooled = heads.box_roi_pool(features, proposals, batch.image_sizes)
        class_logits, _ = heads.box_predictor(heads.box_head(pooled))
        probs = torch.softmax(class_logits, dim=-1)[:, target_label]
        passing = probs >= heads.score_thresh
        target = probs[passing].sum() if bool(passing.any()) else probs.max()
        # gradients of the feature maps only: parameters' .grad stay untouched (a training loop may be running)
        grads = torch.autograd.grad(target, [features[k] for k in chosen], allow_unused=True)
    padded_hw = (int(batch.tensors.shape[-2]), int(batch.tensors.shape[-1]))
    valid_hw = tuple(int(v) for v in batch.image_sizes[0])
    cam = torch.zeros(out_hw, device=device)
    for key, grad in zip(chosen, grads, strict=True):
        if grad is None:
            continue
        cam += _to_input_pixels(normalise(_grad_cam(features[key].detach(), grad)), padded_hw, valid_hw, out_hw)
    return _as_numpy(cam)


def classifier_cam(model: SPPNet, image: torch.Tensor, target_class: int = 1) -> np.ndarray:
    """Grad-CAM of SPPNet for one class on its last stage (``model.target_layer``), in input pixels."""
    out_hw = _image_hw(image)
    if not 0 <= target_class < model.num_classes:
        raise ValueError(f"target_class must lie in 0..{model.num_classes - 1}")
    model.eval()
    captured: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        captured["activation"] = output

    handle = model.target_layer.register_forward_hook(keep)
    try:
        x = image.to(device=_device(model), dtype=torch.float32)[None].clone().requires_grad_(True)
        with torch.enable_grad():
            logits = model(x)
            activation = captured["activation"]
            (grad,) = torch.autograd.grad(logits[0, target_class], [activation])
    finally:
        handle.remove()
    cam = _grad_cam(activation.detach(), grad)
    up = F.interpolate(cam[None, None], size=out_hw, mode="bilinear", align_corners=False)[0, 0]
    return _as_numpy(up)


def feature_maps(model: nn.Module, image: torch.Tensor) -> dict[str, np.ndarray]:
    """The paper's per-stage feature maps (Fig. 3e): each ResNet stage's output summed over channels, normalised.

    Works for FPNNet (the ResNet50 body under the FPN, fed the image as the detector resizes and normalises it) and
    for SPPNet. Keys are ``layer1``..``layer4``; each map has the input image's (H, W).
    """
    out_hw = _image_hw(image)
    model.eval()
    x = image.to(device=_device(model), dtype=torch.float32)
    maps: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        if isinstance(model, SPPNet):
            stages = model.feature_stages(x[None])
            for name, act in stages.items():
                summed = act.sum(dim=1)[0]
                up = F.interpolate(summed[None, None], size=out_hw, mode="bilinear", align_corners=False)[0, 0]
                maps[name] = _as_numpy(up)
        elif isinstance(model, FasterRCNN):
            batch = _detector_input(model, x)
            stages = model.backbone.body(batch.tensors)
            padded_hw = (int(batch.tensors.shape[-2]), int(batch.tensors.shape[-1]))
            valid_hw = tuple(int(v) for v in batch.image_sizes[0])
            for key, act in stages.items():
                summed = act.sum(dim=1)[0]
                maps[DETECTOR_STAGES.get(key, key)] = _as_numpy(
                    _to_input_pixels(summed, padded_hw, valid_hw, out_hw))
        else:
            raise TypeError(f"feature_maps supports FPNNet (FasterRCNN) and SPPNet, got {type(model).__name__}")
    return maps
