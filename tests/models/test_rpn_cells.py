"""The RPN's proposal budgets per cell (``models.rpn_cells``): one cell as large as the input filters exactly as
torchvision does; smaller cells each keep their own best proposals, which a single budget gives to the brightest
region alone."""
from __future__ import annotations

import pytest
import torch

from models.detector import DetectorConfig, build_detector
from models.rpn_cells import filter_proposals_in_cells, proposal_cells

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


def _rpn(pre: int, post: int):
    model = build_detector(DetectorConfig(min_size=64, max_size=64, rpn_pre_nms_top_n_test=pre,
                                          rpn_post_nms_top_n_test=post, fpn_channels=16, box_head_size=32))
    return model.eval()


def _random_proposals(n_per_level: list[int], height: int, width: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = sum(n_per_level)
    xy = torch.rand(1, n, 2, generator=g) * torch.tensor([width, height])
    wh = 4 + torch.rand(1, n, 2, generator=g) * 40
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=2)
    return boxes, torch.randn(1, n, generator=g) * 3


def test_one_cell_over_the_whole_input_filters_as_torchvision_does():
    model = _rpn(pre=50, post=30)
    levels = [400, 200, 100, 40, 10]
    boxes, logits = _random_proposals(levels, 200, 300)
    ours_boxes, ours_scores = filter_proposals_in_cells(model.rpn, 10_000, boxes, logits, [(200, 300)], levels)
    ref_boxes, ref_scores = model.rpn.filter_proposals(boxes, logits, [(200, 300)], levels)
    assert len(ref_boxes[0]) == 30
    torch.testing.assert_close(ours_scores[0], ref_scores[0])
    torch.testing.assert_close(ours_boxes[0], ref_boxes[0])


def test_each_cell_keeps_its_own_best_proposals():
    model = _rpn(pre=1000, post=5)
    levels = [400, 0, 0, 0, 0]
    boxes, logits = _random_proposals(levels, 200, 400, seed=1)
    logits[0, boxes[0, :, 0] < 150] += 20  # the left of the image outscores everything on the right
    (one,), _ = model.rpn.filter_proposals(boxes, logits, [(200, 400)], levels)
    (cells,), scores = filter_proposals_in_cells(model.rpn, 200, boxes, logits, [(200, 400)], levels)
    centre_x = lambda b: (b[:, 0] + b[:, 2]) / 2  # noqa: E731
    assert len(one) == 5 and (centre_x(one) < 200).all()  # one budget: all five from the bright left
    # two cells of 200 px: five each, the right one's too, best first overall
    assert len(cells) == 10 and (centre_x(cells) >= 200).sum() == 5
    assert torch.all(scores[0][:-1] >= scores[0][1:])


def test_the_block_swaps_the_filtering_in_and_out():
    model = _rpn(pre=50, post=30)
    with proposal_cells(model, None):
        assert "filter_proposals" not in vars(model.rpn)
    with proposal_cells(model, 128):
        assert "filter_proposals" in vars(model.rpn)
    assert "filter_proposals" not in vars(model.rpn)
    with pytest.raises(ValueError, match="positive"):
        with proposal_cells(model, 0):
            pass
    with pytest.raises(RuntimeError):
        with proposal_cells(model, 128):
            raise RuntimeError("a failing forward pass")
    assert "filter_proposals" not in vars(model.rpn)  # restored all the same
