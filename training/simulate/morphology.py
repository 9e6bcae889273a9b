"""Microcalcification clusters in physical units, drawn from the BI-RADS lexicon (ACR BI-RADS Atlas, 5th ed., 2013).

A cluster is a list of calcifications around the cluster centre, each the union of a few ellipsoids (millimetres,
in the image plane, plus a semi-axis along the X-ray beam that sets the projected thickness). Nothing here knows
about pixels: :mod:`training.simulate.insert` renders a cluster at whatever spacing an image has.

Morphology (the ``pattern``) decides shape, size and number of the calcifications; the distribution decides how
they are spread. Sizes are diameters (longest dimension) within the 0.1-2 mm range of microcalcifications; the atlas
values they follow:

=====================  ==========  ========================  =========  ====================================
pattern                label       size (mm)                 count      shape
=====================  ==========  ========================  =========  ====================================
punctate               benign      0.1-0.5                   3-12       round, smooth
round                  benign      0.5-1.0                   3-10       round, smooth
coarse                 benign      1.0-2.0                   3-4 (*)    lobulated "popcorn" (3-6 lobes)
rim                    benign      1.0-2.0 (wall 0.1-0.2)    3-4 (*)    thin shell, lucent centre
milk_of_calcium        benign      0.5-1.5                   4-12       sediment in microcysts: flat-topped
diffuse                benign      0.2-1.0                   12-30      round, scattered widely
amorphous              malignant   0.1-0.4                   8-25       faint, hazy, low density
coarse_heterogeneous   malignant   0.5-1.0                   5-16       irregular, 2-3 conglomerated blobs
fine_pleomorphic       malignant   0.1-0.5                   10-35      varied shapes and sizes, elongated
fine_linear_branching  malignant   width 0.1-0.3, 0.5-2 long 8-30       thin rods, branching, along a duct
=====================  ==========  ========================  =========  ====================================

(*) 1-4 with ``min_calcifications=1``, the rule of the sets made up to detector 0.4.0: see
``MIN_CLUSTER_CALCIFICATIONS``.

Distributions: ``grouped`` (within about 1 cm), ``linear`` (along one duct, 10-25 mm), ``segmental`` (a duct and
its branches, a wedge 15-30 mm pointing to the nipple), ``scattered`` (randomly over 8-20 mm, benign groups) and
``diffuse`` (randomly over 25-40 mm). Linear and segmental clusters are laid along +x; the inserter turns +x
towards the nipple, since ducts run from the nipple into the breast.

Label as a proxy for pathology: benign morphologies give a ``benign`` cluster, suspicious ones a ``malignant``
cluster. This is the BI-RADS category proxy (typically benign morphology: category 2; suspicious morphology:
category 4B/4C), not pathology: in reality about 13-30 % of amorphous and 30-40 % of coarse heterogeneous clusters
are malignant and fine linear branching about 70-80 % (Bent et al., AJR 2010; Rominger et al., Radiology 2016). A
model trained on these labels learns "suspicious-looking versus benign-looking"; pathology-level accuracy can only be
measured on biopsy-proven real cases.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

LesionLabel = Literal["benign", "malignant"]
Shape = Literal["solid", "rim", "meniscus"]

BENIGN_PATTERNS: tuple[str, ...] = ("punctate", "round", "coarse", "rim", "milk_of_calcium", "diffuse")
MALIGNANT_PATTERNS: tuple[str, ...] = ("amorphous", "coarse_heterogeneous", "fine_pleomorphic", "fine_linear_branching")
PATTERNS: tuple[str, ...] = BENIGN_PATTERNS + MALIGNANT_PATTERNS
DISTRIBUTIONS: tuple[str, ...] = ("grouped", "linear", "segmental", "scattered", "diffuse")

#: Which distributions each morphology is drawn with (first listed is the most common).
PATTERN_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "punctate": ("grouped", "scattered"),
    "round": ("scattered", "grouped"),
    "coarse": ("scattered", "grouped"),
    "rim": ("scattered",),
    "milk_of_calcium": ("grouped", "scattered"),
    "diffuse": ("diffuse",),
    "amorphous": ("grouped", "segmental"),
    "coarse_heterogeneous": ("grouped", "linear"),
    "fine_pleomorphic": ("grouped", "linear", "segmental"),
    "fine_linear_branching": ("linear", "segmental", "grouped"),
}

#: The BI-RADS words for each pattern and distribution name (reports and the dataset manifest use them).
BIRADS_MORPHOLOGY: dict[str, str] = {
    "punctate": "punctate", "round": "round", "coarse": "coarse or popcorn-like", "rim": "rim",
    "milk_of_calcium": "milk of calcium", "diffuse": "round (diffuse)", "amorphous": "amorphous",
    "coarse_heterogeneous": "coarse heterogeneous", "fine_pleomorphic": "fine pleomorphic",
    "fine_linear_branching": "fine linear or fine-linear branching",
}
BIRADS_DISTRIBUTION: dict[str, str] = {
    "grouped": "grouped", "linear": "linear", "segmental": "segmental", "scattered": "regional",
    "diffuse": "diffuse",
}

MIN_SIZE_MM, MAX_SIZE_MM = 0.1, 2.0
SPACING_RANGE_MM = (0.025, 0.5)


class SimulationError(ValueError):
    """An unknown pattern or distribution, or a pixel spacing outside what the simulator models."""


@dataclass(frozen=True)
class Ellipsoid:
    """One ellipsoid part of a calcification: centre (mm, relative to the cluster centre, x right, y down),
    in-plane semi-axes ``a`` (along ``angle``) and ``b``, semi-axis ``c`` along the beam (projected thickness 2c)."""

    x: float
    y: float
    a: float
    b: float
    c: float
    angle: float

    def outline(self, n: int = 16) -> np.ndarray:
        """(n, 2) points on the in-plane outline, for sizes and extents."""
        t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        u, v = self.a * np.cos(t), self.b * np.sin(t)
        return np.stack([self.x + u * ca - v * sa, self.y + u * sa + v * ca], axis=1)


@dataclass(frozen=True)
class Calcification:
    """One calcification: the union of its parts, a shape rule and a density relative to solid calcium
    hydroxyapatite (1.0). ``rim`` shells have ``wall`` mm walls; ``meniscus`` is the lower half of a cyst filled
    with sediment (flat top, as milk of calcium looks on the lateral and MLO views)."""

    parts: tuple[Ellipsoid, ...]
    shape: Shape = "solid"
    density: float = 1.0
    wall: float = 0.0

    def outline(self) -> np.ndarray:
        return np.concatenate([p.outline() for p in self.parts])

    @property
    def size_mm(self) -> float:
        """Longest dimension (maximum Feret diameter of the in-plane outline)."""
        pts = self.outline()
        d = pts[:, None, :] - pts[None, :, :]
        return float(np.sqrt((d**2).sum(-1)).max())

    @property
    def width_mm(self) -> float:
        """Extent across the longest dimension (the thinnest in-plane direction of a rod)."""
        pts = self.outline()
        d = pts[:, None, :] - pts[None, :, :]
        i, j = np.unravel_index(np.argmax((d**2).sum(-1)), d.shape[:2])
        axis = (pts[j] - pts[i]) / max(float(np.linalg.norm(pts[j] - pts[i])), 1e-9)
        normal = np.array([-axis[1], axis[0]])
        across = pts @ normal
        return float(across.max() - across.min())

    @property
    def elongation(self) -> float:
        return self.size_mm / max(self.width_mm, 1e-9)

    @property
    def centre(self) -> np.ndarray:
        return self.outline().mean(axis=0)


@dataclass(frozen=True)
class Cluster:
    """A simulated cluster in millimetres around its centre, with its label and BI-RADS description.

    ``delta_mu_per_mm`` is the linear attenuation difference between the calcification material (density 1.0) and
    the surrounding tissue at the beam's effective energy; ``spacing_mm`` the pixel spacing it was drawn for.
    """

    pattern: str
    distribution: str
    label: LesionLabel
    calcifications: tuple[Calcification, ...]
    delta_mu_per_mm: float
    spacing_mm: float

    @property
    def birads_terms(self) -> tuple[str, str]:
        return (BIRADS_MORPHOLOGY[self.pattern], BIRADS_DISTRIBUTION[self.distribution])

    def extent_mm(self) -> tuple[float, float, float, float]:
        """x0, y0, x1, y1 of every calcification's outline (relative to the cluster centre)."""
        pts = np.concatenate([c.outline() for c in self.calcifications])
        return (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))

    def rotated(self, theta: float) -> "Cluster":
        """The cluster turned by ``theta`` radians about its centre; meniscus parts keep their flat top level,
        since sediment settles with gravity whatever the cluster's orientation."""
        ct, st = math.cos(theta), math.sin(theta)
        calcs = []
        for calc in self.calcifications:
            turn = 0.0 if calc.shape == "meniscus" else theta
            parts = tuple(replace(p, x=p.x * ct - p.y * st, y=p.x * st + p.y * ct, angle=p.angle + turn)
                          for p in calc.parts)
            calcs.append(replace(calc, parts=parts))
        return replace(self, calcifications=tuple(calcs))


