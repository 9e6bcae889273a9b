"""Where a detector finds and misses on a simulated set: FROC by background, clusters found by BI-RADS pattern, false
positives by background image.

Why: one FROC figure over a set made by ``mccad simulate`` mixes backgrounds that hold no finding of their own
(phantoms) with real mammograms that may hold real, unannotated calcifications, and patterns from coarse (obvious) to
amorphous (faint). Whether a model falls short for lack of sensitivity to a pattern or for false positives on one
real image decides what to do next, so ``mccad evaluate`` adds this breakdown to ``metrics.json`` (``subgroups``)
whenever the dataset's ``simulated.json`` lies beside its CSV.

Counted as FROC counts (``training.evaluation.froc``: a box hits a cluster at IoU >= 0.1; a cluster is found at
threshold ``t`` when a box of score >= ``t`` hits it; a box hitting none is a false positive), at two thresholds: the
model's operating point and the threshold of 1 false positive per image over the whole set.

Recurring false positives: a real background is reused by many simulated images (flipped or not), while clusters are
placed at random. A false positive whose centre lies within ``RECUR_MM`` of a false positive on another image of the
same background (compared with the flip undone) sits on a structure of that background, not on anything inserted:
on a real image, possibly a real finding the simulated truth does not annotate. They are counted per background at
the operating point, on whole images (a crop's frame is not its background's); this states where the false
positives are, it does not decide what they are.

Acquisition: a set made with an image-formation stage (``mccad simulate --acquisition film|digital|mixed``,
``training.simulate.formation``) records each image's source (``acquisition``); FROC is then also given per source
(``by_acquisition``) and per pitch and source together (``by_pixel_spacing_and_acquisition``), and false positives
that fall on a film's scanner artefact (a dust speck or a scratch, recorded in ``artefacts``) are counted per
artefact kind (``false_positives_on_artefacts``): whether the detector takes dust for calcifications.

Faintness: sets written since ``simulated.json`` records each background's pixel noise (``noise_sigma``) get clusters
found by contrast-to-noise ratio (peak added contrast / noise, ``CNR_BINS``), which separates "too faint to see" from
"visible but missed".
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from training.datasets.samples import Sample
from training.evaluation.froc import DEFAULT_HIT_IOU, FrocImage, froc, hit_scores

SIMULATION_RECORD = "simulated.json"
#: two false positives on images of the same real background this close (mm, centre to centre) are the same place
RECUR_MM = 2.0
#: bins of a cluster's peak contrast over its background's pixel noise (its brightest calcification's CNR): below
#: about 3-5 a single particle is at or under the Rose criterion of visibility, so misses there are faintness
CNR_BINS: tuple[float, ...] = (0.0, 2.0, 3.0, 5.0, 8.0, float("inf"))


def simulation_records(data: Path | str) -> dict[str, dict[str, Any]] | None:
    """``simulated.json``'s per-image records keyed by image name, for a dataset CSV (or its folder) written by
    ``mccad simulate``; None for any other dataset."""
    path = Path(data)
    record = (path if path.is_dir() else path.parent) / SIMULATION_RECORD
    if not record.is_file():
        return None
    try:
        images = json.loads(record.read_text())["images"]
        return {str(r["image"]): r for r in images}
    except (ValueError, KeyError, TypeError):
        return None  # not a simulation record of ours: no breakdown rather than a failed evaluation


def resampling_group(sample: Sample, records: dict[str, dict[str, Any]] | None) -> str:
    """The unit a bootstrap resamples ``sample`` with (``training.evaluation.froc.froc_bootstrap``): for a simulated
    image its background (every image made on one real background shares that background's own structures and so its
    false positives; a phantom is one synthetic woman), for any other image its patient."""
    record = records.get(sample.image_id) if records else None
    if record is None:
        return f"patient {sample.patient_id}"
    if record.get("source") == "real":
        return background_of(record)
    return f"phantom {record.get('phantom_patient', sample.patient_id)}"


def background_of(record: dict[str, Any]) -> str:
    """``phantom``, or ``real <index>`` (with the file's name when the background came from a folder)."""
    if record.get("source") != "real":
        return "phantom"
    name = record.get("background_file")
    return f"real {record.get('real_index')}" + (f" ({name})" if name else "")


def _counts(scores: Sequence[float], thresholds: dict[str, float | None]) -> dict[str, int]:
    values = np.asarray(scores, dtype=np.float64)
    return {name: int((values >= t).sum()) if t is not None else 0 for name, t in thresholds.items()}


def _unflipped_centres(boxes: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """Box centres (x, y) in the background's own frame: a flipped image's x mirrored back."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    centres = np.stack([(b[:, 0] + b[:, 2]) / 2.0, (b[:, 1] + b[:, 3]) / 2.0], axis=1)
    if record.get("flipped") and record.get("columns"):
        centres[:, 0] = float(record["columns"]) - centres[:, 0]
    return centres


def cnr_bin(ratio: float) -> str:
    """The contrast-to-noise band (``CNR_BINS``) a ratio falls in, as reports name it ("5-8", ">=8")."""
    for lo, hi in pairwise(CNR_BINS):
        if lo <= ratio < hi:
            return f"{lo:g}-{hi:g}" if np.isfinite(hi) else f">={lo:g}"
    return f"<{CNR_BINS[0]:g}"


def _found_by_contrast_to_noise(records: Sequence[dict[str, Any]],
                                found: Sequence[np.ndarray]) -> dict[str, list[float]]:
    """Cluster scores (as ``hit_scores`` gives them) grouped by CNR bin, bins in ``CNR_BINS`` order; empty when any
    image's record lacks ``noise_sigma`` (sets written before it was recorded)."""
    grouped: dict[str, list[float]] = {cnr_bin(lo): [] for lo in CNR_BINS[:-1]}
    for record, scores in zip(records, found, strict=True):
        noise = float(record.get("noise_sigma") or 0.0)
        if noise <= 0.0:
            return {}
        for lesion, score in zip(record["lesions"], scores, strict=True):
            grouped[cnr_bin(float(lesion["peak_contrast"]) / noise)].append(float(score))
    return {name: scores for name, scores in grouped.items() if scores}


def _acquisition_breakdown(pairs: Sequence[tuple[Sample, Any]], records: dict[str, dict[str, Any]],
                            hit_iou: float, thresholds: dict[str, float | None]) -> dict[str, Any]:
    """FROC per acquisition source and per pitch and source, and false positives on artefacts by kind, when any
    image records its ``acquisition`` (images without one count as ``none``); empty otherwise."""
    rows = [records[s.image_id] for s, _ in pairs]
    if not any(r.get("acquisition") for r in rows):
        return {}
    sources = [str(r.get("acquisition") or "none") for r in rows]
    pitches = [f"{float(r.get('spacing_mm', 0.1)):g} mm" for r in rows]
    on_artefacts: dict[str, list[float]] = defaultdict(list)
    for (sample, pred), record in zip(pairs, rows, strict=True):
        artefacts = record.get("artefacts") or []
        if not artefacts:
            continue
        scores = np.asarray(pred.scores, dtype=np.float64).reshape(-1)
        _, false = hit_scores(sample.boxes, pred.boxes, scores, hit_iou)
        boxes = np.asarray(pred.boxes, dtype=np.float64).reshape(-1, 4)[false]
        for box, score in zip(boxes, scores[false], strict=True):
            cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
            kinds = {a["kind"] for a in artefacts
                     if a["box"][0] <= cx < a["box"][2] and a["box"][1] <= cy < a["box"][3]}
            for kind in kinds:
                on_artefacts[kind].append(float(score))
    return {"by_acquisition": _froc_by(pairs, sources, hit_iou),
            "by_pixel_spacing_and_acquisition": _froc_by(pairs, [f"{p} {a}" for p, a in zip(pitches, sources,
                                                                                              strict=True)], hit_iou),
            "false_positives_on_artefacts": {kind: _counts(scores, thresholds)
                                             for kind, scores in sorted(on_artefacts.items())}}


def recurring_false_positives(places: Sequence[tuple[int, np.ndarray, float]]) -> int:
    """How many of the false positives (``places``: image number, unflipped centres, pixel spacing in mm; all of
    one background) lie within ``RECUR_MM`` of a false positive on another image."""
    count = 0
    for image, centres, spacing in places:
        others = [c for other, c, _ in places if other != image and len(c)]
        if not others or not len(centres):
            continue
        pool = np.concatenate(others)
        distance = np.hypot(centres[:, None, 0] - pool[None, :, 0], centres[:, None, 1] - pool[None, :, 1])
        count += int((distance.min(axis=1) * spacing <= RECUR_MM).sum())
    return count


def _froc_by(pairs: Sequence[tuple[Sample, Any]], keys: Sequence[str], hit_iou: float) -> dict[str, Any]:
    """FROC sensitivity at each false-positive rate of the images sharing each key (``keys[i]`` is image i's), with
    their image and cluster counts: e.g. by background source or by the pixel spacing the image was made at."""
    out: dict[str, Any] = {}
    for key in sorted(set(keys)):
        subset = [pair for pair, k in zip(pairs, keys, strict=True) if k == key]
        curve = froc([FrocImage(s.boxes, p.boxes, p.scores) for s, p in subset], hit_iou=hit_iou)
        out[key] = {"images": curve.n_images, "clusters": curve.n_lesions,
                    "sensitivity_at_fp_per_image": {str(k): v for k, v in curve.at_rates.items()}}
    return out


def subgroup_metrics(pairs: Sequence[tuple[Sample, Any]], records: dict[str, dict[str, Any]],
                     operating_threshold: float, hit_iou: float = DEFAULT_HIT_IOU) -> dict[str, Any] | None:
    """The breakdown for ``pairs`` of (ground truth, ``ImagePrediction``) whose images ``records`` describe; None
    when an image is missing from the records or its clusters do not match the record's (an edited CSV)."""
    images: list[tuple[str, str, np.ndarray, np.ndarray, list[str]]] = []
    places: dict[str, list[tuple[int, np.ndarray, float]]] = defaultdict(list)
    for number, (sample, pred) in enumerate(pairs):
        record = records.get(sample.image_id)
        if record is None or len(record.get("lesions", [])) != len(sample.lesions):
            return None
        scores = np.asarray(pred.scores, dtype=np.float64).reshape(-1)
        found, false = hit_scores(sample.boxes, pred.boxes, scores, hit_iou)
        patterns = [str(les.get("pattern", "unknown")) for les in record["lesions"]]
        background = background_of(record)
        images.append((str(record.get("source", "unknown")), background, found, scores[false], patterns))
        if record.get("source") == "real" and "crop_window" not in record:  # a crop's frame is not the background's
            fp_boxes = np.asarray(pred.boxes, dtype=np.float64).reshape(-1, 4)[false & (scores >= operating_threshold)]
            places[background].append((number, _unflipped_centres(fp_boxes, record),
                                        float(record.get("spacing_mm", 0.1))))
    everything = froc([FrocImage(s.boxes, p.boxes, p.scores) for s, p in pairs], hit_iou=hit_iou)
    thresholds = {"operating_point": float(operating_threshold), "at_1fp": everything.threshold_at(1.0)}

    by_source = _froc_by(pairs, [img[0] for img in images], hit_iou)
    by_spacing = _froc_by(pairs, [f"{float(records[s.image_id].get('spacing_mm', 0.1)):g} mm" for s, _ in pairs],
                          hit_iou)
    by_cnr = _found_by_contrast_to_noise([records[s.image_id] for s, _ in pairs], [img[2] for img in images])
    patterns: dict[str, list[float]] = defaultdict(list)
    for _, _, found, _, names in images:
        for name, score in zip(names, found, strict=True):
            patterns[name].append(float(score))
    false_positives: dict[str, dict[str, Any]] = {}
    for background in sorted({img[1] for img in images}):
        members = [img for img in images if img[1] == background]
        fp = [float(v) for img in members for v in img[3]]
        false_positives[background] = {"images": len(members), **_counts(fp, thresholds)}
        if background in places:
            false_positives[background]["recurring_at_operating_point"] = recurring_false_positives(places[background])
    return {"thresholds": thresholds, "hit_iou": hit_iou, "recur_mm": RECUR_MM, "by_source": by_source,
            "by_pixel_spacing": by_spacing,
            "by_pattern": {name: {"clusters": len(scores), "found": _counts(scores, thresholds)}
                           for name, scores in sorted(patterns.items())},
            "false_positives_by_background": false_positives,
            **_acquisition_breakdown(pairs, records, hit_iou, thresholds),
            **({"by_contrast_to_noise": {name: {"clusters": len(scores), "found": _counts(scores, thresholds)}
                                         for name, scores in by_cnr.items()}} if by_cnr else {})}
