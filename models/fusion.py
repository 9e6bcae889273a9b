"""From boxes to verdicts: image, breast and exam level, and lesion matching (Lin et al. 2025, sections 2.6-2.7).

Every function here is pure: numbers in, numbers out, so each rule of the paper can be tested case by case.

Probabilities: ``malignancy_probability`` is P(malignant) used for ROC/AUC; ``probability`` is the confidence of the
stated label (P(malignant) for a malignant verdict, 1 - P(malignant) for a benign one), which is what the paper calls
the "prediction probability" or "confidence" in section 2.7.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

BENIGN = "benign"
MALIGNANT = "malignant"
LABEL_IDS = {1: BENIGN, 2: MALIGNANT}
LABEL_NAMES = {BENIGN: 1, MALIGNANT: 2}
# The released code keeps a box unless a box of the other class overlaps it by more than this IoU.
CROSS_CLASS_IOU = 0.5
# Section 2.7: a breast whose two views disagree is malignant when the malignant view's probability exceeds this.
BREAST_DISAGREEMENT_THRESHOLD = 0.5


@dataclass(frozen=True)
class ImageVerdict:
    """A benign / malignant verdict with its probabilities.

    Used for images, breasts and exams. For a breast or exam, ``image_id`` names the image that decided.
    """

    label: Literal["benign", "malignant"]
    malignancy_probability: float
    probability: float
    image_id: str = ""

    def __post_init__(self) -> None:
        if self.label not in (BENIGN, MALIGNANT):
            raise ValueError(f"label must be 'benign' or 'malignant', got {self.label!r}")
        for name in ("malignancy_probability", "probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")


def label_name(label: int | str) -> str:
    """'benign' or 'malignant' for a detector label id (1, 2) or name; anything else is an error."""
    if isinstance(label, str):
        if label not in LABEL_NAMES:
            raise ValueError(f"unknown lesion label {label!r}; expected 'benign' or 'malignant'")
        return label
    value = int(label)
    if value not in LABEL_IDS:
        raise ValueError(f"unknown lesion label id {value}; expected 1 (benign) or 2 (malignant)")
    return LABEL_IDS[value]


def box_malignancy(label: int | str, score: float, class_split: float | None = None) -> float:
    """A box's P(malignant): its carried class split P(malignant) / (P(benign) + P(malignant)) when the detector
    scores by lesion-ness (``models.box_scores``), else the paper's two-class reading of its class score (the score
    of a malignant box, one minus that of a benign one)."""
    if class_split is not None:
        return float(class_split)
    return float(score) if label_name(label) == MALIGNANT else 1.0 - float(score)


def _verdict(label: str, malignancy_probability: float, image_id: str) -> ImageVerdict:
    p = float(min(max(malignancy_probability, 0.0), 1.0))
    confidence = p if label == MALIGNANT else 1.0 - p
    return ImageVerdict(label=label, malignancy_probability=p, probability=confidence, image_id=image_id)  # type: ignore[arg-type]


def image_verdict(labels: Sequence[int | str], scores: Sequence[float], image_id: str = "") -> ImageVerdict:
    """Image level from the detector's boxes (section 2.6 and the FPNNet description).

    - any malignant box: the image is malignant and P(malignant) is the highest malignant box score;
    - only benign boxes: the image is benign and P(malignant) = 1 - (highest benign box score);
    - no box at all: benign with P(malignant) = 0.0. The paper does not state this case; an image in which the
      detector finds nothing above its score threshold has no evidence of a malignant lesion, and 0.0 keeps such
      images below every benign image that does carry a box in an ROC analysis.
    """
    if len(labels) != len(scores):
        raise ValueError(f"{len(labels)} labels but {len(scores)} scores")
    names = [label_name(label) for label in labels]
    malignant = [float(s) for n, s in zip(names, scores, strict=True) if n == MALIGNANT]
    benign = [float(s) for n, s in zip(names, scores, strict=True) if n == BENIGN]
    if malignant:
        return _verdict(MALIGNANT, max(malignant), image_id)
    if benign:
        return _verdict(BENIGN, 1.0 - max(benign), image_id)
    return _verdict(BENIGN, 0.0, image_id)


def breast_verdict(cc: ImageVerdict | None, mlo: ImageVerdict | None) -> ImageVerdict:
    """Breast level from the CC and MLO images (section 2.7); ``image_id`` of the result names the deciding image.

    - both views agree: the breast takes their label and the higher of the two confidences (the image with the higher
      ``probability`` decides);
    - the views disagree: the malignant view decides. If its P(malignant) > 0.5 the breast is malignant with that
      probability; otherwise the breast is benign and, as the paper says ("the prediction probability of the selected
      position image based on the final result"), takes the confidence of the benign view, which then decides;
    - one view only (the other missing or unreadable): the breast takes that view's verdict;
    - no view: an error, since there is nothing to decide from.
    """
    if cc is None and mlo is None:
        raise ValueError("a breast verdict needs at least one of the CC and MLO image verdicts")
    if cc is None or mlo is None:
        only = cc if cc is not None else mlo
        assert only is not None
        return only
    if cc.label == mlo.label:
        decider = cc if cc.probability >= mlo.probability else mlo
        return _verdict(decider.label, decider.malignancy_probability, decider.image_id)
    malignant_view, benign_view = (cc, mlo) if cc.label == MALIGNANT else (mlo, cc)
    if malignant_view.malignancy_probability > BREAST_DISAGREEMENT_THRESHOLD:
        return _verdict(MALIGNANT, malignant_view.malignancy_probability, malignant_view.image_id)
    return _verdict(BENIGN, benign_view.malignancy_probability, benign_view.image_id)


def exam_verdict(breasts: Sequence[ImageVerdict]) -> ImageVerdict:
    """Exam level: the most suspicious breast decides ("max over breasts").

    A malignant breast outranks every benign one; among breasts with the same label the higher P(malignant) wins.
    The exam takes that breast's label, probabilities and deciding image.
    """
    if not breasts:
        raise ValueError("an exam verdict needs at least one breast verdict")
    return max(breasts, key=lambda b: (b.label == MALIGNANT, b.malignancy_probability))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of boxes (x0, y0, x1, y1): (N, 4) x (M, 4) -> (N, M) float64.

    Degenerate boxes (zero area) have IoU 0 with everything.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


def suppress_cross_class(
    boxes: np.ndarray, labels: Sequence[int | str] | np.ndarray, scores: Sequence[float] | np.ndarray,
    iou: float = CROSS_CLASS_IOU,
) -> np.ndarray:
    """Indices (ascending) of the boxes kept by the released code's cross-class rule.

    Faster R-CNN runs NMS per class, so one lesion can come out as a benign and a malignant box at once. The rule: a
    benign box that overlaps any malignant box with IoU > ``iou`` is dropped; malignant boxes are always kept, whatever
    the scores (for a cancer-detection aid a missed malignancy costs more than a false alarm). ``scores`` is accepted
    so that callers pass the detector output unchanged; it does not change the outcome.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    names = [label_name(label) for label in (labels.tolist() if isinstance(labels, np.ndarray) else labels)]
    if len(names) != len(boxes) or len(scores) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes, {len(names)} labels and {len(scores)} scores must match")
    is_malignant = np.array([n == MALIGNANT for n in names], dtype=bool)
    keep = np.ones(len(boxes), dtype=bool)
    if is_malignant.any() and (~is_malignant).any():
        overlaps = box_iou(boxes[~is_malignant], boxes[is_malignant])
        keep[np.flatnonzero(~is_malignant)[(overlaps > iou).any(axis=1)]] = False
    return np.flatnonzero(keep)


def match_lesions(gt_boxes: np.ndarray, pred_boxes: np.ndarray) -> list[int | None]:
    """Lesion level (section 2.7): for each ground-truth box, the index of the predicted box with the highest IoU.

    A ground-truth box that no prediction overlaps (best IoU 0) is unmatched (None); the paper counts those
    separately. Several lesions may share one predicted box, as in the paper's search "across all predicted regions".
    Ties go to the lower index (the detector lists boxes by descending score within a class).
    """
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    pred = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    if len(pred) == 0:
        return [None] * len(gt)
    iou = box_iou(gt, pred)
    best = iou.argmax(axis=1)
    return [int(j) if iou[i, j] > 0 else None for i, j in enumerate(best)]