def label_of(pattern: str) -> LesionLabel:
    """The benign / malignant proxy label of a morphology (see the module docstring)."""
    if pattern in BENIGN_PATTERNS:
        return "benign"
    if pattern in MALIGNANT_PATTERNS:
        return "malignant"
    raise SimulationError(f"unknown calcification pattern {pattern!r}; known: {', '.join(PATTERNS)}")


# ------------------------------------------------------------------------------------------------ positions
def _positions(rng: np.random.Generator, distribution: str, n: int) -> np.ndarray:
    """(n, 2) centres in mm for a distribution; linear and segmental run along +x (towards the nipple)."""
    if distribution == "grouped":
        radius = rng.uniform(2.5, 5.0)
        pts = rng.normal(0.0, radius / 2.0, size=(n, 2))
        return np.clip(pts, -radius, radius)
    if distribution == "scattered":
        half = rng.uniform(4.0, 10.0)
        return rng.uniform(-half, half, size=(n, 2)) * np.array([1.0, rng.uniform(0.6, 1.0)])
    if distribution == "diffuse":
        half = rng.uniform(12.5, 20.0)
        return rng.uniform(-half, half, size=(n, 2)) * np.array([1.0, rng.uniform(0.6, 1.0)])
    if distribution == "linear":
        length = rng.uniform(10.0, 25.0)
        x = np.sort(rng.uniform(-length / 2, length / 2, size=n))
        bend = rng.uniform(-0.04, 0.04)  # a duct is not perfectly straight
        y = bend * x**2 + rng.normal(0.0, 0.25, size=n)
        return np.stack([x, y], axis=1)
    if distribution == "segmental":
        length = rng.uniform(15.0, 30.0)
        spread = rng.uniform(0.25, 0.45)  # half-angle of the wedge, radians
        branches = rng.uniform(-spread, spread, size=int(rng.integers(2, 5)))
        which = rng.integers(0, len(branches), size=n)
        r = rng.uniform(0.0, length, size=n)
        angle = branches[which] + rng.normal(0.0, 0.03, size=n)
        # the wedge's apex points to the nipple (+x): branches fan out away from it
        return np.stack([length / 2 - r * np.cos(angle), r * np.sin(angle)], axis=1)
    raise SimulationError(f"unknown distribution {distribution!r}; known: {', '.join(DISTRIBUTIONS)}")


