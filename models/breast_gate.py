"""The breast gate: detector boxes whose centre lies outside the breast are dropped.

Why: a detector run tile by tile on whole images (``models.tiling``) also sees what lies outside the breast on
digitised film (skin markers, film labels, background) and fires there (how often: the default bundle's record in
``docs/experiments/``). A calcification is always in breast tissue, so a box centred outside it is never a finding.

How (:meth:`BreastGate.apply`), on the standardised detector input (chest wall on the left, values in [0, 1]):

1. the breast is :func:`models.breast_mask.breast_mask` with no pectoral cut (``view=None``: calcifications can
   project over the muscle and the axilla on real images), laterality ``"L"`` (the standardised image already has
   its chest wall on the left, so a tie in ``models.preprocess.chest_wall_on_left`` never flips it) and no erosion;
   it works on cells of about 1 mm, so it costs a small fraction of detection. Standardisation cuts the image at the
   nipple, so the rows across the breast's widest part are bright from edge to edge, and ``breast_mask`` (through
   ``models.preprocess.border_rows``) would take them for a film border and cut the breast in two. The mask is
   therefore computed on the image with background added beyond the nipple (:func:`standardised_breast_mask`),
   after blanking the edge-to-edge bright rows that run along the top or bottom edge: those are the film borders
   that ``breast_mask`` leaves out of the original image, and added background would let them into the breast;
2. ``margin_mm`` grows it: a box is kept when its centre lies within ``margin_mm`` of a breast pixel, so boxes just
   beyond the skin line survive (0: the mask itself);
3. an empty mask (an all-background image, a mask failure) keeps every box: the gate never drops everything because
   the mask found nothing; kept boxes keep their order, labels and scores.

A detector bundle turns the gate on with ``input_spec["breast_gate"] = {"margin_mm": ...}`` in its manifest; without
the key (older bundles) there is no gate. ``models.detect`` applies it after detection, whole-image or tiled, for the
pipeline, evaluation and validation alike, before the cross-class suppression.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from models.breast_mask import _coarse_factor, breast_mask
from models.detector import Detections
from models.preprocess import StandardiseConfig, border_rows

#: background cells added beyond the nipple, as a share of the image width (at least one cell): a row bright from
#: edge to edge then covers at most 10 / 11 of the mask's cells, below ``models.preprocess.BORDER_ROW_FRACTION``
PAD_FRACTION = 0.1
#: the tolerance ``breast_mask`` gives ``border_rows``
BORDER_TOLERANCE = 0.01


@dataclass(frozen=True)
class BreastGate:
    """Keep the boxes centred in the breast or within ``margin_mm`` of it (module docstring)."""

    margin_mm: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.margin_mm) and self.margin_mm >= 0):
            raise ValueError(f"breast gate margin_mm must be a finite number of millimetres >= 0, "
                             f"got {self.margin_mm}")

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None) -> "BreastGate | None":
        """The gate of a manifest's ``input_spec["breast_gate"]`` (keys this version does not know are ignored), or
        None when the spec is absent: no gate."""
        if spec is None:
            return None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(spec).items() if k in known})

    def to_spec(self) -> dict[str, float]:
        """What a manifest's ``input_spec["breast_gate"]`` holds for this gate."""
        return asdict(self)

    def keep(self, boxes: np.ndarray, image: np.ndarray, spacing_mm: float) -> np.ndarray:
        """Indices of the ``boxes`` (N x 4, x0 y0 x1 y1 in ``image`` pixels) that pass the gate, in their order."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        pixels = np.asarray(image)
        if pixels.ndim != 2:
            raise ValueError(f"the breast gate expects the 2-D standardised image, got shape {pixels.shape}")
        everything = np.arange(len(b))
        if len(b) == 0 or pixels.shape[0] < _coarse_factor(spacing_mm):
            return everything  # no box, or an image less than one mask cell high: nothing to decide on
        mask = standardised_breast_mask(pixels, spacing_mm)
        if not mask.any():
            return everything  # never drop every box because the mask found no breast
        h, w = mask.shape
        cx, cy = (b[:, 0] + b[:, 2]) / 2.0, (b[:, 1] + b[:, 3]) / 2.0
        # pixel i covers [i, i + 1): the centre's pixel, clipped so that a box on the image edge reads the edge pixel
        col = np.clip(np.floor(cx), 0, w - 1).astype(np.int64)
        row = np.clip(np.floor(cy), 0, h - 1).astype(np.int64)
        inside = mask[row, col]
        radius_px = self.margin_mm / spacing_mm
        if radius_px > 0:
            for i in np.flatnonzero(~inside):
                inside[i] = _near(mask, float(cx[i]), float(cy[i]), radius_px)
        return np.flatnonzero(inside)

    def apply(self, detections: Detections, image: np.ndarray, spacing_mm: float) -> Detections:
        """``detections`` of ``image`` (the standardised detector input, 2-D, chest wall on the left, values in
        [0, 1], ``spacing_mm`` per pixel) without the boxes centred outside the breast grown by ``margin_mm``.
        Order, labels and scores of the kept boxes are unchanged; an empty breast mask keeps every box."""
        if len(detections) == 0:
            return detections
        kept = self.keep(detections.boxes, image, spacing_mm)
        if len(kept) == len(detections):
            return detections
        return detections.take(kept)


def standardised_breast_mask(image: np.ndarray, spacing_mm: float) -> np.ndarray:
    """The breast of a standardised image (chest wall on the left, cut at the nipple): ``breast_mask`` with no
    pectoral cut and no erosion, on the image with background added beyond the nipple and the film-border rows along
    its top and bottom edges blanked (module docstring, step 1). An image whose every row is bright from edge to
    edge (no background at all) blanks whole and gives an empty mask, which the gate answers by keeping every box."""
    pixels = np.asarray(image, dtype=np.float32)
    h, w = pixels.shape
    f = _coarse_factor(spacing_mm)
    # complete the image's last mask cell, then add whole cells of background (the cells of the image do not move)
    pad = (-w) % f + f * max(1, math.ceil(PAD_FRACTION * w / f))
    padded = np.zeros((h, w + pad), dtype=np.float32)
    padded[:, :w] = pixels
    border = border_rows(pixels, BORDER_TOLERANCE)
    top = int(np.argmin(border)) if not border.all() else h
    bottom = h - int(np.argmin(border[::-1])) if not border.all() else 0
    padded[:top] = 0.0
    padded[bottom:] = 0.0
    return breast_mask(padded, spacing_mm, view=None, laterality="L", margin_mm=0.0)[:, :w]


def _near(mask: np.ndarray, x: float, y: float, radius_px: float) -> bool:
    """Whether a pixel of ``mask`` has its centre within ``radius_px`` of the point (x, y)."""
    h, w = mask.shape
    r = int(math.ceil(radius_px))
    x0, x1 = max(0, int(math.floor(x)) - r), min(w, int(math.floor(x)) + r + 1)
    y0, y1 = max(0, int(math.floor(y)) - r), min(h, int(math.floor(y)) + r + 1)
    if x0 >= x1 or y0 >= y1:
        return False
    ys, xs = np.nonzero(mask[y0:y1, x0:x1])
    if ys.size == 0:
        return False
    d2 = (ys + y0 + 0.5 - y) ** 2 + (xs + x0 + 0.5 - x) ** 2
    return bool(d2.min() <= radius_px ** 2)


def gate_spacing_mm(config: StandardiseConfig) -> float:
    """The pixel spacing the gate is given for a standardised image: the config's ``spacing_mm`` when it resamples,
    else its ``assumed_spacing_mm``. Nominal: a ``max_side`` cap and an image's own stated spacing are not followed;
    the spacing sets the size of the mask's cells (about 1 mm) and the scale of ``margin_mm``."""
    return float(config.spacing_mm) if config.spacing_mm is not None else float(config.assumed_spacing_mm)
