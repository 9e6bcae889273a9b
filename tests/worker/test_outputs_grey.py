"""The PNGs' 8-bit grey is made block by block: the same bytes as the whole-image expression, without a float copy
of the whole image (a 64 Mpx image's is 256 MiB, for a picture shown at 1400 px)."""
from __future__ import annotations

import tracemalloc

import numpy as np

import worker.outputs
from worker.outputs import unit_to_grey


def test_blocks_give_the_whole_image_expression(monkeypatch):
    values = np.random.default_rng(0).normal(0.5, 0.4, (203, 77)).astype(np.float32)  # some outside [0, 1]
    monkeypatch.setattr(worker.outputs, "GREY_BLOCK_PIXELS", 77 * 3)
    assert np.array_equal(unit_to_grey(values), (np.clip(values, 0, 1) * 255).astype(np.uint8))


def test_grey_of_a_large_image_allocates_little_more_than_its_bytes(monkeypatch):
    values = np.random.default_rng(1).random((2000, 1000), dtype=np.float32)
    monkeypatch.setattr(worker.outputs, "GREY_BLOCK_PIXELS", 100_000)
    tracemalloc.start()
    try:
        grey = unit_to_grey(values)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert grey.dtype == np.uint8 and grey.shape == values.shape
    assert peak <= values.size * 1.5  # the uint8 result and a block; the expression held 9 bytes per pixel