# ------------------------------------------------------------------------------------------------- shapes
def _thickness(rng: np.random.Generator, a: float, b: float) -> float:
    """Semi-axis along the beam: compact particles are about as deep as they are wide."""
    return float(min(a, b) * rng.uniform(0.8, 1.2))


def _round(rng: np.random.Generator, x: float, y: float, size: tuple[float, float], density: float) -> Calcification:
    d = rng.uniform(*size)
    a = d / 2
    b = a * rng.uniform(0.85, 1.0)
    return Calcification((Ellipsoid(x, y, a, b, _thickness(rng, a, b), rng.uniform(0, math.pi)),), "solid", density)


def _lobulated(rng: np.random.Generator, x: float, y: float, size: tuple[float, float], lobes: tuple[int, int],
               density: float) -> Calcification:
    """Several overlapping blobs within a ``size`` diameter: popcorn (benign coarse) or heterogeneous conglomerates."""
    d = rng.uniform(*size)
    n = int(rng.integers(lobes[0], lobes[1] + 1))
    parts = []
    for _ in range(n):
        r = d * rng.uniform(0.22, 0.32)
        off = rng.uniform(0, d / 2 - r) if d / 2 > r else 0.0
        phi = rng.uniform(0, 2 * math.pi)
        b = r * rng.uniform(0.6, 1.0)
        parts.append(Ellipsoid(x + off * math.cos(phi), y + off * math.sin(phi), r, b, _thickness(rng, r, b),
                               rng.uniform(0, math.pi)))
    return Calcification(tuple(parts), "solid", density)


