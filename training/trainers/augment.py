"""Training-time augmentation: horizontal flips and intensity changes (the released code flips).

Drawn from the epoch's generator so that a resumed run repeats the uninterrupted run's augmentations exactly.
Intensity changes are multiplicative (gamma and contrast about zero), so the black background the standardisation
cut around stays black and the detector never learns from a lifted background.
"""
from __future__ import annotations

import numpy as np
import torch

GAMMA_RANGE = (0.75, 1.35)
CONTRAST_RANGE = (0.85, 1.15)


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def hflip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """Mirror (N, 4) x0, y0, x1, y1 boxes about the vertical centre line of an image ``width`` pixels wide."""
    out = np.asarray(boxes, dtype=np.float32).copy()
    if out.size:
        out[:, [0, 2]] = width - out[:, [2, 0]]
    return out


def augment(pixels: np.ndarray, boxes: np.ndarray, gen: torch.Generator, *, hflip: bool,
            intensity: bool) -> tuple[torch.Tensor, np.ndarray]:
    """One augmented copy: returns a (1, H, W) float tensor in [0, 1] and the boxes moved with it.

    The random draws happen whether or not an option is on, so turning one option off does not shift the others'
    random stream (two runs differing in one option differ only in that option).
    """
    flip = float(torch.rand((), generator=gen)) < 0.5
    gamma = _uniform(gen, *GAMMA_RANGE)
    contrast = _uniform(gen, *CONTRAST_RANGE)
    img = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
    out_boxes = np.asarray(boxes, dtype=np.float32)
    if hflip and flip:
        img = torch.flip(img, dims=[1])
        out_boxes = hflip_boxes(out_boxes, pixels.shape[1])
    if intensity:
        img = (img.clamp(0.0, 1.0) ** gamma * contrast).clamp(0.0, 1.0)
    return img[None], out_boxes
