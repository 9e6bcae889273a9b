"""Look-alikes that are not findings: unannotated bright structures inserted beside the clusters.

Why: a detector trained only on clusters in a few backgrounds learns "bright dots = lesion". On real mammograms it then
fires on what every breast shows and no radiologist reports as a calcification cluster. Measured on the shipped
0.3.0 detector: on simulated whole images over real backgrounds, 39 of the 49 false positives that set the
1-false-positive-per-image operating point sat on a few real structures repeated across images (a lone round
calcification, skin-marker-like discs at the skin line), scored 0.96-0.99. Showing the model such structures
*without* a box teaches it what a cluster is not.

Kinds (drawn with the same physics as the clusters, ``training.simulate.insert.insert_clusters``, so their contrast
follows attenuation, blur and noise exactly as a calcification's would):

=============  ====================================================================================================
``solitary``   one benign calcification, round or popcorn-like, 0.5-2.5 mm: BI-RADS counts a cluster from several
               calcifications within 1 cm; a single one is not a cluster finding
``vascular``   vascular calcification: two parallel interrupted tracks ("rail track", 1-2 mm apart) of thin
               segments along a gently curving vessel, 10-35 mm long; BI-RADS lists it as typically benign
``marker``     a skin marker (metal BB, 1.5-3 mm, very dense) placed on the skin line, as digitised film and
               screening sites show them
=============  ====================================================================================================

Distractors never overlap a cluster's box, and are recorded in ``simulated.json`` (``distractors``) but never in
the annotations: a box on one is a false positive.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from training.simulate.background import breast_mask
from training.simulate.insert import PSF_SIGMA_MM, InsertedLesion, insert_clusters
from training.simulate.morphology import Calcification, Cluster, Ellipsoid, SimulationError

DISTRACTOR_KINDS: tuple[str, ...] = ("solitary", "vascular", "marker")
#: share of each kind when drawn at random
KIND_WEIGHTS: tuple[float, ...] = (0.45, 0.35, 0.2)
#: keep-out margin around cluster boxes (mm): a look-alike touching a cluster would sit unlabelled inside its box
CLUSTER_CLEARANCE_MM = 3.0
#: width of the skin band where markers go (mm inside the skin line)
SKIN_BAND_MM = 4.0
#: relative density of a metal marker (lead or steel attenuates far more than calcium hydroxyapatite)
MARKER_DENSITY = 2.0


def _solitary(rng: np.random.Generator) -> Calcification:
    d = rng.uniform(0.5, 2.5)
    density = float(rng.uniform(0.8, 1.0))
    if rng.random() < 0.6:
        a = d / 2
        b = a * rng.uniform(0.8, 1.0)
        return Calcification((Ellipsoid(0.0, 0.0, a, b, min(a, b) * rng.uniform(0.8, 1.2),
                                        rng.uniform(0, math.pi)),), "solid", density)
    parts = []
    for _ in range(int(rng.integers(3, 6))):  # popcorn: lobes around the centre
        r = d * rng.uniform(0.2, 0.3)
        off, phi = rng.uniform(0, d / 2 - r), rng.uniform(0, 2 * math.pi)
        parts.append(Ellipsoid(off * math.cos(phi), off * math.sin(phi), r, r * rng.uniform(0.7, 1.0),
                               r * rng.uniform(0.8, 1.2), rng.uniform(0, math.pi)))
    return Calcification(tuple(parts), "solid", density)


def _vascular(rng: np.random.Generator) -> tuple[Calcification, ...]:
    length = rng.uniform(10.0, 35.0)
    gap = rng.uniform(1.0, 2.0)  # vessel diameter: the two walls project as two tracks
    bend = rng.uniform(-0.04, 0.04)  # curvature (1/mm)
    density = float(rng.uniform(0.6, 1.0))
    calcs = []
    s = -length / 2
    while s < length / 2:
        seg = rng.uniform(0.8, 3.0)
        for side in (-1.0, 1.0):
            if rng.random() < 0.25:  # interrupted: wall calcification is patchy
                continue
            mid = s + seg / 2
            heading = bend * mid
            x = mid * math.cos(heading) - side * gap / 2 * math.sin(heading)
            y = bend * mid * mid / 2 + side * gap / 2 * math.cos(heading)
            w = rng.uniform(0.1, 0.25)
            calcs.append(Calcification((Ellipsoid(x, y, seg / 2, w, w * rng.uniform(0.8, 1.2), heading),),
                                       "solid", density))
        s += seg + rng.uniform(0.2, 1.5)
    return tuple(calcs)


def _marker(rng: np.random.Generator) -> Calcification:
    a = rng.uniform(0.75, 1.5)
    return Calcification((Ellipsoid(0.0, 0.0, a, a, a, 0.0),), "solid", MARKER_DENSITY)


def draw_distractor(rng: np.random.Generator, kind: str, spacing_mm: float) -> Cluster:
    """One look-alike as a ``Cluster`` (so that the cluster renderer draws it); its pattern is the kind."""
    if kind == "solitary":
        calcs: tuple[Calcification, ...] = (_solitary(rng),)
    elif kind == "vascular":
        calcs = _vascular(rng)
        if not calcs:
            calcs = (_solitary(rng),)
    elif kind == "marker":
        calcs = (_marker(rng),)
    else:
        raise SimulationError(f"unknown distractor kind {kind!r}; known: {', '.join(DISTRACTOR_KINDS)}")
    return Cluster(kind, kind, "benign", calcs, float(rng.uniform(0.8, 1.6)), float(spacing_mm))


def _keep_out(mask: np.ndarray, boxes: Sequence[Sequence[float]], margin_px: float) -> np.ndarray:
    out = mask.copy()
    h, w = mask.shape
    for x0, y0, x1, y1 in boxes:
        r0, c0 = max(int(y0 - margin_px), 0), max(int(x0 - margin_px), 0)
        r1, c1 = min(int(math.ceil(y1 + margin_px)), h), min(int(math.ceil(x1 + margin_px)), w)
        out[r0:r1, c0:c1] = False
    return out


def skin_band(image: np.ndarray, spacing_mm: float, view: str | None, laterality: str | None) -> np.ndarray:
    """The breast's outer ``SKIN_BAND_MM`` (inside the skin line; the chest-wall edge is not skin)."""
    tissue = breast_mask(image, spacing_mm, view=view, laterality=laterality, margin_mm=0.0)
    return tissue & ~breast_mask(image, spacing_mm, view=view, laterality=laterality, margin_mm=SKIN_BAND_MM)