def _pleomorphic(rng: np.random.Generator, x: float, y: float) -> Calcification:
    d = rng.uniform(0.1, 0.5)
    kind = rng.choice(["dot", "oval", "dash", "angular"], p=[0.3, 0.3, 0.25, 0.15])
    if kind == "dot":
        a, b = d / 2, d / 2 * rng.uniform(0.8, 1.0)
        parts = (Ellipsoid(x, y, a, b, _thickness(rng, a, b), 0.0),)
    elif kind == "oval":
        a, b = d / 2, d / 2 * rng.uniform(0.45, 0.75)
        parts = (Ellipsoid(x, y, a, b, _thickness(rng, a, b), rng.uniform(0, math.pi)),)
    elif kind == "dash":
        a, b = d / 2, max(d / 2 * rng.uniform(0.2, 0.35), 0.04)
        parts = (Ellipsoid(x, y, a, b, _thickness(rng, a, b), rng.uniform(0, math.pi)),)
    else:  # angular: two small blobs at an angle, a "casting" fragment (at least 0.15 mm so it stays >= 0.1 mm)
        a = max(d, 0.15) / 4
        phi = rng.uniform(0, math.pi)
        parts = tuple(
            Ellipsoid(x + s * a * math.cos(phi + k), y + s * a * math.sin(phi + k), a, a * 0.6, a * 0.7, phi + k)
            for s, k in ((1.0, 0.0), (-1.0, rng.uniform(0.6, 1.2)))
        )
    return Calcification(parts, "solid", float(rng.uniform(0.7, 1.0)))


def _linear_branching(rng: np.random.Generator, x: float, y: float, axis: float) -> Calcification:
    """A thin rod (casting of a duct lumen) 0.5-2 mm long, 0.1-0.3 mm wide, sometimes with a branch (Y shape)."""
    width = rng.uniform(0.1, 0.3)
    total = rng.uniform(0.5, 2.0)  # the whole particle, branch included, stays within 2 mm
    branching = rng.random() < 0.45
    length = total * rng.uniform(0.55, 0.7) if branching else total
    angle = axis + rng.normal(0.0, 0.3)
    b = width / 2
    parts = [Ellipsoid(x, y, length / 2, b, b * rng.uniform(0.8, 1.2), angle)]
    if branching:
        branch_len = total - length
        turn = angle + rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 0.9)
        tip_x, tip_y = x + math.cos(angle) * length / 2, y + math.sin(angle) * length / 2
        parts.append(Ellipsoid(tip_x + math.cos(turn) * branch_len / 2, tip_y + math.sin(turn) * branch_len / 2,
                               branch_len / 2, b * 0.9, b * 0.9, turn))
    return Calcification(tuple(parts), "solid", float(rng.uniform(0.8, 1.0)))


def _calcification(rng: np.random.Generator, pattern: str, x: float, y: float, axis: float) -> Calcification:
    if pattern == "punctate":
        return _round(rng, x, y, (0.1, 0.5), float(rng.uniform(0.8, 1.0)))
    if pattern == "round":
        return _round(rng, x, y, (0.5, 1.0), float(rng.uniform(0.8, 1.0)))
    if pattern == "diffuse":
        return _round(rng, x, y, (0.2, 1.0), float(rng.uniform(0.7, 1.0)))
    if pattern == "coarse":
        return _lobulated(rng, x, y, (1.0, 2.0), (3, 6), float(rng.uniform(0.9, 1.0)))
    if pattern == "rim":
        d = rng.uniform(1.0, 2.0)
        a = d / 2
        b = a * rng.uniform(0.85, 1.0)
        wall = float(rng.uniform(0.1, 0.2))
        return Calcification((Ellipsoid(x, y, a, b, b, rng.uniform(0, math.pi)),), "rim", 1.0, wall)
    if pattern == "milk_of_calcium":
        d = rng.uniform(0.5, 1.5)
        a = d / 2
        # sediment in a cyst: calcium carbonate slurry, less dense than solid hydroxyapatite
        return Calcification((Ellipsoid(x, y, a, a * rng.uniform(0.9, 1.0), a, 0.0),), "meniscus",
                             float(rng.uniform(0.25, 0.4)))
    if pattern == "amorphous":
        d = rng.uniform(0.1, 0.4)
        a = d / 2
        b = a * rng.uniform(0.6, 1.0)
        # hazy: thin along the beam and of low density (BI-RADS: "so small and/or hazy ... that a more specific
        # particle shape cannot be determined")
        return Calcification((Ellipsoid(x, y, a, b, b * rng.uniform(0.6, 0.9), rng.uniform(0, math.pi)),), "solid",
                             float(rng.uniform(0.45, 0.7)))
    if pattern == "coarse_heterogeneous":
        return _lobulated(rng, x, y, (0.5, 1.0), (2, 3), float(rng.uniform(0.8, 1.0)))
    if pattern == "fine_pleomorphic":
        return _pleomorphic(rng, x, y)
    if pattern == "fine_linear_branching":
        return _linear_branching(rng, x, y, axis)
    raise SimulationError(f"unknown calcification pattern {pattern!r}; known: {', '.join(PATTERNS)}")


