"""The Grad-CAM of a tiled detector runs on a bounded number of pixels (on a 64 Mpx image it cost more than the
detection itself, growing faster than the pixels), keeps no backbone activation for a backward pass, makes its
three-channel normalised copy of the resized image only, and hands its map back on a grid of bounded size."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.explain import detector_cam
from models.pipeline import CAM_GRID_MAX_PIXELS, TILED_CAM_MAX_PIXELS, TILED_CAM_SCALE, Pipeline, cam_grid

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


def test_the_backbone_runs_without_autograd_on_the_resized_image(pipeline):
    """The gradient is taken at the FPN levels, so the backbone keeps nothing for a backward pass; and the detector's
    input transform normalises (three channels) the resized image, not the whole one."""
    detector = pipeline.detector
    grad_modes: list[bool] = []
    normalised: list[tuple[int, ...]] = []
    normalise = detector.transform.normalize

    def spy(x: torch.Tensor) -> torch.Tensor:
        normalised.append(tuple(x.shape))
        return normalise(x)

    handle = detector.backbone.register_forward_hook(lambda *_: grad_modes.append(torch.is_grad_enabled()))
    detector.transform.normalize = spy
    try:
        image = torch.rand(1, 600, 400)
        with torch.enable_grad(), pipeline._cam_scale(image):
            cam = detector_cam(detector, image, target_label=2, out_hw=(150, 100))
    finally:
        handle.remove()
        del detector.transform.normalize
    assert grad_modes == [False]
    assert normalised == [(3, 300, 200)]  # TILED_CAM_SCALE of 600 x 400
    assert cam.shape == (150, 100) and cam.min() >= 0.0 and cam.max() <= 1.0


def test_the_map_comes_back_on_the_image_grid_up_to_a_bound():
    assert cam_grid(2048, 1300) == (2048, 1300)
    assert cam_grid(2400, 3000) == (2400, 3000)  # 24 x 30 cm at 0.1 mm
    for height, width in [(8000, 8000), (9000, 4000)]:
        h, w = cam_grid(height, width)
        assert h * w <= CAM_GRID_MAX_PIXELS and abs(h / w - height / width) < 0.01
