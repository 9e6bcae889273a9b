"""A contact sheet of a detector's strongest false positives: what it fires on that the truth does not hold.

Why: FROC says how many false boxes a detector draws, not what they sit on. Whether they are noise, anatomy, film
artefacts or real findings the annotation lacks (on simulated sets made over real mammograms: the background's own
calcifications) decides what to do next: more look-alikes in training, a gate, or a better truth. Looking is the
quickest way to tell, so ``mccad evaluate`` draws the ``limit`` best-scored false positives at the operating point,
each as a square of ``side_mm`` of the original image centred on the box, with the box outlined, and lists them
(image, score, label, box) in ``metrics.json``.

False positive as ``training.evaluation.froc`` counts one: a box of score >= the threshold that hits no lesion of its
image at IoU >= ``hit_iou``.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from models.preprocess import StandardiseConfig
from training.datasets.images import load_pixels, pixel_spacing
from training.datasets.samples import Sample
from training.evaluation.froc import DEFAULT_HIT_IOU, hit_scores

#: pixel spacing (mm) taken for an image that states none: the product's assumption (digitised film)
ASSUMED_SPACING_MM = StandardiseConfig().assumed_spacing_mm
TILE_PX = 196
GAP_PX = 4


def false_positives(pairs: Sequence[tuple[Sample, Any]], threshold: float, limit: int,
                    hit_iou: float = DEFAULT_HIT_IOU) -> list[dict[str, Any]]:
    """The ``limit`` best-scored false positives at ``threshold`` over ``pairs`` of (truth, ``ImagePrediction``),
    best first (ties in the order of the pairs)."""
    found: list[tuple[float, int, dict[str, Any]]] = []
    for order, (sample, pred) in enumerate(pairs):
        scores = np.asarray(pred.scores, dtype=np.float64).reshape(-1)
        boxes = np.asarray(pred.boxes, dtype=np.float64).reshape(-1, 4)
        _, false = hit_scores(sample.boxes, boxes, scores, hit_iou)
        for k in np.flatnonzero(false & (scores >= threshold)):
            found.append((-float(scores[k]), order, {"image_id": sample.image_id, "score": float(scores[k]),
                                                    "label": pred.labels[k], "box": boxes[k].round(1).tolist()}))
    found.sort(key=lambda item: (item[0], item[1]))
    return [entry for _, _, entry in found[:limit]]


def _tile(pixels: np.ndarray, box: Sequence[float], side_px: int) -> np.ndarray:
    """A ``side_px`` square of ``pixels`` centred on ``box`` (zero outside the image), windowed to its own 1st-99.8th
    percentiles, as uint8."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0, y0 = int(round(cx - side_px / 2)), int(round(cy - side_px / 2))
    out = np.zeros((side_px, side_px), np.float32)
    ys = slice(max(y0, 0), min(y0 + side_px, pixels.shape[0]))
    xs = slice(max(x0, 0), min(x0 + side_px, pixels.shape[1]))
    if ys.stop > ys.start and xs.stop > xs.start:
        out[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0] = pixels[ys, xs]
    lo, hi = np.percentile(out, [1.0, 99.8])
    return (np.clip((out - lo) / max(hi - lo, 1e-6), 0.0, 1.0) * 255).astype(np.uint8)


def write_false_positive_sheet(pairs: Sequence[tuple[Sample, Any]], threshold: float, path: Path, *,
                               limit: int = 30, side_mm: float = 10.0, columns: int = 6,
                               hit_iou: float = DEFAULT_HIT_IOU) -> dict[str, Any] | None:
    """Write the sheet (PNG) to ``path``; returns what ``metrics.json`` keeps of it, or None when there is no false
    positive at ``threshold`` (no file then)."""

    entries = false_positives(pairs, threshold, limit, hit_iou)
    if not entries:
        return None
    samples = {sample.image_id: sample for sample, _ in pairs}
    rows = -(-len(entries) // columns)
    sheet = Image.new("L", (columns * (TILE_PX + GAP_PX), rows * (TILE_PX + GAP_PX)), 0)
    draw = ImageDraw.Draw(sheet)
    by_image: dict[str, list[int]] = {}
    for k, entry in enumerate(entries):
        by_image.setdefault(entry["image_id"], []).append(k)
    for image_id, ranks in by_image.items():  # each image decoded once (a DICOM mammogram takes seconds)
        sample = samples[image_id]
        spacing = pixel_spacing(sample)
        spacing_mm = float(np.mean(spacing)) if spacing else ASSUMED_SPACING_MM
        pixels = load_pixels(sample)
        side_px = max(8, int(round(side_mm / spacing_mm)))
        scale = TILE_PX / side_px
        for k in ranks:
            box = entries[k]["box"]
            tile = Image.fromarray(_tile(pixels, box, side_px)).resize((TILE_PX, TILE_PX), Image.NEAREST)
            left, top = (k % columns) * (TILE_PX + GAP_PX), (k // columns) * (TILE_PX + GAP_PX)
            sheet.paste(tile, (left, top))
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            x0, y0 = left + (box[0] - cx) * scale + TILE_PX / 2, top + (box[1] - cy) * scale + TILE_PX / 2
            x1, y1 = left + (box[2] - cx) * scale + TILE_PX / 2, top + (box[3] - cy) * scale + TILE_PX / 2
            draw.rectangle([max(x0, left), max(y0, top), min(x1, left + TILE_PX - 1), min(y1, top + TILE_PX - 1)],
                           outline=255)
            caption = f"{k + 1}  {entries[k]['score']:.2f}"
            draw.rectangle(draw.textbbox((left + 3, top + 2), caption), fill=0)  # legible on bright tissue too
            draw.text((left + 3, top + 2), caption, fill=255)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return {"file": path.name, "threshold": float(threshold), "side_mm": side_mm, "hit_iou": hit_iou,
            "false_positives": entries}
