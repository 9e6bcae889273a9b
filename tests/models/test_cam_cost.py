"""The Grad-CAM of a tiled detector runs on a bounded number of pixels: its whole-image pass holds every activation
for the gradient, so on a 64 Mpx image it cost more than the detection itself, growing faster than the pixels."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.pipeline import TILED_CAM_MAX_PIXELS, TILED_CAM_SCALE, Pipeline

DEFAULT = Path(__file__).resolve().parents[2] / "models" / "weights" / "default"


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    pipe = Pipeline.from_model_dir(DEFAULT, device="cpu", explain=True, runtime="eager")
    assert pipe.tiling is not None, "the shipped detector is crops-trained (tiled)"
    return pipe


def _explained_pixels(pipe: Pipeline, height: int, width: int) -> int:
    with pipe._cam_scale(torch.empty((1, height, width), device="meta")):
        return pipe.detector.transform.min_size[0] * pipe.detector.transform.max_size


@pytest.mark.parametrize("side", [4000, 8000, 9000])
def test_a_large_image_is_explained_on_a_bounded_number_of_pixels(pipeline, side):
    assert _explained_pixels(pipeline, side, side) <= TILED_CAM_MAX_PIXELS * 1.01


def test_a_mammogram_of_ordinary_size_is_explained_as_before(pipeline):
    short, long = 1300, 2048
    assert _explained_pixels(pipeline, long, short) == round(short * TILED_CAM_SCALE) * round(long * TILED_CAM_SCALE)
    before = (pipeline.detector.transform.min_size, pipeline.detector.transform.max_size)
    _explained_pixels(pipeline, 8000, 8000)
    assert (pipeline.detector.transform.min_size, pipeline.detector.transform.max_size) == before  # restored
