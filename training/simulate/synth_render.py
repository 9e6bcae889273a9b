"""Drawing primitives of the synthetic mammogram generator: parenchyma texture, breast and pectoral masks,
calcifications. Pure numpy on float images in [0, 1] (bright = dense), all randomness from the caller's Generator.
"""
from __future__ import annotations

import numpy as np


def power_law_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float,
                    anisotropy: float = 1.0) -> np.ndarray:
    """Gaussian noise with a 1/f^beta power spectrum, zero mean and unit standard deviation.

    Mammographic parenchyma has a power-law spectrum with beta around 3 (Burgess et al., Med. Phys. 2001), which is
    what makes filtered noise look like breast tissue rather than like sensor noise. ``anisotropy`` > 1 stretches
    structures along x (the chest-wall-to-nipple direction along which ducts run).
    """
    h, w = shape
    white = rng.standard_normal((h, w), dtype=np.float32)
    fy = np.fft.fftfreq(h).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(w).astype(np.float32)[None, :]
    f2 = (fx * anisotropy) ** 2 + fy**2
    f2[0, 0] = 1.0
    amplitude = f2 ** np.float32(-beta / 4.0)  # |f|^(-beta/2) on the amplitude gives power |f|^-beta
    amplitude[0, 0] = 0.0
    field = np.fft.irfft2(np.fft.rfft2(white) * amplitude, s=(h, w)).astype(np.float32)
    std = float(field.std())
    return field / np.float32(std) if std > 0 else field


def ellipse_radius(
    shape: tuple[int, int], centre_y: float, depth: float, half_height: float, wobble: np.ndarray | None = None
) -> np.ndarray:
    """Normalised elliptic radius of a half-ellipse whose flat side lies on the left image edge (the chest wall).

    ``r <= 1`` is inside the breast. ``wobble`` (coefficients of low-order angular harmonics) makes the outline less
    perfect, as real breast outlines are.
    """
    h, w = shape
    y = ((np.arange(h, dtype=np.float32) + np.float32(0.5 - centre_y)) / np.float32(half_height))[:, None]
    x = ((np.arange(w, dtype=np.float32) + np.float32(0.5)) / np.float32(depth))[None, :]
    r = np.sqrt(x * x + y * y)
    if wobble is not None and len(wobble):
        # cos(k theta) from cos(theta) = x / r by the Chebyshev recurrence: no arctan2 over the whole image
        cos1 = x / np.maximum(r, np.float32(1e-6))
        prev, cur = np.ones_like(cos1), cos1
        scale = np.ones_like(r)
        for c in wobble:
            prev, cur = cur, 2 * cos1 * cur - prev
            scale += np.float32(c) * cur
        r = r / scale
    return r


def draw_calcification(
    image: np.ndarray, cx: float, cy: float, semi_major: float, semi_minor: float, angle: float, amplitude: float
) -> None:
    """Add one calcification (a bright, anti-aliased, dome-shaped ellipse) to ``image`` in place.

    Coarse benign calcifications are round and smooth; malignant ones are small, irregular and elongated (linear
    forms): the caller chooses the axes. The dome profile mimics the projected thickness of a dense particle.
    """
    reach = int(np.ceil(max(semi_major, semi_minor) + 2))
    x0, x1 = int(np.floor(cx)) - reach, int(np.floor(cx)) + reach + 1
    y0, y1 = int(np.floor(cy)) - reach, int(np.floor(cy)) + reach + 1
    h, w = image.shape
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        return
    xa, xb, ya, yb = max(x0, 0), min(x1, w), max(y0, 0), min(y1, h)
    yy, xx = np.mgrid[ya:yb, xa:xb]
    dx = xx + 0.5 - cx
    dy = yy + 0.5 - cy
    c, s = np.cos(angle), np.sin(angle)
    u = (dx * c + dy * s) / semi_major
    v = (-dx * s + dy * c) / semi_minor
    d = np.sqrt(u**2 + v**2)
    dome = np.sqrt(np.clip(1.0 - np.minimum(d, 1.0) ** 2, 0.0, 1.0))
    edge = np.clip((1.0 - d) * min(semi_major, semi_minor) + 0.5, 0.0, 1.0)  # anti-aliasing over one pixel
    image[ya:yb, xa:xb] += amplitude * np.maximum(dome, 0.35 * edge) * edge
