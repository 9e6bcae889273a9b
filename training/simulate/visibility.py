"""Whether a reader would see a simulated cluster: the annotation rule that an annotated cluster is one you can see.

Why: real ground truth (CBIS-DDSM, a hospital's biopsy-proven cases) holds the clusters a radiologist saw and
outlined; a cluster whose calcifications are no brighter than the breast's own texture is never in it. The simulator
draws contrast from physics (size, density, attenuation, the background's characteristic curve), so a small share of
its clusters, almost all amorphous, come out at texture level: not one of them stands out of its breast to a blob
detector (``training.simulate.cluster_visibility``; ``docs/experiments/default-bundle-record.md``, section "The reader's
annotation rule"), and every detector
trained here missed every one. Annotating them made the simulated truth hold findings no reader would have marked.
With this rule a cluster is annotated (inserted at all) only when at least ``min_visible`` of its calcifications show
as bright blobs of at least ``Z_VISIBLE`` texture spreads; a cluster that does not is drawn again (same pattern, so
the mix of morphologies stays as drawn) and placed again. The physics of each calcification is unchanged: the rule
selects which draws a reader would have annotated, as annotation does.

The measure is the one ``training.simulate.cluster_visibility`` reports: a scale-normalised Laplacian of Gaussian at
calcification scales (``SIGMAS_MM``: 0.1 and 0.15 mm, bright blobs of 0.2-0.3 mm), never finer than
``MIN_SIGMA_PX`` pixels, standardised by its median and MAD-sigma over the breast's texture (``texture_spread``).
The floor matters on coarse films: at 0.2 mm the two scales are half a pixel and less, where the filter measures
pixel noise rather than blobs and a calcification as large as a pixel never reaches the level; no image shows a
speck finer than its own sampling, so no reader's eye and no filter should look for one there. At 0.05-0.14 mm the
floor changes nothing. A calcification is visible when the filter's response to
its own noise-free signal reaches ``Z_VISIBLE`` spreads at a local maximum (``PEAK_WINDOW_MM`` square): on an
ordinary patch of texture it then reaches the level only the texture's brightest specks reach. Calcifications
closer than the window count as one speck, as a reader would count them.

The constants are those of ``cluster_visibility`` and of the three-calcification rule
(``training.simulate.morphology.MIN_CLUSTER_CALCIFICATIONS``), chosen before this rule was measured on any detector.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from training.simulate.morphology import MIN_CLUSTER_CALCIFICATIONS, SimulationError

#: the fewest calcifications of an annotated cluster a reader must see: a cluster's own minimum
#: (``MIN_CLUSTER_CALCIFICATIONS``), so a cluster is three calcifications you can see. 0: no visibility rule, the
#: sets made before it (every set up to the candidate 0.5.0)
MIN_VISIBLE_CALCIFICATIONS = MIN_CLUSTER_CALCIFICATIONS
#: Gaussian scales (mm) of the blob filter: calcifications of 0.1-0.4 mm
SIGMAS_MM: tuple[float, ...] = (0.1, 0.15)
#: the finest filter scale in pixels, whatever the pitch: a speck cannot be sharper than the sampling that shows it
MIN_SIGMA_PX = 0.7
#: a visible calcification's response, in texture spreads (MAD-sigma of the filter over the breast)
Z_VISIBLE = 4.0
#: local maxima are taken over this square (mm): specks closer than this are one
PEAK_WINDOW_MM = 0.5
#: the breast's border band left out of the texture (mm): the skin line is an edge, not texture
BORDER_MM = 1.0


def check_min_visible(min_visible: int) -> int:
    """``min_visible`` as a whole number, refused below 0 (a set refuses it before drawing anything)."""
    if min_visible < 0:
        raise SimulationError(f"the fewest visible calcifications must be 0 (no rule) or more, got {min_visible}")
    return int(min_visible)


def filter_sigmas_px(spacing_mm: float) -> list[float]:
    """The blob filter's Gaussian scales in pixels at ``spacing_mm``: ``SIGMAS_MM`` in pixels, none below
    ``MIN_SIGMA_PX``."""
    return [max(s / spacing_mm, MIN_SIGMA_PX) for s in SIGMAS_MM]


def blob_response(pixels: np.ndarray, spacing_mm: float) -> np.ndarray:
    """The bright-blob filter (scale-normalised negative Laplacian of Gaussian, the larger over
    :func:`filter_sigmas_px`)."""
    image = np.asarray(pixels, np.float32)
    sigmas = filter_sigmas_px(spacing_mm)
    return np.max([-ndimage.gaussian_laplace(image, s) * s * s for s in sigmas], axis=0)


def texture_statistics(response: np.ndarray, texture: np.ndarray) -> tuple[float, float]:
    """Median and MAD-sigma of a blob ``response`` over the ``texture`` pixels (a boolean mask of its shape)."""
    values = response[texture]
    if values.size == 0:
        raise ValueError("no texture pixels to measure the blob response against")
    median = float(np.median(values))
    return median, 1.4826 * float(np.median(np.abs(values - median)))


def texture_mask(breast: np.ndarray, spacing_mm: float) -> np.ndarray:
    """The breast without its ``BORDER_MM`` border band: where the texture is measured."""
    return ndimage.binary_erosion(breast, iterations=max(1, round(BORDER_MM / spacing_mm)))


def texture_spread(pixels: np.ndarray, breast: np.ndarray, spacing_mm: float) -> float:
    """The spread (MAD-sigma) of the blob filter over the breast of a lesion-free background, its border left out:
    the unit a calcification's visibility is measured in."""
    _, spread = texture_statistics(blob_response(pixels, spacing_mm), texture_mask(breast, spacing_mm))
    return spread


def peak_window_px(spacing_mm: float) -> int:
    """``PEAK_WINDOW_MM`` in whole pixels, odd, at least 3."""
    size = max(3, round(PEAK_WINDOW_MM / spacing_mm))
    return size if size % 2 else size + 1


def visible_calcifications(signal: np.ndarray, spacing_mm: float, spread: float,
                           z_visible: float = Z_VISIBLE) -> int:
    """How many specks of a cluster's noise-free added ``signal`` (display units, the patch the inserter adds) reach
    ``z_visible`` texture ``spread``s: the calcifications a reader would count."""
    if spread <= 0:
        raise ValueError(f"texture spread must be positive, got {spread}")
    response = blob_response(np.pad(np.asarray(signal, np.float32), peak_window_px(spacing_mm)), spacing_mm)
    peaks = (response == ndimage.maximum_filter(response, size=peak_window_px(spacing_mm))) & (
        response >= z_visible * spread)
    return int(peaks.sum())