def insert_distractors(image: np.ndarray, spacing_mm: float, count: int, rng: np.random.Generator,
                       breast: np.ndarray, skin: np.ndarray, clusters: Sequence[InsertedLesion], *,
                       psf_sigma_mm: float = PSF_SIGMA_MM, linear_response: bool = False,
                       ) -> tuple[np.ndarray, list[InsertedLesion]]:
    """Insert ``count`` look-alikes of random kinds into ``image``: solitary and vascular ones inside ``breast``
    (the inserter's mask), markers in ``skin`` (:func:`skin_band`), all clear of the ``clusters`` boxes. Returns
    the new image and what was placed (not annotations). ``psf_sigma_mm``, ``linear_response``: an image-formation
    stage's, passed to ``insert_clusters`` as the clusters got them."""
    if count <= 0:
        return image, []
    margin = CLUSTER_CLEARANCE_MM / spacing_mm
    boxes = [les.box for les in clusters]
    inner = _keep_out(breast, boxes, margin)
    skin = _keep_out(skin, boxes, margin)
    placed: list[InsertedLesion] = []
    for _ in range(count):
        kind = str(rng.choice(DISTRACTOR_KINDS, p=KIND_WEIGHTS))
        distractor = draw_distractor(rng, kind, spacing_mm)
        where = skin if kind == "marker" else inner
        image, done = insert_clusters(image, spacing_mm, [distractor], rng,
                                      _keep_out(where, [p.box for p in placed], margin),
                                      psf_sigma_mm=psf_sigma_mm, linear_response=linear_response)
        placed += done
    return image, placed
