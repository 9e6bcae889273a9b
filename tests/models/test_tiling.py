"""Tiled inference: the grid covers the image with the asked overlap, seam pieces are joined, duplicates removed, and
a real (tiny, random) FPNNet runs tile by tile at native resolution."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.detector import Detections, DetectorConfig, build_detector
from models.tiling import TilingSpec, detect_tiled, merge_tile_detections, read_tiles, tile_grid


def _dets(boxes, labels, scores) -> Detections:
    return Detections(boxes=np.asarray(boxes, np.float32).reshape(-1, 4), labels=np.asarray(labels, np.int64),
                      scores=np.asarray(scores, np.float32))


@pytest.mark.parametrize("height,width,tile,overlap", [
    (300, 500, 128, 32), (1000, 700, 256, 64), (512, 512, 256, 0), (97, 1301, 200, 50), (100, 90, 800, 128),
    (801, 800, 800, 128),
])
def test_grid_covers_every_pixel_with_the_requested_overlap(height, width, tile, overlap):
    tiles = tile_grid(height, width, tile, overlap)
    cover = np.zeros((height, width), np.int32)
    for y0, x0, y1, x1 in tiles:
        assert 0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width  # clipped to the image
        assert (y1 - y0, x1 - x0) == (min(tile, height), min(tile, width))  # one shape for every tile
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1
    for axis, size in ((0, height), (1, width)):
        starts = sorted({t[axis] for t in tiles})
        ends = sorted({t[axis + 2] for t in tiles})
        assert starts[0] == 0 and ends[-1] == size
        for end, next_start in zip(ends, starts[1:], strict=False):
            assert end - next_start >= overlap  # neighbours share at least ``overlap`` pixels
        if size > tile:
            assert len(starts) == -(-(size - overlap) // (tile - overlap))  # no more tiles than needed


def test_the_tiling_spec_refuses_what_the_grid_cannot_lay():
    assert len(TilingSpec(tile=512, overlap=64).grid(2048, 1300)) == 15  # the tiles of the shipped detector
    with pytest.raises(ValueError, match="overlap"):
        TilingSpec(tile=64, overlap=64)
    with pytest.raises(ValueError, match="batch"):
        TilingSpec(tile=64, overlap=8, batch=0)


def test_grid_refuses_impossible_settings():
    with pytest.raises(ValueError, match="overlap"):
        tile_grid(100, 100, 64, 64)
    with pytest.raises(ValueError, match="tile"):
        tile_grid(100, 100, 0, 0)
    with pytest.raises(ValueError, match="size"):
        tile_grid(0, 100, 64, 8)


CONFIG = DetectorConfig(score_thresh=0.0, nms_thresh=0.3)
# two tiles side by side: columns [0, 256) and [192, 448) of a 256 x 448 image, 64 px of overlap
LEFT, RIGHT = (0, 0, 256, 256), (0, 192, 256, 448)




def test_pieces_of_different_lesions_or_classes_stay_apart():
    merged = merge_tile_detections([
        (LEFT, _dets([[200, 10, 256, 40], [200, 150, 256, 190]], [2, 2], [0.7, 0.6])),
        # the first right piece lies beside the first left one but at other rows (a different lesion);
        # the second has the other class
        (RIGHT, _dets([[20, 38, 80, 70], [10, 150, 70, 190]], [2, 1], [0.5, 0.4])),
    ], DetectorConfig(score_thresh=0.0, nms_thresh=0.3, cross_class_suppression=False))
    assert len(merged) == 4


def test_duplicates_of_a_lesion_seen_whole_by_two_tiles_are_suppressed():
    # lesion x 200-240 lies inside the overlap, away from both tiles' inner edges: NMS keeps the better box
    merged = merge_tile_detections([(LEFT, _dets([[200, 60, 240, 90]], [2], [0.55])),
                                    (RIGHT, _dets([[9, 61, 49, 91]], [2], [0.75]))], CONFIG)
    assert len(merged) == 1
    np.testing.assert_allclose(merged.boxes[0], [201, 61, 241, 91])



def test_cross_class_suppression_and_the_detection_cap_apply_after_merging():
    merged = merge_tile_detections([(LEFT, _dets([[10, 10, 60, 60]], [1], [0.9])),
                                    (RIGHT, _dets([[100, 10, 150, 60], [20, 100, 50, 130]], [2, 2], [0.3, 0.2])),
                                    ((0, 0, 256, 256), _dets([[12, 10, 62, 60]], [2], [0.4]))], CONFIG)
    # the benign box overlapping the malignant one (IoU > 0.5) is dropped, as the released code does
    assert sorted(merged.labels.tolist()) == [2, 2, 2]
    assert list(merged.scores) == sorted(merged.scores, reverse=True)
    capped = merge_tile_detections([(LEFT, _dets([[i * 20, 0, i * 20 + 10, 10] for i in range(10)], [2] * 10,
                                                  np.linspace(0.9, 0.1, 10)))],
                                   DetectorConfig(score_thresh=0.0, detections_per_img=3))
    assert len(capped) == 3 and capped.scores[0] == pytest.approx(0.9)
    assert len(merge_tile_detections([(LEFT, _dets([], [], []))], CONFIG)) == 0


def test_the_class_split_of_lesion_boxes_travels_with_them():
    """Under lesion scores each box carries P(malignant | lesion): NMS and the cross-class suppression keep each
    survivor's own; tiles that carry none give a merge that carries none."""
    def split(boxes, labels, scores, malignancy):
        return Detections(boxes=np.asarray(boxes, np.float32).reshape(-1, 4), labels=np.asarray(labels, np.int64),
                          scores=np.asarray(scores, np.float32), malignancy=np.asarray(malignancy, np.float32))

    merged = merge_tile_detections([
        (LEFT, split([[230, 50, 256, 80], [10, 10, 60, 60]], [1, 1], [0.9, 0.7], [0.2, 0.1])),
        (RIGHT, split([[38, 52, 108, 81], [20, 100, 50, 130]], [1, 2], [0.5, 0.8], [0.4, 0.95])),
        ((0, 0, 256, 256), split([[12, 10, 62, 60]], [2], [0.6], [0.7])),  # drops the benign box at 10-60
    ], CONFIG)
    got = {tuple(np.round(b).astype(int)): (int(label), float(m)) for b, label, m in
           zip(merged.boxes, merged.labels, merged.malignancy, strict=True)}
    assert got == {(230, 50, 256, 80): (1, pytest.approx(0.2)),  # NMS kept the 0.9 piece with its own split
                   (212, 100, 242, 130): (2, pytest.approx(0.95)), (12, 10, 62, 60): (2, pytest.approx(0.7))}
    assert [merged.malignancy_probability(k) for k in range(len(merged))] == merged.malignancy.tolist()
    mixed = merge_tile_detections([(LEFT, split([[10, 10, 60, 60]], [2], [0.9], [0.8])),
                                   (RIGHT, _dets([[20, 100, 50, 130]], [2], [0.8]))], CONFIG)
    assert len(mixed) == 2 and mixed.malignancy is None
    assert mixed.malignancy_probability(1) == pytest.approx(0.8)  # class scores: the malignant box's score


