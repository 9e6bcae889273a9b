"""Each rule of models.fusion, case by case, from the paper's text (sections 2.6-2.7)."""
from __future__ import annotations

import numpy as np
import pytest

from models.fusion import (
    ImageVerdict,
    box_iou,
    breast_verdict,
    exam_verdict,
    image_verdict,
    match_lesions,
    suppress_cross_class,
)


def verdict(label: str, p_malignant: float, image_id: str) -> ImageVerdict:
    confidence = p_malignant if label == "malignant" else 1.0 - p_malignant
    return ImageVerdict(label, p_malignant, confidence, image_id)  # type: ignore[arg-type]


# --- image level: "if the detection model detected a malignant box in an image, the image was malignant" ---------


def test_any_malignant_box_makes_the_image_malignant_with_the_highest_malignant_score() -> None:
    v = image_verdict([1, 2, 1, 2], [0.95, 0.4, 0.9, 0.6], image_id="img")
    assert v.label == "malignant"
    assert v.malignancy_probability == pytest.approx(0.6)
    assert v.probability == pytest.approx(0.6)
    assert v.image_id == "img"


def test_a_low_scoring_malignant_box_still_outranks_confident_benign_boxes() -> None:
    v = image_verdict(["benign", "malignant"], [0.99, 0.31])
    assert v.label == "malignant"
    assert v.malignancy_probability == pytest.approx(0.31)


def test_only_benign_boxes_give_benign_with_one_minus_the_highest_benign_score() -> None:
    v = image_verdict([1, 1, 1], [0.5, 0.8, 0.35])
    assert v.label == "benign"
    assert v.malignancy_probability == pytest.approx(0.2)
    assert v.probability == pytest.approx(0.8)


def test_no_boxes_is_benign_with_malignancy_probability_zero() -> None:
    v = image_verdict([], [])
    assert (v.label, v.malignancy_probability, v.probability) == ("benign", 0.0, 1.0)


def test_image_verdict_rejects_unknown_labels_and_length_mismatch() -> None:
    with pytest.raises(ValueError):
        image_verdict([0], [0.5])
    with pytest.raises(ValueError):
        image_verdict(["mass"], [0.5])
    with pytest.raises(ValueError):
        image_verdict([1, 2], [0.5])


# --- breast level (section 2.7) -----------------------------------------------------------------------------


def test_agreeing_malignant_views_take_the_higher_probability() -> None:
    b = breast_verdict(verdict("malignant", 0.7, "cc"), verdict("malignant", 0.9, "mlo"))
    assert (b.label, b.probability, b.malignancy_probability, b.image_id) == ("malignant", 0.9, 0.9, "mlo")


def test_agreeing_benign_views_take_the_higher_benign_confidence() -> None:
    b = breast_verdict(verdict("benign", 0.1, "cc"), verdict("benign", 0.4, "mlo"))
    assert b.label == "benign"
    assert b.probability == pytest.approx(0.9)
    assert b.malignancy_probability == pytest.approx(0.1)
    assert b.image_id == "cc"


def test_disagreeing_views_with_malignant_probability_above_half_give_malignant() -> None:
    b = breast_verdict(verdict("benign", 0.2, "cc"), verdict("malignant", 0.51, "mlo"))
    assert (b.label, b.image_id) == ("malignant", "mlo")
    assert b.probability == pytest.approx(0.51)


def test_disagreeing_views_with_malignant_probability_at_most_half_give_benign_from_the_benign_view() -> None:
    b = breast_verdict(verdict("malignant", 0.5, "cc"), verdict("benign", 0.3, "mlo"))
    assert (b.label, b.image_id) == ("benign", "mlo")
    assert b.probability == pytest.approx(0.7)
    assert b.malignancy_probability == pytest.approx(0.3)


def test_disagreement_is_decided_by_the_malignant_view_whichever_position_it_is() -> None:
    b = breast_verdict(verdict("malignant", 0.8, "cc"), verdict("benign", 0.05, "mlo"))
    assert (b.label, b.image_id, b.probability) == ("malignant", "cc", pytest.approx(0.8))


def test_a_breast_with_one_view_takes_that_view() -> None:
    only = verdict("malignant", 0.42, "cc")
    assert breast_verdict(only, None) == only
    assert breast_verdict(None, verdict("benign", 0.1, "mlo")).image_id == "mlo"
    with pytest.raises(ValueError):
        breast_verdict(None, None)


# --- exam level: max over breasts -------------------------------------------------------------------------


def test_exam_follows_the_most_suspicious_breast() -> None:
    left = verdict("benign", 0.2, "l")
    right = verdict("malignant", 0.6, "r")
    assert exam_verdict([left, right]) == right
    assert exam_verdict([verdict("benign", 0.1, "a"), verdict("benign", 0.3, "b")]).image_id == "b"


def test_a_malignant_breast_outranks_a_benign_breast_with_higher_malignancy_probability() -> None:
    odd_benign = verdict("benign", 0.7, "l")  # possible after a disagreement decided by the benign view
    malignant = verdict("malignant", 0.4, "r")
    assert exam_verdict([odd_benign, malignant]).label == "malignant"
    with pytest.raises(ValueError):
        exam_verdict([])


# --- IoU, cross-class suppression, lesion matching ------------------------------------------------------


def test_box_iou_known_values() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 10]], dtype=np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=np.float32)
    expected = np.array([[1.0, 50 / 150, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(box_iou(a, b), expected)
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)


def test_cross_class_drops_the_benign_box_overlapping_a_malignant_one_even_with_a_higher_score() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 11], [50, 50, 60, 60]], dtype=np.float32)
    kept = suppress_cross_class(boxes, [1, 2, 1], [0.9, 0.4, 0.8])
    assert kept.tolist() == [1, 2]


def test_cross_class_keeps_boxes_at_or_below_the_iou_limit_and_same_class_overlaps() -> None:
    # IoU exactly 0.5 is not "> 0.5": kept.
    boxes = np.array([[0, 0, 10, 10], [0, 0, 20, 10], [0, 0, 10, 10]], dtype=np.float32)
    assert suppress_cross_class(boxes[:2], [1, 2], [0.9, 0.9]).tolist() == [0, 1]
    # two benign boxes on top of each other are not this rule's business
    assert suppress_cross_class(boxes[[0, 2]], [1, 1], [0.9, 0.8]).tolist() == [0, 1]
    assert suppress_cross_class(boxes[:2], [1, 2], [0.9, 0.9], iou=0.4).tolist() == [1]


def test_match_lesions_takes_the_best_iou_and_leaves_non_overlapping_lesions_unmatched() -> None:
    gt = np.array([[0, 0, 10, 10], [100, 100, 110, 110], [40, 40, 50, 50]], dtype=np.float32)
    pred = np.array([[2, 2, 12, 12], [0, 0, 10, 9], [45, 45, 80, 80]], dtype=np.float32)
    assert match_lesions(gt, pred) == [1, None, 2]
    assert match_lesions(gt, np.zeros((0, 4))) == [None, None, None]