COUNTS: dict[str, tuple[int, int]] = {
    "punctate": (3, 12), "round": (3, 10), "coarse": (1, 4), "rim": (1, 4), "milk_of_calcium": (4, 12),
    "diffuse": (12, 30), "amorphous": (8, 25), "coarse_heterogeneous": (5, 16), "fine_pleomorphic": (10, 35),
    "fine_linear_branching": (8, 30),
}
#: The fewest calcifications an annotated cluster holds. A cluster is several calcifications within about 1 cm (here:
#: three or more); a lone calcification, however coarse, is a benign finding that a calcification CAD does not box,
#: and the unannotated ``solitary`` look-alike (``training.simulate.distractors``) teaches exactly that. With 1,
#: ``coarse`` and ``rim`` clusters could be a single calcification, annotated, so the training data labelled a lone
#: popcorn calcification both ways: the rule of every set made for detectors up to 0.4.0 (``--min-calcifications 1``
#: makes those sets again, file for file).
MIN_CLUSTER_CALCIFICATIONS = 3


def check_min_calcifications(min_calcifications: int) -> int:
    """``min_calcifications`` as a whole number, refused below 1 (a set refuses it before drawing anything)."""
    if min_calcifications < 1:
        raise SimulationError(f"a cluster needs at least 1 calcification, got {min_calcifications}")
    return int(min_calcifications)


def calcification_count_range(pattern: str, min_calcifications: int = MIN_CLUSTER_CALCIFICATIONS) -> tuple[int, int]:
    """The inclusive range a ``pattern`` cluster's calcification count is drawn from, none below
    ``min_calcifications`` (patterns that already start above it keep their range, and so their draws)."""
    lo, hi = COUNTS[pattern]
    lo = max(lo, check_min_calcifications(min_calcifications))
    return lo, max(hi, lo)


def simulate_cluster(rng: np.random.Generator, pattern: str, spacing_mm: float, *,
                     distribution: str | None = None,
                     min_calcifications: int = MIN_CLUSTER_CALCIFICATIONS) -> Cluster:
    """Draw one cluster of ``pattern`` (a BI-RADS morphology, see ``PATTERNS``) in millimetres.

    ``distribution`` defaults to one drawn from the pattern's usual distributions. ``spacing_mm`` is the pixel
    spacing of the image the cluster is meant for: the morphology is resolution independent, but it is checked
    (0.025-0.5 mm) and recorded so that the rendered box and the dataset manifest can state it.
    """
    label = label_of(pattern)
    if not SPACING_RANGE_MM[0] <= spacing_mm <= SPACING_RANGE_MM[1]:
        raise SimulationError(f"pixel spacing {spacing_mm} mm is outside the simulated range "
                              f"{SPACING_RANGE_MM[0]}-{SPACING_RANGE_MM[1]} mm")
    allowed = PATTERN_DISTRIBUTIONS[pattern]
    if distribution is None:
        distribution = str(allowed[0] if len(allowed) == 1 else rng.choice(allowed))
    elif distribution not in DISTRIBUTIONS:
        raise SimulationError(f"unknown distribution {distribution!r}; known: {', '.join(DISTRIBUTIONS)}")
    lo, hi = calcification_count_range(pattern, min_calcifications)
    n = int(rng.integers(lo, hi + 1))
    centres = _positions(rng, distribution, n)
    # along a duct (linear, segmental) rods align with it; in a group they point anywhere
    ductal = distribution in ("linear", "segmental")
    calcs = []
    for k, (x, y) in enumerate(centres):
        if ductal and 0 < k < n - 1:
            axis = math.atan2(centres[k + 1, 1] - centres[k - 1, 1], centres[k + 1, 0] - centres[k - 1, 0])
        else:
            axis = 0.0 if ductal else float(rng.uniform(0, math.pi))
        calcs.append(_calcification(rng, pattern, float(x), float(y), axis))
    # attenuation difference of calcium hydroxyapatite over fibroglandular tissue at an effective 18-20 keV,
    # lowered for the beam hardening of real spectra (Johns & Yaffe, Phys. Med. Biol. 1987; Hubbell tables)
    delta_mu = float(rng.uniform(0.8, 1.6))
    return Cluster(pattern, distribution, label, tuple(calcs), delta_mu, float(spacing_mm))
