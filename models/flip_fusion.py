"""Test-time flip: the detector also reads the mirrored image, and the two readings are fused box by box.

Why: a detector's score for a faint cluster moves with where its calcifications fall on the anchor and feature grid;
read once more mirrored (the one transform the crops were trained under, ``hflip = true``), a cluster seen twice
keeps its score while a box that only one reading drew, the typical false positive on breast texture, is halved.
Averaging the two readings is the standard test-time augmentation of detection (weighted box fusion, Solovyev et al.
2021), applied here with the detector's own duplicate rule.

How (:func:`fuse_readings`), one class at a time, boxes taken by falling score:

- a box joins the fused box of its class that it overlaps most, at IoU >= ``iou`` (the detector's NMS threshold:
  two boxes the detector itself would call duplicates), provided no box of the same reading has joined it yet;
  otherwise it starts a fused box;
- a fused box's corners are its members' score-weighted mean, its score the sum of their scores divided by the
  number of readings (a reading that drew no box there counts 0), its class split (lesion scores) their
  score-weighted mean.

The caller then applies the detector's thresholds as usual: score threshold, class-aware NMS, cross-class
suppression, the best ``detections_per_img`` (``models.tiling.TilingSpec.detect``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

from models.detector import Detections

#: the readings run at this score threshold (or the caller's, when lower): a box one reading scores just under the
#: caller's threshold still adds to its fused score, which an unread 0 would understate by at most this over 2
READING_SCORE_FLOOR = 0.01


def mirror(det: Detections, width: int) -> Detections:
    """Boxes of a horizontally mirrored image of ``width`` px, mapped back to the original image's pixels."""
    boxes = np.asarray(det.boxes, np.float32).reshape(-1, 4).copy()
    boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    return Detections(boxes=boxes, labels=det.labels, scores=det.scores, malignancy=det.malignancy)


def fuse_readings(readings: Sequence[Detections], iou: float) -> Detections:
    """One set of boxes from several readings of the same image (module docstring), sorted by falling score."""
    if not readings:
        raise ValueError("fuse_readings needs at least one reading")
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"iou must lie in (0, 1], got {iou}")
    split = all(r.malignancy is not None for r in readings)
    boxes = np.concatenate([np.asarray(r.boxes, np.float32).reshape(-1, 4) for r in readings])
    labels = np.concatenate([np.asarray(r.labels, np.int64) for r in readings])
    scores = np.concatenate([np.asarray(r.scores, np.float32) for r in readings])
    source = np.concatenate([np.full(len(r), k) for k, r in enumerate(readings)])
    malignancy = np.concatenate([np.asarray(r.malignancy, np.float32) for r in readings]) if split else None
    out_boxes, out_labels, out_scores, out_split = [], [], [], []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        members: list[list[int]] = []
        fused: list[np.ndarray] = []
        for i in idx:
            best, best_iou = -1, iou
            if fused:
                overlaps = box_iou(torch.from_numpy(boxes[i][None]), torch.from_numpy(np.stack(fused)))[0].numpy()
                for c in np.argsort(-overlaps, kind="stable"):
                    if overlaps[c] < best_iou:
                        break
                    if source[i] not in source[members[c]]:
                        best = int(c)
                        break
            if best < 0:
                members.append([int(i)])
                fused.append(boxes[i].copy())
            else:
                members[best].append(int(i))
                w = scores[members[best]]
                fused[best] = (boxes[members[best]] * w[:, None]).sum(0) / max(float(w.sum()), 1e-12)
        for group, box in zip(members, fused, strict=True):
            w = scores[group]
            out_boxes.append(box)
            out_labels.append(label)
            out_scores.append(float(w.sum()) / len(readings))
            if malignancy is not None:
                out_split.append(float((malignancy[group] * w).sum() / max(float(w.sum()), 1e-12)))
    order = np.argsort(-np.asarray(out_scores, np.float32), kind="stable")
    return Detections(boxes=np.asarray(out_boxes, np.float32).reshape(-1, 4)[order],
                      labels=np.asarray(out_labels, np.int64)[order],
                      scores=np.asarray(out_scores, np.float32)[order],
                      malignancy=np.asarray(out_split, np.float32)[order] if malignancy is not None else None)
