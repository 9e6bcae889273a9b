"""Free-response ROC for lesion detection: sensitivity against false positives per image.

Definitions (stated here because FROC figures are only comparable when they are):

- A predicted box *hits* a ground-truth lesion when their IoU is at least ``hit_iou`` (default 0.1: lesions are
  small and annotators' boxes loose, so a tight IoU would punish correct finds for box-drawing style). A lesion's
  score is the highest score of the boxes that hit it; a lesion no box hits is missed at every threshold.
- A predicted box that hits no lesion of its image is a false positive. Further boxes on an already found lesion
  are neither true nor false positives (the usual FROC convention: duplicates are not penalised).
- At threshold ``t``: sensitivity = lesions with score >= t / all lesions; FP rate = false-positive boxes with
  score >= t / number of images (images without lesions count, they are where false positives are made).
- The reported sensitivity at an FP rate ``r`` is the highest sensitivity over thresholds whose FP rate <= r
  (0.25, 0.5, 1, 2, 4 FP per image as issue 6 asks).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.fusion import box_iou

FP_RATES: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
DEFAULT_HIT_IOU = 0.1


@dataclass(frozen=True)
class FrocImage:
    """One image's ground truth and predictions (same pixel grid); labels optional for class-aware FROC."""

    gt_boxes: np.ndarray
    pred_boxes: np.ndarray
    pred_scores: np.ndarray
    gt_labels: Sequence[str] | None = None
    pred_labels: Sequence[str] | None = None


@dataclass
class FrocCurve:
    """The curve (one point per distinct threshold, FP rate ascending) and the sensitivities at ``FP_RATES``."""

    thresholds: np.ndarray
    sensitivity: np.ndarray
    fp_per_image: np.ndarray
    n_lesions: int
    n_images: int
    at_rates: dict[float, float]

    def threshold_at(self, rate: float) -> float | None:
        """The lowest score threshold whose FP rate stays within ``rate`` per image: the operating point that
        reaches ``at_rates[rate]``, and what a model's ``score_thresh`` should be to show about ``rate`` false
        boxes per image on data like this (chosen on validation images, never on the test set). None when even
        the highest threshold makes more."""
        ok = self.fp_per_image <= rate + 1e-12
        return float(self.thresholds[ok].min()) if ok.any() else None

    def to_dict(self) -> dict:
        return {
            "n_lesions": self.n_lesions, "n_images": self.n_images,
            "sensitivity_at_fp_per_image": {str(k): v for k, v in self.at_rates.items()},
            "threshold_at_fp_per_image": {str(k): self.threshold_at(k) for k in self.at_rates},
            "mean_sensitivity": float(np.mean(list(self.at_rates.values()))) if self.at_rates else float("nan"),
            "curve": {"threshold": self.thresholds.tolist(), "sensitivity": self.sensitivity.tolist(),
                      "fp_per_image": self.fp_per_image.tolist()},
        }


def _select(boxes: np.ndarray, labels: Sequence[str] | None, label: str | None) -> np.ndarray:
    if label is None or labels is None:
        return np.arange(len(boxes))
    return np.asarray([i for i, lab in enumerate(labels) if lab == label], dtype=np.int64)


def hit_scores(gt: np.ndarray, pred: np.ndarray, scores: np.ndarray,
               hit_iou: float = DEFAULT_HIT_IOU) -> tuple[np.ndarray, np.ndarray]:
    """One image's FROC ingredients: each lesion's score (the best box hitting it; -inf when none does), in the
    order of ``gt``, and per predicted box whether it hits no lesion (a false positive). A lesion is found at
    threshold ``t`` when its score is >= ``t``, which is how subgroups of lesions and false boxes are counted
    (``training.subgroups``)."""
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(gt) and len(pred):
        hits = box_iou(gt, pred) >= hit_iou
    else:
        hits = np.zeros((len(gt), len(pred)), dtype=bool)
    found = np.asarray([float(scores[hits[i]].max()) if hits[i].any() else -np.inf for i in range(len(gt))],
                       dtype=np.float64)
    return found, ~hits.any(axis=0)


def froc(images: Sequence[FrocImage], *, hit_iou: float = DEFAULT_HIT_IOU, label: str | None = None,
         fp_rates: Sequence[float] = FP_RATES) -> FrocCurve:
    """FROC over a set of images. With ``label``, only lesions and predictions of that class take part."""
    lesion_scores: list[float] = []
    fp_scores: list[float] = []
    for img in images:
        gt = np.asarray(img.gt_boxes, dtype=np.float64).reshape(-1, 4)
        pred = np.asarray(img.pred_boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(img.pred_scores, dtype=np.float64).reshape(-1)
        if len(scores) != len(pred):
            raise ValueError(f"{len(pred)} predicted boxes but {len(scores)} scores")
        gt = gt[_select(gt, img.gt_labels, label)]
        keep = _select(pred, img.pred_labels, label)
        found, false = hit_scores(gt, pred[keep], scores[keep], hit_iou)
        lesion_scores.extend(found.tolist())
        fp_scores.extend(scores[keep][false].tolist())
    n_images = len(images)
    n_lesions = len(lesion_scores)
    les = np.sort(np.asarray(lesion_scores, dtype=np.float64))
    fps = np.sort(np.asarray(fp_scores, dtype=np.float64))
    finite = les[np.isfinite(les)]
    thresholds = np.unique(np.concatenate([finite, fps]))[::-1]  # descending: FP rate ascends
    if n_lesions == 0 or n_images == 0:
        sens = np.zeros(len(thresholds))
    else:
        sens = (n_lesions - np.searchsorted(les, thresholds, side="left")) / n_lesions
    fp_rate = (len(fps) - np.searchsorted(fps, thresholds, side="left")) / max(n_images, 1)
    at_rates: dict[float, float] = {}
    for rate in fp_rates:
        ok = fp_rate <= rate + 1e-12
        at_rates[float(rate)] = float(sens[ok].max()) if ok.any() and n_lesions else 0.0
    return FrocCurve(thresholds=thresholds, sensitivity=np.asarray(sens, dtype=np.float64),
                     fp_per_image=np.asarray(fp_rate, dtype=np.float64), n_lesions=n_lesions, n_images=n_images,
                     at_rates=at_rates)
