"""Where a simulated cluster may go and how noisy the image there is: breast mask, nipple, noise.

The breast mask (breast tissue, no background, labels or pectoral muscle, ``margin_mm`` inside the skin line) lives
in :mod:`models.breast_mask`, since the detector's gate (``models.breast_gate``) uses it too; :func:`breast_mask` is
imported here so that the simulator's modules keep importing it from this one.

:func:`nipple_position` finds where the ducts converge. :func:`image_noise_sigma` measures the image's own pixel noise
(robust MAD of neighbour differences inside the breast), which the inserter uses to add the extra quantum noise an
attenuating calcification causes.
"""
from __future__ import annotations

import math

import numpy as np

from models.breast_mask import breast_mask

__all__ = ["breast_mask", "image_noise_sigma", "nipple_position"]


def nipple_position(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of the breast point farthest from the chest wall, where the ducts converge."""
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        raise ValueError("the breast mask is empty")
    left_mass = mask[:, : mask.shape[1] // 2].sum()
    right_mass = mask[:, mask.shape[1] // 2:].sum()
    col = int(cols[-1]) if left_mass >= right_mass else int(cols[0])
    band = mask[:, max(col - 3, 0): col + 4]
    rows = np.flatnonzero(band.any(axis=1))
    return float(col) + 0.5, float(rows.mean()) + 0.5


def image_noise_sigma(image: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pixel noise standard deviation of ``image``: 1.4826 * MAD of horizontal neighbour differences / sqrt(2),
    over the breast. Parenchymal structure varies slowly at the pixel scale, so neighbour differences are mostly
    noise (quantum noise and film grain), and the MAD ignores edges and calcifications."""
    pixels = np.asarray(image, dtype=np.float32)
    step = max(1, pixels.shape[0] // 512)  # a few hundred rows measure the noise as well as all of them
    rows = pixels[::step]
    diff = rows[:, 1:] - rows[:, :-1]
    if mask is not None:
        sub = mask[::step]
        diff = diff[sub[:, 1:] & sub[:, :-1]]
    diff = diff.ravel()
    if diff.size == 0:
        return 0.0
    mad = float(np.median(np.abs(diff - np.median(diff))))
    return 1.4826 * mad / math.sqrt(2.0)
