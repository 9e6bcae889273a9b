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
  (0.25, 0.5, 1, 2, 4 FP per image).
- Intervals (:func:`froc_bootstrap`): percentile bootstrap over groups of images (patients; for a simulated set, the
  background each image was made on), and the paired difference of two models on the same images. A set of a few
  dozen images gives intervals some 0.3 wide at 1 FP per image: a difference of one or two lesions between two models
  is not a finding.
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
    (``training.evaluation.subgroups``)."""
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    hits = box_iou(gt, pred) >= hit_iou if len(gt) and len(pred) else np.zeros((len(gt), len(pred)), dtype=bool)
    found = np.asarray([float(scores[hits[i]].max()) if hits[i].any() else -np.inf for i in range(len(gt))],
                       dtype=np.float64)
    return found, ~hits.any(axis=0)


def _per_image(images: Sequence[FrocImage], hit_iou: float, label: str | None
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image: its lesions' scores (``hit_scores``) and its false positives' scores."""
    out = []
    for img in images:
        gt = np.asarray(img.gt_boxes, dtype=np.float64).reshape(-1, 4)
        pred = np.asarray(img.pred_boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(img.pred_scores, dtype=np.float64).reshape(-1)
        if len(scores) != len(pred):
            raise ValueError(f"{len(pred)} predicted boxes but {len(scores)} scores")
        gt = gt[_select(gt, img.gt_labels, label)]
        keep = _select(pred, img.pred_labels, label)
        found, false = hit_scores(gt, pred[keep], scores[keep], hit_iou)
        out.append((found, scores[keep][false]))
    return out


def froc(images: Sequence[FrocImage], *, hit_iou: float = DEFAULT_HIT_IOU, label: str | None = None,
         fp_rates: Sequence[float] = FP_RATES) -> FrocCurve:
    """FROC over a set of images. With ``label``, only lesions and predictions of that class take part."""
    lesion_scores: list[float] = []
    fp_scores: list[float] = []
    for found, false_scores in _per_image(images, hit_iou, label):
        lesion_scores.extend(found.tolist())
        fp_scores.extend(false_scores.tolist())
    thresholds, sens, fp_rate, at_rates = _curve(np.asarray(lesion_scores, dtype=np.float64),
                                                 np.asarray(fp_scores, dtype=np.float64), len(images), fp_rates)
    return FrocCurve(thresholds=thresholds, sensitivity=sens, fp_per_image=fp_rate, n_lesions=len(lesion_scores),
                     n_images=len(images), at_rates=at_rates)


def _curve(lesion_scores: np.ndarray, fp_scores: np.ndarray, n_images: int, fp_rates: Sequence[float]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[float, float]]:
    """Thresholds (descending), sensitivity and FP rate at each, and the sensitivity at each of ``fp_rates``, from
    every lesion's score (-inf: never found) and every false positive's score over ``n_images`` images."""
    n_lesions = len(lesion_scores)
    les = np.sort(lesion_scores)
    fps = np.sort(fp_scores)
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
    return thresholds, np.asarray(sens, dtype=np.float64), np.asarray(fp_rate, dtype=np.float64), at_rates


@dataclass(frozen=True)
class FrocInterval:
    """Percentile bootstrap intervals of the sensitivities at ``FP_RATES`` (and of their mean), resampling whole
    groups of images; for a paired comparison, of the difference A - B (``share_not_above``: the share of resamples
    in which A's sensitivity was not above B's, a one-sided bootstrap p-value for "A finds more")."""

    at_rates: dict[float, tuple[float, float]]
    mean: tuple[float, float]
    n_boot: int
    n_groups: int
    level: float
    share_not_above: dict[float, float] | None = None

    def to_dict(self) -> dict:
        out = {"sensitivity_ci_at_fp_per_image": {str(k): list(v) for k, v in self.at_rates.items()},
               "mean_sensitivity_ci": list(self.mean), "n_boot": self.n_boot, "n_groups": self.n_groups,
               "level": self.level}
        if self.share_not_above is not None:
            out["share_of_resamples_not_above"] = {str(k): v for k, v in self.share_not_above.items()}
        return out


def _group_members(n_images: int, groups: Sequence[str] | None) -> list[np.ndarray]:
    keys = np.asarray(list(groups) if groups is not None else np.arange(n_images)).astype(str)
    if len(keys) != n_images:
        raise ValueError(f"{n_images} images but {len(keys)} group keys")
    _, inverse = np.unique(keys, return_inverse=True)
    return [np.flatnonzero(inverse == g) for g in range(int(inverse.max()) + 1 if n_images else 0)]


def _resampled_rates(per_image: Sequence[tuple[np.ndarray, np.ndarray]], idx: np.ndarray,
                     fp_rates: Sequence[float]) -> np.ndarray:
    lesions = np.concatenate([per_image[i][0] for i in idx]) if len(idx) else np.zeros(0)
    fps = np.concatenate([per_image[i][1] for i in idx]) if len(idx) else np.zeros(0)
    return np.asarray(list(_curve(lesions, fps, len(idx), fp_rates)[3].values()))


def froc_bootstrap(images: Sequence[FrocImage], groups: Sequence[str] | None = None, *,
                   compare_to: Sequence[FrocImage] | None = None, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95, hit_iou: float = DEFAULT_HIT_IOU, label: str | None = None,
                   fp_rates: Sequence[float] = FP_RATES) -> FrocInterval:
    """Bootstrap intervals of the FROC sensitivities, resampling whole ``groups`` of images with replacement (each
    image its own group when None). Why groups: images that share a patient, or simulated images made on one real
    background, share that background's false positives (``training.evaluation.subgroups``' recurring ones); resampling
    them one by one would treat one structure seen twelve times as twelve independent errors and give too narrow an
    interval. With ``compare_to`` (a second model's predictions on the same images, in the same order) the interval
    is of the paired difference, this model minus that one, each resample drawing the same images for both."""
    members = _group_members(len(images), groups)
    a = _per_image(images, hit_iou, label)
    b = None
    if compare_to is not None:
        if len(compare_to) != len(images):
            raise ValueError(f"paired FROC needs both models on the same images: {len(images)} vs {len(compare_to)}")
        b = _per_image(compare_to, hit_iou, label)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(max(n_boot, 0)):
        pick = rng.integers(0, len(members), len(members)) if members else np.zeros(0, np.int64)
        idx = np.concatenate([members[g] for g in pick]) if len(pick) else np.zeros(0, np.int64)
        value = _resampled_rates(a, idx, fp_rates)
        if b is not None:
            value = value - _resampled_rates(b, idx, fp_rates)
        draws.append(value)
    rates = [float(r) for r in fp_rates]
    if not draws:
        nan = (float("nan"), float("nan"))
        return FrocInterval({r: nan for r in rates}, nan, 0, len(members), level)
    values = np.asarray(draws)
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha], axis=0)
    mean_low, mean_high = np.quantile(values.mean(axis=1), [alpha, 1 - alpha])
    share = {r: float(np.mean(values[:, k] <= 0)) for k, r in enumerate(rates)} if b is not None else None
    return FrocInterval({r: (float(low[k]), float(high[k])) for k, r in enumerate(rates)},
                        (float(mean_low), float(mean_high)), len(draws), len(members), level, share)
