"""The RPN's proposal budget spent per cell of the image, as it is when the image is read in tiles of that size.

Why: torchvision's RPN keeps the ``pre_nms_top_n`` best anchors of each FPN level and, after its NMS, the
``post_nms_top_n`` best proposals of the whole input. Read in 512 px tiles (``models.tiling``), every 512 px of the
image gets that budget of its own; read in one large tile, the whole image competes for one budget, and bright breast
texture, skin folds and vessels can take the places that faint calcification clusters had. A detector validated on
small tiles and read in large ones keeps its per-region budget with ``proposal_cell`` set to the small tile's side.

What it does not restore: the backbone's receptive field spans a tile, so its features depend on the tile they are
computed in (at the centre of a 512 px tile, the shipped detector's FPN features differ from those at the same place
of the whole image by 9 % (P2) to 27 % (P5) of their mean magnitude). Measured on the shipped detector with the
test-time flip, validation seed 52, FROC sensitivity at 1 FP per image: 0.97 in fixed 512 px tiles; in tiles of at
most 2048 px 0.85, with the counts scaled to the tile's area 0.88, with 512 px cells 0.91
(``docs/experiments/flip-even-tiles-062.md``). A detector is read in the tiles it was validated in.

How: within :func:`proposal_cells`, the RPN's ``filter_proposals`` ranks each proposal against those of its own level
whose centres fall in the same ``cell`` x ``cell`` px square of the input, keeps the best ``pre_nms_top_n`` of each,
runs the NMS per level and cell, and keeps the best ``post_nms_top_n`` proposals of each cell over all levels: the
filtering of one tile per cell, without reading the pixels of the overlaps twice. The backbone's features and the box
head are untouched; only which proposals reach the box head changes.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch
from torch import Tensor
from torchvision.ops import boxes as box_ops


def _rank_within(groups: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    """Indices sorted by group, then by falling score, and each one's rank within its group (0: its best)."""
    by_score = torch.argsort(scores, descending=True, stable=True)
    order = by_score[torch.argsort(groups[by_score], stable=True)]
    sorted_groups = groups[order]
    counts = torch.bincount(sorted_groups)
    starts = torch.cumsum(counts, 0) - counts
    return order, torch.arange(len(order), device=groups.device) - starts[sorted_groups]


def _cells_of(boxes: Tensor, cell: int, width: int) -> Tensor:
    """The cell of each box's centre, numbered row by row over an input ``width`` px wide."""
    columns = -(-width // cell)
    cx = ((boxes[:, 0] + boxes[:, 2]) / 2).clamp(min=0).div(cell, rounding_mode="floor").long()
    cy = ((boxes[:, 1] + boxes[:, 3]) / 2).clamp(min=0).div(cell, rounding_mode="floor").long()
    return cy * columns + cx.clamp(max=columns - 1)


def filter_proposals_in_cells(rpn: torch.nn.Module, cell: int, proposals: Tensor, objectness: Tensor,
                              image_shapes: list[tuple[int, int]],
                              num_anchors_per_level: list[int]) -> tuple[list[Tensor], list[Tensor]]:
    """torchvision's ``RegionProposalNetwork.filter_proposals`` with its two budgets per ``cell`` (module
    docstring); same arguments and results."""
    num_images = proposals.shape[0]
    objectness = objectness.detach().reshape(num_images, -1)
    levels = torch.cat([torch.full((n,), k, dtype=torch.int64, device=proposals.device)
                        for k, n in enumerate(num_anchors_per_level)])
    n_levels = len(num_anchors_per_level)
    pre_n, post_n = rpn.pre_nms_top_n(), rpn.post_nms_top_n()
    final_boxes, final_scores = [], []
    for boxes, logits, (height, width) in zip(proposals, objectness, image_shapes):
        boxes = box_ops.clip_boxes_to_image(boxes, (height, width))
        group = _cells_of(boxes, cell, width) * n_levels + levels
        order, rank = _rank_within(group, logits)
        top = order[rank < pre_n]  # the best pre_nms_top_n of each level in each cell
        boxes, scores, group = boxes[top], torch.sigmoid(logits[top]), group[top]
        keep = box_ops.remove_small_boxes(boxes, rpn.min_size)
        boxes, scores, group = boxes[keep], scores[keep], group[keep]
        keep = torch.where(scores >= rpn.score_thresh)[0]
        boxes, scores, group = boxes[keep], scores[keep], group[keep]
        keep = box_ops.batched_nms(boxes, scores, group, rpn.nms_thresh)  # per level and cell, by falling score
        boxes, scores, group = boxes[keep], scores[keep], group[keep]
        order, rank = _rank_within(group.div(n_levels, rounding_mode="floor"), scores)
        best = order[rank < post_n]  # the best post_nms_top_n of each cell over all levels
        best = best[torch.argsort(scores[best], descending=True, stable=True)]
        final_boxes.append(boxes[best])
        final_scores.append(scores[best])
    return final_boxes, final_scores


@contextmanager
def proposal_cells(model: torch.nn.Module, cell: int | None) -> Iterator[None]:
    """Within the block, ``model``'s RPN spends its proposal budgets per ``cell`` x ``cell`` px of input (None: as
    torchvision does, per input). Inference only: training keeps torchvision's filtering."""
    if cell is None:
        yield
        return
    if cell < 1:
        raise ValueError(f"a proposal cell must be a positive number of pixels, got {cell}")
    rpn = model.rpn
    rpn.filter_proposals = partial(filter_proposals_in_cells, rpn, cell)
    try:
        yield
    finally:
        del rpn.filter_proposals
