"""Rendering simulated calcification clusters into a mammogram, with the physics of the imaging chain.

For one cluster at pixel spacing ``s`` (mm):

1. Projected thickness. On a grid ``k`` times finer than the pixels (``k = ceil(s / 0.025)``, so that 0.1 mm
   particles are resolved at every spacing), each ellipsoid contributes its chord length ``2c sqrt(1 - r^2)``;
   rim shells are the outer minus the inner ellipsoid, milk-of-calcium menisci keep the lower half of the cyst.
   Thickness times density gives the equivalent thickness ``t`` of solid calcium hydroxyapatite.
2. Attenuation. The transmitted fraction is ``exp(-dmu * t)`` (Beer-Lambert), ``dmu`` the cluster's attenuation
   difference over tissue (0.8-1.6 /mm).
3. Detector point spread. The attenuated fraction ``1 - exp(-dmu t)`` is blurred by a Gaussian PSF
   (``PSF_SIGMA_MM`` = 0.07 mm, FWHM 0.16 mm: focal-spot unsharpness plus screen-film or digitiser blur) and
   averaged over each pixel's aperture (the fine grid is area-averaged down to the pixels).
4. Display. Mammograms store values roughly linear in log exposure (film density; the log of a For Processing
   detector signal), so the log signal ``-ln(1 - blurred)`` is added with a gain: ``DISPLAY_GAIN`` = 0.38 display
   units per natural-log unit (film gamma about 3 over about 3.4 optical density mapped to [0, 1]: 3 / 3.4 *
   log10(e)) times the local slope of the characteristic curve, ``4 b (1 - b)`` (at least 0.35) for the local
   background level ``b`` (the image smoothed over 1 mm). Contrast therefore depends on the particle's thickness
   (its size), its density and the background it sits on, as attenuation contrast does.
5. Noise. Fewer photons pass a calcification, so the relative quantum noise there grows by ``exp(signal / 2)``:
   the image's own noise level (:func:`training.simulate.background.image_noise_sigma`) scaled by
   ``sqrt(exp(signal) - 1)`` is added as extra noise. Background noise already in the image stays as it is.

6. Visibility (optional, the simulator's default through ``training.simulate.dataset``): the noise-free added signal's
   calcifications standing out of the breast's texture are counted (``training.simulate.visibility``); a cluster
   showing fewer than ``min_visible`` is not inserted but drawn again, as a reader would not have annotated it.

The ground-truth box of a cluster is the extent of its calcifications' outlines plus ``BOX_MARGIN_MM`` and the PSF
reach, in pixels of the image; boxes are x0, y0, x1, y1 (x = column), pixel ``i`` covering ``[i, i + 1)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from training.simulate.background import breast_mask, image_noise_sigma, nipple_position
from training.simulate.morphology import Calcification, Cluster, LesionLabel
from training.simulate.visibility import check_min_visible, visible_calcifications

PSF_SIGMA_MM = 0.07
DISPLAY_GAIN = 0.38
MIN_SLOPE = 0.35
FINE_PITCH_MM = 0.025
BOX_MARGIN_MM = 0.5
PLACEMENT_TRIES = 60
#: a cluster no reader would see (``training.simulate.visibility``) is drawn again at most this many times, then left
#: out
VISIBILITY_REDRAWS = 20


@dataclass(frozen=True)
class InsertedLesion:
    """One inserted cluster: its box (x0, y0, x1, y1 in image pixels), label, BI-RADS pattern and distribution,
    centre, the spacing it was rendered at and its peak added signal (display units)."""

    box: tuple[float, float, float, float]
    label: LesionLabel
    pattern: str
    distribution: str
    centre: tuple[float, float]
    spacing_mm: float
    peak_contrast: float
    n_calcifications: int
    #: calcifications standing out of the texture (``training.simulate.visibility``); None where not measured
    visible_calcifications: int | None = None
    #: clusters of its pattern drawn until one was visible (1: the first; always 1 without the visibility rule)
    draws: int = 1


def _supersampling(spacing_mm: float) -> int:
    return max(1, int(math.ceil(spacing_mm / FINE_PITCH_MM - 1e-9)))


def _draw_thickness(grid: np.ndarray, calc: Calcification, ox: float, oy: float, pitch: float) -> None:
    """Add the equivalent hydroxyapatite thickness (mm) of ``calc`` to ``grid`` (fine pitch ``pitch`` mm); the
    grid's cell (0, 0) starts at (ox, oy) mm in cluster coordinates."""
    h, w = grid.shape
    for part in calc.parts:
        reach = max(part.a, part.b) + pitch
        x0 = max(int(math.floor((part.x - reach - ox) / pitch)), 0)
        x1 = min(int(math.ceil((part.x + reach - ox) / pitch)) + 1, w)
        y0 = max(int(math.floor((part.y - reach - oy) / pitch)), 0)
        y1 = min(int(math.ceil((part.y + reach - oy) / pitch)) + 1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        xs = ox + (np.arange(x0, x1) + 0.5) * pitch - part.x
        ys = oy + (np.arange(y0, y1) + 0.5) * pitch - part.y
        dx, dy = xs[None, :], ys[:, None]
        ca, sa = math.cos(part.angle), math.sin(part.angle)
        u = (dx * ca + dy * sa) / part.a
        v = (-dx * sa + dy * ca) / part.b
        r2 = u * u + v * v
        chord = 2.0 * part.c * np.sqrt(np.clip(1.0 - r2, 0.0, None))
        if calc.shape == "rim":
            ai, bi, ci = part.a - calc.wall, part.b - calc.wall, part.c - calc.wall
            if ai > 0 and bi > 0 and ci > 0:
                ri2 = (u * part.a / ai) ** 2 + (v * part.b / bi) ** 2
                chord = chord - 2.0 * ci * np.sqrt(np.clip(1.0 - ri2, 0.0, None))
        elif calc.shape == "meniscus":
            chord = np.where(v > 0.0, chord, 0.0)  # sediment in the lower half (image y points down)
        region = grid[y0:y1, x0:x1]
        # overlapping parts of one particle do not add up: the particle is their union
        np.maximum(region, calc.density * chord.astype(np.float32), out=region)


def render_signal(cluster: Cluster, spacing_mm: float, centre_px: tuple[float, float],
                  psf_sigma_mm: float = PSF_SIGMA_MM) -> tuple[np.ndarray, tuple[int, int]]:
    """The log-attenuation signal of ``cluster`` centred at ``centre_px`` (x, y): a float32 patch and the (row,
    column) of its top-left pixel in the image. Steps 1-3 of the module docstring."""
    k = _supersampling(spacing_mm)
    pitch = spacing_mm / k
    x0_mm, y0_mm, x1_mm, y1_mm = cluster.extent_mm()
    pad = 4.0 * psf_sigma_mm + 2 * spacing_mm
    cx, cy = centre_px
    col0 = int(math.floor(cx + (x0_mm - pad) / spacing_mm))
    row0 = int(math.floor(cy + (y0_mm - pad) / spacing_mm))
    col1 = int(math.ceil(cx + (x1_mm + pad) / spacing_mm))
    row1 = int(math.ceil(cy + (y1_mm + pad) / spacing_mm))
    rows, cols = row1 - row0, col1 - col0
    # cluster coordinates (mm) of the fine grid's corner: pixel column c starts at (c - cx) * spacing from the centre
    ox, oy = (col0 - cx) * spacing_mm, (row0 - cy) * spacing_mm
    thickness = np.zeros((rows * k, cols * k), dtype=np.float32)
    for calc in cluster.calcifications:
        _draw_thickness(thickness, calc, ox, oy, pitch)
    attenuated = 1.0 - np.exp(-np.float32(cluster.delta_mu_per_mm) * thickness)
    blurred = ndimage.gaussian_filter(attenuated, sigma=psf_sigma_mm / pitch, mode="constant", truncate=4.0)
    pixels = blurred.reshape(rows, k, cols, k).mean(axis=(1, 3))
    signal = -np.log(np.clip(1.0 - pixels, 1e-6, 1.0))
    return signal.astype(np.float32), (row0, col0)


def cluster_box(cluster: Cluster, spacing_mm: float, centre_px: tuple[float, float],
                psf_sigma_mm: float = PSF_SIGMA_MM) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = cluster.extent_mm()
    m = BOX_MARGIN_MM + 2.0 * psf_sigma_mm
    cx, cy = centre_px
    return (cx + (x0 - m) / spacing_mm, cy + (y0 - m) / spacing_mm, cx + (x1 + m) / spacing_mm,
            cy + (y1 + m) / spacing_mm)


def _calc_points_px(cluster: Cluster, spacing_mm: float, centre_px: tuple[float, float]) -> np.ndarray:
    pts = np.concatenate([c.outline() for c in cluster.calcifications]) / spacing_mm
    return pts + np.asarray(centre_px)[None, :]


def _fits(mask: np.ndarray, points: np.ndarray, box: tuple[float, float, float, float],
          taken: list[tuple[float, float, float, float]]) -> bool:
    h, w = mask.shape
    xs = np.floor(points[:, 0]).astype(np.int64)
    ys = np.floor(points[:, 1]).astype(np.int64)
    if xs.min() < 0 or ys.min() < 0 or xs.max() >= w or ys.max() >= h:
        return False
    if not mask[ys, xs].all():
        return False
    x0, y0, x1, y1 = box
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        return False
    return not any(x0 < t[2] and t[0] < x1 and y0 < t[3] and t[1] < y1 for t in taken)


def insert_clusters(image: np.ndarray, spacing_mm: float, clusters: Sequence[Cluster], rng: np.random.Generator,
                    breast_mask: np.ndarray | None = None, *, view: str | None = None,
                    laterality: str | None = None, contrast_scale: float = 1.0,
                    noise_sigma: float | None = None, texture_spread: float | None = None,
                    min_visible: int = 0, redraw: Callable[[Cluster], Cluster] | None = None,
                    psf_sigma_mm: float = PSF_SIGMA_MM, linear_response: bool = False
                    ) -> tuple[np.ndarray, list[InsertedLesion]]:
    """Insert ``clusters`` at random places of the breast of ``image`` (float in [0, 1], bright = dense).

    Each cluster is turned so that its duct axis (+x) points to the nipple, then placed where every calcification
    lies inside ``breast_mask`` (computed with :func:`training.simulate.background.breast_mask` when None) and its box
    overlaps no other inserted box; a cluster that finds no such place in ``PLACEMENT_TRIES`` draws is left out
    (the returned list says what was inserted). ``noise_sigma``: the image's pixel noise when the caller has measured
    it (:func:`training.simulate.background.image_noise_sigma` over ``breast_mask``), else measured here.

    ``texture_spread`` (:func:`training.simulate.visibility.texture_spread` of this background) has each cluster's
    visible calcifications counted and recorded; with ``min_visible`` > 0 a placed cluster showing fewer is not
    inserted but replaced by ``redraw(cluster)`` (a fresh draw of its pattern) and placed again, at most
    ``VISIBILITY_REDRAWS`` times, then left out: the reader's annotation rule of ``training.simulate.visibility``.
    With ``min_visible`` 0 the random draws are exactly those of the simulator before the rule.
    ``psf_sigma_mm`` and ``linear_response``: an image-formation stage's point spread (the rendering's and the
    box margin's) and response (contrast independent of the background level instead of the characteristic curve's
    slope of step 4), ``training.simulate.formation``; the defaults are the simulator's own.
    Returns a new float32 image and one ``InsertedLesion`` per cluster.
    """
    base = np.asarray(image, dtype=np.float32)
    if base.ndim != 2:
        raise ValueError(f"insert_clusters expects a 2-D image, got shape {base.shape}")
    if check_min_visible(min_visible) and (texture_spread is None or redraw is None):
        raise ValueError("min_visible needs the background's texture_spread and a redraw of a cluster's pattern")
    out = base.copy()
    mask = breast_mask if breast_mask is not None else _default_mask(base, spacing_mm, view, laterality)
    if mask.shape != base.shape:
        raise ValueError(f"breast mask shape {mask.shape} differs from the image shape {base.shape}")
    candidates = np.flatnonzero(mask.ravel())
    if candidates.size == 0 or not clusters:
        return out, []
    nipple = nipple_position(mask)
    sigma_noise = image_noise_sigma(base, mask) if noise_sigma is None else float(noise_sigma)
    smooth_sigma = max(1.0 / spacing_mm, 1.0)
    lesions: list[InsertedLesion] = []
    taken: list[tuple[float, float, float, float]] = []
    for cluster in clusters:
        for attempt in range(1 + (VISIBILITY_REDRAWS if min_visible else 0)):
            if attempt:
                cluster = redraw(cluster)
            placed = _place(cluster, spacing_mm, rng, candidates, base.shape[1], nipple, mask, taken, psf_sigma_mm)
            if placed is None:
                break  # no room for it: left out, as before the visibility rule
            turned, centre, box = placed
            window, sig, added = _added_contrast(base, out, turned, spacing_mm, centre, smooth_sigma,
                                                 contrast_scale, psf_sigma_mm, linear_response)
            visible = (None if texture_spread is None
                       else visible_calcifications(added, spacing_mm, texture_spread))
            if min_visible and visible < min_visible:
                continue  # no reader would have annotated it: draw the pattern again
            extra_sd = np.float32(sigma_noise) * np.sqrt(np.expm1(sig))
            noise = rng.standard_normal(sig.shape, dtype=np.float32) * extra_sd
            window += added + noise
            np.clip(window, 0.0, 1.0, out=window)
            taken.append(box)
            lesions.append(InsertedLesion(
                box=tuple(float(v) for v in box), label=cluster.label, pattern=cluster.pattern,
                distribution=cluster.distribution, centre=(float(centre[0]), float(centre[1])),
                spacing_mm=float(spacing_mm), peak_contrast=float(added.max()),
                n_calcifications=len(cluster.calcifications), visible_calcifications=visible,
                draws=attempt + 1))
            break
    return out, lesions


def _added_contrast(base: np.ndarray, out: np.ndarray, turned: Cluster, spacing_mm: float,
                    centre: tuple[float, float], smooth_sigma: float, contrast_scale: float,
                    psf_sigma_mm: float = PSF_SIGMA_MM, linear_response: bool = False
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1-4 for a placed cluster: the view of ``out`` it falls on (clipped to the image), its log signal there
    and the display contrast it adds, scaled by the characteristic curve's slope on the background ``base`` (by 1
    under a ``linear_response``)."""
    signal, (row0, col0) = render_signal(turned, spacing_mm, centre, psf_sigma_mm)
    r0, c0 = max(row0, 0), max(col0, 0)
    r1, c1 = min(row0 + signal.shape[0], out.shape[0]), min(col0 + signal.shape[1], out.shape[1])
    sig = signal[r0 - row0:r1 - row0, c0 - col0:c1 - col0]
    if linear_response:
        return out[r0:r1, c0:c1], sig, np.float32(DISPLAY_GAIN * contrast_scale) * sig
    pad = int(math.ceil(3 * smooth_sigma))
    context = base[max(r0 - pad, 0):r1 + pad, max(c0 - pad, 0):c1 + pad]
    local = ndimage.gaussian_filter(context, smooth_sigma, mode="nearest")
    local = local[r0 - max(r0 - pad, 0):r0 - max(r0 - pad, 0) + sig.shape[0],
                  c0 - max(c0 - pad, 0):c0 - max(c0 - pad, 0) + sig.shape[1]]
    slope = np.maximum(4.0 * local * (1.0 - local), MIN_SLOPE)
    return out[r0:r1, c0:c1], sig, np.float32(DISPLAY_GAIN * contrast_scale) * slope * sig


def _place(cluster: Cluster, spacing_mm: float, rng: np.random.Generator, candidates: np.ndarray, width: int,
           nipple: tuple[float, float], mask: np.ndarray, taken: list[tuple[float, float, float, float]],
           psf_sigma_mm: float = PSF_SIGMA_MM
           ) -> tuple[Cluster, tuple[float, float], tuple[float, float, float, float]] | None:
    """A place for ``cluster`` (turned towards the nipple, inside the breast, clear of the ``taken`` boxes): the
    turned cluster, its centre and box; None when ``PLACEMENT_TRIES`` draws find none."""
    for _ in range(PLACEMENT_TRIES):
        flat = int(candidates[rng.integers(candidates.size)])
        cy, cx = divmod(flat, width)
        centre = (cx + float(rng.random()), cy + float(rng.random()))
        towards_nipple = math.atan2(nipple[1] - centre[1], nipple[0] - centre[0])
        turned = cluster.rotated(towards_nipple + float(rng.normal(0.0, 0.15)))
        box = cluster_box(turned, spacing_mm, centre, psf_sigma_mm)
        if _fits(mask, _calc_points_px(turned, spacing_mm, centre), box, taken):
            return turned, centre, box
    return None


def _default_mask(image: np.ndarray, spacing_mm: float, view: str | None, laterality: str | None) -> np.ndarray:
    return breast_mask(image, spacing_mm, view=view, laterality=laterality)
