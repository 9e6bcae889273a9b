"""Tiled inference: the detector on overlapping tiles at native resolution, boxes merged back into one image.

Why: whole-image mode (the paper's, ``models.detector``) scales a standardised mammogram of about 2000 x 4500 px
to 1333 px high, so a 0.2 mm calcification at 0.05 mm pixels (4 px) becomes about 1 px and may vanish. A detector
trained on crops at native resolution sees it at full size when run tile by tile.

How:

1. :func:`tile_grid`: tiles of ``tile`` x ``tile`` px (clipped to the image when it is smaller) whose starts step
   by ``tile - overlap``; the last tile along an axis is moved back to end on the image edge, so every tile has the
   same shape, no tile leaves the image, and neighbours overlap by at least ``overlap`` px. The tile is part of the
   reading: the backbone's receptive field spans it, so the detector's scores change with the tile's size; a
   detector is read in the tiles its operating point was chosen with.
2. :func:`detect_tiled`: ``models.detector.detect`` on batches of tiles with torchvision's internal resize set to
   the tile's own size (scale 1: native resolution), boxes shifted back to image pixels.
3. :func:`merge_tile_detections`: class-aware NMS at ``nms_thresh`` removes the duplicates that both tiles of an
   overlap saw whole, the released code's cross-class suppression runs as in ``detect``
   (``models.fusion.suppress_cross_class``), and the ``detections_per_img`` best boxes are kept. Box pieces are not
   joined across seams: a cluster is smaller than the overlap, so a tile sees it whole, and joining pieces chained
   neighbouring boxes into image-sized ones (``docs/experiments/``, tile seams).
4. :class:`TilingSpec` with ``hflip``: steps 1-3 on the image and on its mirror, the two readings fused box by box
   (``models.flip_fusion``), then the thresholds, NMS and cross-class suppression of step 3.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch
from torchvision.ops import batched_nms

from models.detector import Detections, DetectorConfig, apply_thresholds, detect
from models.flip_fusion import READING_SCORE_FLOOR, fuse_readings, mirror
from models.fusion import suppress_cross_class

Tile = tuple[int, int, int, int]  # y0, x0, y1, x1 (end exclusive), image pixels

#: the tiling a crops-trained detector is read with where its record names none (``TilingSpec``, the trainer's
#: ``tile_overlap`` and ``tile_batch``): tiles of ``TILE`` px overlapping by ``OVERLAP`` px, ``TILE_BATCH`` tiles
#: per forward pass (the geometry of the shipped detectors)
TILE, OVERLAP, TILE_BATCH = 512, 64, 4


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def tile_grid(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Tiles ``(y0, x0, y1, x1)`` covering a ``height`` x ``width`` image, row by row, all of one shape (module
    docstring, step 1)."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height} x {width}")
    if tile < 1:
        raise ValueError(f"tile must be a positive number of pixels, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must lie in [0, tile), got overlap {overlap} for tile {tile}")
    stride = tile - overlap
    th, tw = min(tile, height), min(tile, width)
    return [(y, x, y + th, x + tw) for y in _starts(height, tile, stride) for x in _starts(width, tile, stride)]


def _empty() -> Detections:
    return Detections(boxes=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64), scores=np.zeros(0, np.float32))








def merge_tile_detections(per_tile: Sequence[tuple[Tile, Detections]], config: DetectorConfig) -> Detections:
    """One image's detections from its tiles' (tile-local boxes): shifted to image pixels, class-aware NMS at
    ``config.nms_thresh``, cross-class suppression when the config asks for it, the best
    ``config.detections_per_img`` kept. Pure: no model involved."""
    pieces = []
    for tile, det in per_tile:
        if len(det) == 0:
            continue
        y0, x0, _, _ = tile
        shifted = np.asarray(det.boxes, np.float32).reshape(-1, 4) + np.array([x0, y0, x0, y0], np.float32)
        pieces.append(Detections(boxes=shifted, labels=np.asarray(det.labels, np.int64),
                                 scores=np.asarray(det.scores, np.float32), malignancy=det.malignancy))
    if not pieces:
        return _empty()
    split = all(p.malignancy is not None for p in pieces)  # the class split travels when every tile has it
    merged = Detections(boxes=np.concatenate([p.boxes for p in pieces]),
                        labels=np.concatenate([p.labels for p in pieces]),
                        scores=np.concatenate([p.scores for p in pieces]),
                        malignancy=np.concatenate([p.malignancy for p in pieces]).astype(np.float32) if split else None)
    return _suppress(merged, config)


def _suppress(merged: Detections, config: DetectorConfig) -> Detections:
    """Class-aware NMS at ``config.nms_thresh``, cross-class suppression when the config asks for it, the
    ``config.detections_per_img`` best boxes by falling score."""
    if len(merged) == 0:
        return _empty()
    keep = batched_nms(torch.from_numpy(merged.boxes), torch.from_numpy(merged.scores),
                       torch.from_numpy(merged.labels), config.nms_thresh).numpy()
    merged = merged.take(keep)
    if config.cross_class_suppression and len(merged):
        merged = merged.take(suppress_cross_class(merged.boxes, merged.labels, merged.scores,
                                                  iou=config.cross_class_iou))
    return merged.take(np.argsort(-merged.scores, kind="stable")[: config.detections_per_img])


def detect_tiled(model: torch.nn.Module, image: torch.Tensor, config: DetectorConfig, tile: int = TILE,
                 overlap: int = OVERLAP, batch: int = TILE_BATCH) -> Detections:
    """Detections of one image tensor ``(1, H, W)`` (or ``(3, H, W)``) in [0, 1], found tile by tile at native
    resolution and merged (module docstring); boxes in the tensor's pixels, like ``detect``."""
    _check_image(image)
    height, width = int(image.shape[1]), int(image.shape[2])
    per_tile = read_tiles(model, image, config, tile_grid(height, width, tile, overlap), batch=batch)
    return merge_tile_detections(per_tile, config)


