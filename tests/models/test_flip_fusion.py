"""Test-time flip (``models.flip_fusion``, ``TilingSpec(hflip=True)``): boxes of the mirrored reading map back, the two
readings fuse box by box (agreeing boxes keep their score, a box only one reading drew is halved, boxes of one
reading or of two classes never fuse), and a real tiny FPNNet read with the flip answers a mirrored image with the
mirror of its boxes, which a single reading does not."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from models.detector import Detections, DetectorConfig, build_detector
from models.flip_fusion import READING_SCORE_FLOOR, fuse_readings, mirror
from models.tiling import TilingSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


def _dets(boxes, labels, scores, malignancy=None) -> Detections:
    return Detections(boxes=np.asarray(boxes, np.float32).reshape(-1, 4), labels=np.asarray(labels, np.int64),
                      scores=np.asarray(scores, np.float32),
                      malignancy=None if malignancy is None else np.asarray(malignancy, np.float32))


def test_mirror_maps_a_box_of_the_mirrored_image_back_and_is_its_own_inverse():
    det = _dets([[10, 5, 30, 25], [0, 0, 100, 40]], [1, 2], [0.9, 0.4])
    back = mirror(det, 100)
    np.testing.assert_allclose(back.boxes, [[70, 5, 90, 25], [0, 0, 100, 40]])
    assert back.labels.tolist() == [1, 2] and back.scores.tolist() == pytest.approx([0.9, 0.4])
    np.testing.assert_allclose(mirror(back, 100).boxes, det.boxes)
    np.testing.assert_allclose(det.boxes, [[10, 5, 30, 25], [0, 0, 100, 40]])  # the caller's boxes untouched


def test_boxes_both_readings_drew_are_averaged_and_a_box_one_drew_is_halved():
    first = _dets([[0, 0, 10, 10], [50, 50, 60, 60]], [1, 2], [0.8, 0.4])
    second = _dets([[2, 0, 12, 10], [20, 20, 30, 30]], [1, 1], [0.4, 0.5])
    fused = fuse_readings([first, second], iou=0.3)
    assert fused.scores.tolist() == pytest.approx([0.6, 0.25, 0.2])  # (0.8 + 0.4) / 2, 0.5 / 2, 0.4 / 2
    assert fused.labels.tolist() == [1, 1, 2]
    # corners: the members' score-weighted mean (x0 = (0 * 0.8 + 2 * 0.4) / 1.2)
    np.testing.assert_allclose(fused.boxes, [[2 / 3, 0, 10 + 2 / 3, 10], [20, 20, 30, 30], [50, 50, 60, 60]],
                               rtol=1e-6)
    assert fused.malignancy is None


def test_boxes_of_one_reading_classes_apart_or_overlapping_too_little_stay_apart():
    # two boxes of the same reading are the detector's own two answers: never one
    same = fuse_readings([_dets([[0, 0, 10, 10], [1, 0, 11, 10]], [1, 1], [0.9, 0.8]), _dets([], [], [])], iou=0.3)
    assert same.scores.tolist() == pytest.approx([0.45, 0.4])
    # the same place, another class
    classes = fuse_readings([_dets([[0, 0, 10, 10]], [1], [0.6]), _dets([[0, 0, 10, 10]], [2], [0.6])], iou=0.3)
    assert sorted(classes.labels.tolist()) == [1, 2] and classes.scores.tolist() == pytest.approx([0.3, 0.3])
    # IoU 0.25 < 0.3: two places
    apart = fuse_readings([_dets([[0, 0, 10, 10]], [1], [0.6]), _dets([[6, 0, 16, 10]], [1], [0.6])], iou=0.3)
    assert len(apart) == 2
    joined = fuse_readings([_dets([[0, 0, 10, 10]], [1], [0.6]), _dets([[6, 0, 16, 10]], [1], [0.6])], iou=0.2)
    assert len(joined) == 1 and joined.scores[0] == pytest.approx(0.6)


def test_a_box_joins_the_fused_box_it_overlaps_most():
    first = _dets([[0, 0, 10, 10], [8, 0, 18, 10]], [1, 1], [0.9, 0.8])
    second = _dets([[7, 0, 17, 10]], [1], [0.5])  # IoU 0.18 with the first box, 0.82 with the second
    fused = fuse_readings([first, second], iou=0.1)
    assert fused.scores.tolist() == pytest.approx([0.65, 0.45])  # (0.8 + 0.5) / 2 and 0.9 / 2


def test_the_class_split_of_lesion_scores_is_the_score_weighted_mean():
    fused = fuse_readings([_dets([[0, 0, 10, 10]], [2], [0.75], [0.9]), _dets([[0, 0, 10, 10]], [2], [0.25], [0.5])],
                          iou=0.3)
    assert fused.malignancy.tolist() == pytest.approx([0.8])  # (0.9 * 0.75 + 0.5 * 0.25) / 1.0
    # a reading without the split (class scores) leaves the fused boxes without it
    mixed = fuse_readings([_dets([[0, 0, 10, 10]], [2], [0.75], [0.9]), _dets([[0, 0, 10, 10]], [2], [0.25])],
                          iou=0.3)
    assert mixed.malignancy is None


def test_fusion_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="at least one"):
        fuse_readings([], iou=0.3)
    with pytest.raises(ValueError, match="iou"):
        fuse_readings([_dets([], [], [])], iou=0.0)
    assert len(fuse_readings([_dets([], [], []), _dets([], [], [])], iou=0.3)) == 0


def _tiny_model() -> tuple[torch.nn.Module, DetectorConfig]:
    torch.manual_seed(0)
    config = DetectorConfig(min_size=128, max_size=128, score_thresh=0.05, detections_per_img=30,
                            rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50)
    return build_detector(config), config


def test_with_the_flip_a_mirrored_image_gets_the_mirror_of_the_boxes():
    model, config = _tiny_model()
    torch.manual_seed(1)
    image = torch.rand(1, 300, 500)
    mirrored = torch.flip(image, dims=[-1])
    flip = TilingSpec(tile=192, overlap=32, batch=4, hflip=True)
    passes: list[int] = []
    hook = model.backbone.register_forward_pre_hook(lambda _m, args: passes.append(len(args[0])))
    try:
        dets = flip.detect(model, image, config)
    finally:
        hook.remove()
    assert passes == [4, 2, 4, 2]  # 6 tiles, 4 per pass: the image, then its mirror
    of_mirror = flip.detect(model, mirrored, config)
    assert len(dets) > 0 and len(of_mirror) == len(dets)
    order = np.lexsort((mirror(of_mirror, 500).boxes[:, 0], of_mirror.scores))
    expected = np.lexsort((dets.boxes[:, 0], dets.scores))
    np.testing.assert_allclose(mirror(of_mirror, 500).boxes[order], dets.boxes[expected], atol=1e-3)
    np.testing.assert_allclose(of_mirror.scores[order], dets.scores[expected], atol=1e-6)
    assert (dets.scores >= config.score_thresh).all() and len(dets) <= config.detections_per_img
    # one reading is not mirror-symmetric: the random network sees the two images differently
    plain = TilingSpec(tile=192, overlap=32, batch=4)
    once, once_mirrored = plain.detect(model, image, config), plain.detect(model, mirrored, config)
    back = mirror(once_mirrored, 500)
    assert len(once) != len(back) or not np.allclose(
        once.boxes[np.lexsort(once.boxes.T)], back.boxes[np.lexsort(back.boxes.T)], atol=1e-3)


def test_the_flip_applies_the_callers_threshold_after_fusing_readings_made_lower():
    # evaluation reads a detector at a low threshold and applies the operating point later: the boxes the pipeline
    # shows at the operating point must be among those, with the same scores
    model, config = _tiny_model()
    config = dataclasses.replace(config, detections_per_img=1000)  # no cap binds: the readings are the same
    image = torch.rand(1, 200, 260, generator=torch.Generator().manual_seed(2))
    spec = TilingSpec(tile=192, overlap=32, batch=4, hflip=True)
    low = spec.detect(model, image, dataclasses.replace(config, score_thresh=READING_SCORE_FLOOR,
                                                        cross_class_suppression=False))
    strict = spec.detect(model, image, config)
    assert len(low) > len(strict)
    assert len(strict) > 0 and (strict.scores >= config.score_thresh).all()
    # every box at the caller's threshold is a fused box of the low reading with the same score
    for box, score in zip(strict.boxes, strict.scores, strict=True):
        same = np.flatnonzero(np.all(np.abs(low.boxes - box) < 1e-3, axis=1))
        assert len(same) and low.scores[same].max() == pytest.approx(score, abs=1e-6)
