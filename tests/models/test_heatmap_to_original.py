"""A map of the model input goes back onto the original grid with one allocation of the original's size, however the
image was flipped, cropped and resampled; a coarse map (a Grad-CAM on a grid of bounded size) goes straight there."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import models.preprocess
from models.preprocess import CoordinateMap, resize_bilinear

ORIGINAL = (1200, 900)


def _cmap(flipped: bool, input_shape: tuple[int, int]) -> CoordinateMap:
    return CoordinateMap(original_shape=ORIGINAL, flipped=flipped, row_start=100, row_stop=1100, col_start=0,
                         col_stop=700, input_shape=input_shape)


def _peak_bytes(fn) -> tuple[np.ndarray, int]:
    tracemalloc.start()
    try:
        out = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, peak


@pytest.mark.parametrize("flipped", [False, True])
@pytest.mark.parametrize("input_shape", [(1000, 700), (500, 350)])
def test_one_original_sized_array_is_all_it_allocates(monkeypatch, flipped, input_shape):
    monkeypatch.setattr(models.preprocess, "RESAMPLE_BLOCK_PIXELS", 20_000)  # blocks well below the image's size
    cmap = _cmap(flipped, input_shape)
    heat = np.random.default_rng(0).random(input_shape, dtype=np.float32)
    out, peak = _peak_bytes(lambda: cmap.heatmap_to_original(heat))
    original_bytes = ORIGINAL[0] * ORIGINAL[1] * 4
    # the result and resampling blocks; resampling the whole crop, then flipping a copy, held three times as much
    assert peak <= 1.25 * original_bytes
    assert out.shape == ORIGINAL and out.dtype == np.float32


@pytest.mark.parametrize("flipped", [False, True])
def test_a_coarse_map_lands_where_the_input_sized_one_would(flipped):
    cmap = _cmap(flipped, (1000, 700))
    rows, cols = np.mgrid[0:100, 0:70]
    coarse = (np.exp(-((rows - 30) ** 2 + (cols - 20) ** 2) / 200.0)).astype(np.float32)  # one blob, smooth
    direct = cmap.heatmap_to_original(coarse, coarse=True)
    via_input = cmap.heatmap_to_original(resize_bilinear(coarse, cmap.input_shape))
    assert direct.shape == ORIGINAL
    assert np.abs(direct - via_input).max() < 0.01
    assert np.unravel_index(np.argmax(direct), ORIGINAL) == np.unravel_index(np.argmax(via_input), ORIGINAL)
    assert direct[:100].max() == 0.0 and direct[1100:].max() == 0.0  # nothing outside the crop


def test_an_input_sized_map_must_have_the_input_shape_unless_said_coarse():
    cmap = _cmap(False, (1000, 700))
    with pytest.raises(ValueError):
        cmap.heatmap_to_original(np.zeros((100, 70), np.float32))
    with pytest.raises(ValueError):
        cmap.heatmap_to_original(np.zeros((0, 70), np.float32), coarse=True)