def test_tiny_detector_runs_tile_by_tile_at_native_resolution():
    torch.manual_seed(0)
    config = DetectorConfig(min_size=128, max_size=128, score_thresh=0.0, detections_per_img=20,
                            rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50)
    model = build_detector(config)
    seen: list[tuple[int, int]] = []
    hook = model.backbone.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[-2:])))
    image = torch.rand(1, 300, 500)
    try:
        dets = detect_tiled(model, image, config, tile=192, overlap=32, batch=4)
    finally:
        hook.remove()
    # 2 x 3 tiles of 192 x 192 in two batches, each fed at its own size (not scaled to min_size 128)
    assert seen == [(192, 192), (192, 192)]
    assert model.transform.min_size == (128,) and model.transform.max_size == 128  # restored
    assert model.mccad_config == config
    assert 0 < len(dets) <= 20
    assert dets.boxes.shape == (len(dets), 4)
    assert read_tiles(model, image, config, []) == []
    assert (dets.boxes[:, 0] >= 0).all() and (dets.boxes[:, 2] <= 500).all()
    assert (dets.boxes[:, 1] >= 0).all() and (dets.boxes[:, 3] <= 300).all()
    assert (dets.boxes[:, 2] > dets.boxes[:, 0]).all() and (dets.boxes[:, 3] > dets.boxes[:, 1]).all()
    assert set(dets.labels.tolist()) <= {1, 2}


def test_pieces_of_one_box_cut_by_a_seam_stay_apart_and_only_nms_runs() -> None:
    # a cluster fits in the overlap, so the tiles see it whole: box pieces are not joined across seams
    pieces = [(LEFT, _dets([[100, 100, 256, 140]], [2], [0.6])), (RIGHT, _dets([[0, 98, 158, 141]], [2], [0.8]))]
    apart = merge_tile_detections(pieces, CONFIG)
    assert len(apart) == 2 and apart.scores.tolist() == pytest.approx([0.8, 0.6])
    np.testing.assert_allclose(apart.boxes, [[192, 98, 350, 141], [100, 100, 256, 140]])  # IoU 0.24 < NMS 0.3
    # a box both tiles saw whole in the overlap is still one box after NMS
    same = merge_tile_detections([(LEFT, _dets([[200, 10, 240, 50]], [1], [0.7])),
                                  (RIGHT, _dets([[8, 10, 48, 50]], [1], [0.9]))], CONFIG)
    assert len(same) == 1 and same.scores[0] == pytest.approx(0.9)

