"""How visible a simulated cluster is to a plain blob detector, against the texture of its own breast.

Why: no detector trained here finds the faintest simulated clusters (peak contrast-to-noise ratio below 8, almost all
amorphous; ``training.evaluation.subgroups``), and they alone hold FROC sensitivity at 1 false positive per image below
the target of 0.9 (docs/experiments/default-bundle-record.md, section "The reader's annotation rule"). Whether that is a
model that could learn more or
clusters that do not stand out of the breast's own structure decides where GPU time goes. Pixel noise (the CNR) does
not answer it: breast texture also makes calcification-sized bright blobs. This measures the clusters against the
texture.

Method: the simulator's own blob filter (``training.simulate.visibility``: a scale-normalised Laplacian of Gaussian
at calcification scales, bright blobs of 0.2-0.3 mm) over the image, standardised by its median and MAD over the breast
away from its border and the clusters: ``z``. Local maxima above ``Z_PEAK`` are calcification-like blobs. A cluster box
holding ``k`` of them, where the rest of the breast holds ``d`` per pixel, is compared with windows of its area, which
hold Poisson(d x area) by chance: ``chance_windows_per_image`` = P(N >= k) x (breast area / box area), the number of
windows as crowded as the cluster the image holds by chance. Below 1 the cluster stands out of its image to this
detector; well above 1 it does not, and a learnt detector must do better than counting blobs to find it at 1 false
positive per image. A crude detector by design: a cluster that does not stand out to it may still be found, one that
does is plainly visible.

With a detector's ``predictions.json`` (``mccad evaluate``) each cluster also gets the detector's score for it (the
best box hitting it, FROC's rule) and the summary counts the clusters it finds at 1 false positive per image, so
"invisible to blob counting" and "found by the network" can be read side by side:

    python -m training.simulate.cluster_visibility sim/test7 --predictions reports/test7-050/predictions.json \
        --out reports/test7-visibility.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage, stats

from training.evaluation.evaluate import EvaluationError, read_predictions
from training.evaluation.froc import FrocImage, froc, hit_scores
from training.evaluation.subgroups import SIMULATION_RECORD, cnr_bin, simulation_records
from training.simulate.background import breast_mask
from training.simulate.visibility import (
    SIGMAS_MM,
    Z_VISIBLE,
    blob_response,
    peak_window_px,
    texture_mask,
    texture_statistics,
)

#: a blob is a local maximum (``simulate_visibility.PEAK_WINDOW_MM`` square) above this many texture spreads: the
#: simulator's own visibility threshold, so a set made under its annotation rule and this measure agree
Z_PEAK = Z_VISIBLE
#: clusters' boxes grown by this much (pixels) before they are left out of the texture statistics
CLUSTER_MARGIN_PX = 5


@dataclass(frozen=True)
class ClusterVisibility:
    """One cluster box against its image's texture (see the module docstring)."""

    peak_z: float  # the strongest blob response inside the box, in texture MADs
    blobs: int  # calcification-like blobs inside the box
    expected_blobs: float  # what a window of the box's area holds by chance
    chance_windows_per_image: float  # windows of the image as crowded as the box, by chance


def blob_z(pixels: np.ndarray, texture: np.ndarray, spacing_mm: float = 0.1) -> np.ndarray:
    """The bright-blob response of ``pixels`` (``training.simulate.visibility.blob_response``) standardised over
    the ``texture`` pixels (median 0, MAD-sigma 1)."""
    response = blob_response(pixels, spacing_mm)
    median, spread = texture_statistics(response, texture)
    return (response - median) / max(spread, 1e-12)


def _box_mask(shape: tuple[int, int], box: Sequence[float], grow: int = 0) -> np.ndarray:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    out = np.zeros(shape, bool)
    out[max(y0 - grow, 0):max(y1 + 1 + grow, 0), max(x0 - grow, 0):max(x1 + 1 + grow, 0)] = True
    return out


def cluster_visibility(pixels: np.ndarray, breast: np.ndarray, boxes: Sequence[Sequence[float]],
                       spacing_mm: float = 0.1) -> list[ClusterVisibility]:
    """Visibility of each box (x0, y0, x1, y1 in pixels) of one image at ``spacing_mm`` whose breast is ``breast``;
    every box is left out of the texture the others are measured against."""
    texture = texture_mask(breast, spacing_mm)
    for box in boxes:
        texture &= ~_box_mask(breast.shape, box, CLUSTER_MARGIN_PX)
    z = blob_z(pixels, texture, spacing_mm)
    peaks = (z == ndimage.maximum_filter(z, size=peak_window_px(spacing_mm))) & (z > Z_PEAK)
    density = float(peaks[texture].sum()) / float(texture.sum())
    out = []
    for box in boxes:
        inside = _box_mask(breast.shape, box)
        area = int(inside.sum())
        if area == 0:
            raise ValueError(f"box {list(box)} lies outside the image")
        k = int(peaks[inside].sum())
        expected = density * area
        p_chance = float(stats.poisson.sf(k - 1, expected)) if k > 0 else 1.0
        out.append(ClusterVisibility(float(z[inside].max()), k, expected,
                                     p_chance * float(texture.sum()) / area))
    return out


def _read_png(path: Path) -> np.ndarray:
    """A simulated image back on the simulator's [0, 1] scale (``training.simulate.dataset`` writes value x 65535
    into 16-bit PNGs, value x 255 into 8-bit ones)."""
    with Image.open(path) as im:
        stored = np.asarray(im)
    return stored.astype(np.float32) / (255.0 if stored.dtype == np.uint8 else 65535.0)


