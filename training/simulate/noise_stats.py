"""Image-formation statistics measured the same way on real and simulated mammograms: pixel noise against signal
in flat regions, and the noise power spectrum there.

Why: the film and digital image formation of :mod:`training.simulate.formation` is calibrated against real
digitised film, not by eye. Both figures are taken over *flat* patches of the breast (the quarter of its patches
whose smoothed signal varies least, mostly fat), where what remains after removing the slow trend is acquisition
noise rather than anatomy:

* :func:`noise_vs_signal`: per flat patch, its mean value and the robust standard deviation (MAD-sigma) of the
  high-pass residual (the image minus its Gaussian smoothing at ``HIGHPASS_MM``). Binned by the mean
  (:func:`binned`), this is the noise-against-signal curve: film grain grows with optical density, quantum noise
  of a digital detector with attenuation.
* :func:`noise_power_spectrum`: the radially averaged noise power spectrum (value^2 mm^2) of the same flat patches
  with their mean plane removed and a Hann window, in frequency bands (cycles/mm): its shape says how correlated
  the noise is (white noise is flat; blurred grain falls towards the Nyquist frequency).

Every length is in millimetres, so images at different pitches are measured over the same physical scales.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: the high-pass cut: the residual keeps structure finer than about this (mm)
HIGHPASS_MM = 0.4
#: the trend whose variation marks a patch as flat or not (mm)
TREND_MM = 1.0
#: side of a measured patch (mm)
PATCH_MM = 6.4
#: share of a breast's patches kept as flat (those whose trend varies least)
FLAT_SHARE = 0.25
#: the breast's border band left out (mm): the skin line is an edge, not noise
BORDER_MM = 3.0
#: frequency bands (cycles/mm) the spectrum is reported in; bands above an image's Nyquist frequency are left out
NPS_BANDS: tuple[tuple[float, float], ...] = ((0.25, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 2.0), (2.0, 2.5),
                                              (2.5, 4.0), (4.0, 6.0), (6.0, 10.0))


@dataclass(frozen=True)
class FlatPatches:
    """The flat patches of one image: top-left corners (row, column), side in pixels, and each patch's mean value
    and high-pass noise (MAD-sigma of the residual)."""

    corners: list[tuple[int, int]]
    side: int
    means: np.ndarray
    noise: np.ndarray


def _mad_sigma(values: np.ndarray) -> float:
    median = float(np.median(values))
    return 1.4826 * float(np.median(np.abs(values - median)))


def flat_patches(pixels: np.ndarray, breast: np.ndarray, spacing_mm: float) -> FlatPatches:
    """The ``FLAT_SHARE`` flattest ``PATCH_MM`` patches lying wholly inside ``breast`` eroded by ``BORDER_MM``
    (``pixels`` float, bright = dense; ``breast`` a boolean mask of its shape)."""
    image = np.asarray(pixels, dtype=np.float64)
    inner = ndimage.binary_erosion(breast, iterations=max(1, round(BORDER_MM / spacing_mm)))
    residual = image - ndimage.gaussian_filter(image, HIGHPASS_MM / spacing_mm)
    trend = ndimage.gaussian_filter(image, TREND_MM / spacing_mm)
    side = max(8, round(PATCH_MM / spacing_mm))
    found: list[tuple[int, int, float, float, float]] = []
    for r in range(0, image.shape[0] - side + 1, side):
        for c in range(0, image.shape[1] - side + 1, side):
            if not inner[r:r + side, c:c + side].all():
                continue
            found.append((r, c, float(trend[r:r + side, c:c + side].std()),
                          float(image[r:r + side, c:c + side].mean()),
                          _mad_sigma(residual[r:r + side, c:c + side].ravel())))
    if not found:
        return FlatPatches([], side, np.zeros(0), np.zeros(0))
    limit = float(np.quantile([f[2] for f in found], FLAT_SHARE))
    kept = [f for f in found if f[2] <= limit]
    return FlatPatches([(f[0], f[1]) for f in kept], side, np.array([f[3] for f in kept]),
                       np.array([f[4] for f in kept]))


def noise_vs_signal(pixels: np.ndarray, breast: np.ndarray, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(means, noise) of the flat patches of one image (see :func:`flat_patches`)."""
    patches = flat_patches(pixels, breast, spacing_mm)
    return patches.means, patches.noise


def binned(means: np.ndarray, noise: np.ndarray, edges: np.ndarray) -> list[tuple[float, float, int]]:
    """The median noise of the patches whose mean falls in each bin ``[edges[i], edges[i + 1])``: (bin centre,
    median noise, patches) for every bin holding a patch."""
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (means >= lo) & (means < hi)
        if inside.any():
            rows.append((float((lo + hi) / 2), float(np.median(noise[inside])), int(inside.sum())))
    return rows


def noise_power_spectrum(pixels: np.ndarray, breast: np.ndarray, spacing_mm: float
                         ) -> dict[tuple[float, float], float]:
    """Mean radially averaged noise power spectrum (value^2 mm^2) of the flat patches, per ``NPS_BANDS`` band below
    the Nyquist frequency; empty when the image has no flat patch."""
    image = np.asarray(pixels, dtype=np.float64)
    patches = flat_patches(image, breast, spacing_mm)
    if not patches.corners:
        return {}
    n = patches.side
    window = np.outer(np.hanning(n), np.hanning(n))
    norm = spacing_mm * spacing_mm / float((window ** 2).sum())
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    design = np.stack([np.ones(n * n), yy.ravel(), xx.ravel()], axis=1)
    freq = np.fft.fftfreq(n, d=spacing_mm)
    radius = np.hypot(freq[:, None], freq[None, :])
    power = np.zeros((n, n))
    for r, c in patches.corners:
        patch = image[r:r + n, c:c + n].ravel()
        coef, *_ = np.linalg.lstsq(design, patch, rcond=None)
        detrended = (patch - design @ coef).reshape(n, n)
        power += np.abs(np.fft.fft2(detrended * window)) ** 2 * norm
    power /= len(patches.corners)
    nyquist = 0.5 / spacing_mm
    return {band: float(power[(radius >= band[0]) & (radius < band[1])].mean())
            for band in NPS_BANDS if band[1] <= nyquist + 1e-9}