def _check_image(image: torch.Tensor) -> None:
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected an image tensor shaped (1, H, W) or (3, H, W), got {tuple(image.shape)}")


def read_tiles(model: torch.nn.Module, image: torch.Tensor, config: DetectorConfig, tiles: Sequence[Tile], *,
               batch: int = TILE_BATCH) -> list[tuple[Tile, Detections]]:
    """``detect`` on each of ``tiles`` (all of one shape) of ``image``, ``batch`` at a time at native scale, without
    cross-class suppression (it runs once on the merged boxes, as in whole-image mode): each tile with its boxes in
    tile pixels."""
    _check_image(image)
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if not tiles:
        return []
    th, tw = tiles[0][2] - tiles[0][0], tiles[0][3] - tiles[0][1]
    # ``detect`` sets the model's thresholds and proposal counts to the tile's config: put the caller's back after
    saved_config = getattr(model, "mccad_config", None)
    per_tile: list[tuple[Tile, Detections]] = []
    try:
        with native_scale(model, th, tw):
            for start in range(0, len(tiles), batch):
                chunk = tiles[start:start + batch]
                crops = [image[:, y0:y1, x0:x1] for (y0, x0, y1, x1) in chunk]
                per_tile += list(zip(chunk, detect(model, crops, _tile_config(config)), strict=True))
    finally:
        if saved_config is not None:
            apply_thresholds(model, saved_config)
    return per_tile


@contextmanager
def native_scale(model: torch.nn.Module, height: int, width: int, scale: float = 1.0) -> Iterator[None]:
    """Within the block, torchvision's transform resizes ``height`` x ``width`` inputs by ``scale`` (1: native
    resolution; it scales by min(min_size / short side, max_size / long side)). Tiles run at scale 1; a crops-trained
    detector's Grad-CAM of a whole image runs at a fixed fraction of it (``models.pipeline``), not at the whole-image
    model's ``min_size`` / ``max_size``, which would shrink a mammogram tenfold."""
    transform = model.transform
    saved = (transform.min_size, transform.max_size)
    transform.min_size = (max(1, round(min(height, width) * scale)),)
    transform.max_size = max(1, round(max(height, width) * scale))
    try:
        yield
    finally:
        transform.min_size, transform.max_size = saved


@dataclass(frozen=True)
class TilingSpec:
    """How a crops-trained detector runs on whole images: its manifest's ``input_spec["tiling"]``, read by
    the pipeline, by evaluation and by the benchmark alike."""

    tile: int = TILE
    overlap: int = OVERLAP
    batch: int = TILE_BATCH
    # test-time flip (models.flip_fusion): the mirrored image is read too and both readings fused; twice the time
    hflip: bool = False

    def __post_init__(self) -> None:
        tile_grid(max(1, self.tile), max(1, self.tile), self.tile, self.overlap)  # refuses bad settings
        if self.batch < 1:
            raise ValueError(f"batch must be at least 1, got {self.batch}")

    def grid(self, height: int, width: int) -> list[Tile]:
        """The tiles this spec reads a ``height`` x ``width`` image in."""
        return tile_grid(height, width, self.tile, self.overlap)

    def detect(self, model: torch.nn.Module, image: torch.Tensor, config: DetectorConfig,
               batch: int | None = None) -> Detections:
        """``detect_tiled`` with these settings (``batch`` overrides the tiles per forward pass); with ``hflip``,
        on the image and its mirror, the two readings fused and then thresholded as ``config`` says."""
        batch = batch or self.batch
        if not self.hflip:
            return detect_tiled(model, image, config, tile=self.tile, overlap=self.overlap, batch=batch)
        reading = replace(config, score_thresh=min(config.score_thresh, READING_SCORE_FLOOR),
                          cross_class_suppression=False)
        height, width = int(image.shape[-2]), int(image.shape[-1])
        tiles = self.grid(height, width)
        first = read_tiles(model, image, reading, tiles, batch=batch)
        mirrored = read_tiles(model, torch.flip(image, dims=[-1]), reading, tiles, batch=batch)
        second = mirror(merge_tile_detections(mirrored, reading), width)
        fused = fuse_readings([merge_tile_detections(first, reading), second],
                              iou=config.nms_thresh)
        return _suppress(fused.take(np.flatnonzero(fused.scores >= config.score_thresh)), config)


def _tile_config(config: DetectorConfig) -> DetectorConfig:
    """The config one tile runs with: no cross-class suppression yet (it runs once on the merged boxes, as in
    whole-image mode)."""
    return replace(config, cross_class_suppression=False)