def set_records(folder: Path | str) -> dict[str, dict[str, Any]]:
    """The per-image records of a set made by ``mccad simulate``
    (``training.evaluation.subgroups.simulation_records``)."""
    records = simulation_records(folder)
    if records is None:
        raise FileNotFoundError(f"{Path(folder) / SIMULATION_RECORD} not found or unreadable: not a set made by "
                                "mccad simulate")
    return records


def simulated_set_visibility(folder: Path | str, records: dict[str, dict[str, Any]] | None = None
                             ) -> list[dict[str, Any]]:
    """Every cluster of a set made by ``mccad simulate`` (whole images; ``records``: its :func:`set_records`, read
    when not given): image, the cluster's index in its image's record (``lesion``), pattern, contrast-to-noise ratio
    and :class:`ClusterVisibility`."""
    folder = Path(folder)
    records = set_records(folder) if records is None else records
    rows = []
    for record in records.values():
        lesions = record.get("lesions") or []
        if not lesions:
            continue
        if record.get("crop_window"):
            raise ValueError(f"{folder} holds crops: visibility is measured against a whole breast's texture")
        pixels = _read_png(folder / record["image"])
        breast = breast_mask(pixels, record["spacing_mm"], view=record.get("view"),
                             laterality=record.get("laterality"))
        found = cluster_visibility(pixels, breast, [les["box"] for les in lesions], record["spacing_mm"])
        sigma = float(record.get("noise_sigma") or 0.0)
        for k, (lesion, vis) in enumerate(zip(lesions, found, strict=True)):
            cnr = lesion["peak_contrast"] / sigma if sigma > 0 else None
            rows.append({"image": record["image"], "lesion": k, "pattern": lesion["pattern"],
                         "label": lesion["label"], "contrast_to_noise": cnr, **asdict(vis)})
    return rows


def add_detector_scores(rows: list[dict[str, Any]], records: dict[str, dict[str, Any]],
                        predictions: Path | str) -> float:
    """Give each row of :func:`simulated_set_visibility` the detector's score for its cluster (``detector_score``:
    the best box hitting it at FROC's IoU, None when none does) from a ``predictions.json`` made on the set of
    ``records``; returns the threshold of 1 false positive per image over the set, at which the summary counts
    clusters found."""
    by_id = {p.image_id: p for p in read_predictions(Path(predictions))[0]}
    missing = [name for name in records if name not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} images of the set have no prediction (e.g. {missing[:3]}): predictions "
                         "made on another set?")
    scores: dict[tuple[str, int], float | None] = {}
    curve_images = []
    for name, record in records.items():
        pred = by_id[name]
        gt = np.asarray([les["box"] for les in record.get("lesions") or []], np.float64).reshape(-1, 4)
        curve_images.append(FrocImage(gt, pred.boxes, pred.scores))
        found, _ = hit_scores(gt, pred.boxes, pred.scores)
        for k, value in enumerate(found):
            scores[(name, k)] = float(value) if np.isfinite(value) else None
    for row in rows:
        row["detector_score"] = scores[(row["image"], row["lesion"])]
    threshold = froc(curve_images).threshold_at(1.0)
    return math.inf if threshold is None else float(threshold)  # None: over 1 per image at any threshold


def summarise(rows: Sequence[dict[str, Any]], found_at: float | None = None) -> dict[str, Any]:
    """Clusters standing out of their image's texture (fewer than 1 as crowded window per image by chance), by
    contrast-to-noise band and by pattern, with the median ``peak_z``; with ``found_at`` (a detector's threshold, rows
    with ``detector_score``) also the clusters it finds there, all of them and among those not standing out."""
    def found(members: Sequence[dict[str, Any]]) -> dict[str, int]:
        hit = [r for r in members if r.get("detector_score") is not None and r["detector_score"] >= found_at]
        return {"found": len(hit), "found_not_standing_out": sum(r["chance_windows_per_image"] >= 1.0 for r in hit)}

    def group(key) -> dict[str, dict[str, Any]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            out.setdefault(key(row), []).append(row)
        return {name: {"clusters": len(members),
                       "standing_out": sum(r["chance_windows_per_image"] < 1.0 for r in members),
                       "median_peak_z": round(float(np.median([r["peak_z"] for r in members])), 2),
                       "median_chance_windows_per_image": round(float(np.median(
                           [r["chance_windows_per_image"] for r in members])), 3),
                       **(found(members) if found_at is not None else {})}
                for name, members in sorted(out.items())}

    return {"clusters": len(rows), "z_peak": Z_PEAK, "sigmas_mm": list(SIGMAS_MM),
            **({"detector_threshold_at_1fp": round(found_at, 4)} if found_at is not None else {}),
            "all": group(lambda r: "all")["all"] if rows else {},
            "by_contrast_to_noise": group(lambda r: "unknown" if r["contrast_to_noise"] is None
                                          else cnr_bin(r["contrast_to_noise"])),
            "by_pattern": group(lambda r: r["pattern"])}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.simulate.cluster_visibility",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a set of whole images made by mccad simulate")
    parser.add_argument("--predictions", type=Path, default=None,
                        help="a detector's predictions.json on the same set (mccad evaluate): clusters it finds")
    parser.add_argument("--out", type=Path, default=None, help="write every cluster's figures and the summary here")
    args = parser.parse_args(argv)
    try:
        records = set_records(args.folder)
        rows = simulated_set_visibility(args.folder, records)
        found_at = add_detector_scores(rows, records, args.predictions) if args.predictions is not None else None
    except (FileNotFoundError, ValueError, EvaluationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = summarise(rows, found_at)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"summary": summary, "clusters": rows}, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
