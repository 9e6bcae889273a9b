"""Turning stored pixels into the [0, 1] image holds no whole-image temporary: a 64 Mpx image's Modality LUT output
alone is 512 MiB in float64 (the 80 Mpx limit allows such images), so the conversion works through blocks of rows and
the float32 result is its only allocation of the image's size."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pydicom
import pytest

import dicom_io.pixels
from dicom_io.pixels import to_unit_image, window
from tests.dicom_io import net_fixtures as nf
from tests.dicom_io.mg_factory import MG_FOR_PROCESSING, mg_dataset, ramp

SIDE = 1500
#: pixels per block in these tests: a tenth of the image, so that blocks are many and the image's size still shows
BLOCK = SIDE * SIDE // 10


def _peak_bytes_per_pixel(ds: pydicom.Dataset) -> float:
    stored = ds.pixel_array
    tracemalloc.start()
    try:
        unit = to_unit_image(stored, ds, [])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert unit.dtype == np.float32 and unit.shape == stored.shape
    return peak / stored.size


@pytest.mark.parametrize("voi", [True, False])
def test_unit_image_peak_memory_is_the_float32_result_and_one_block(tmp_path, monkeypatch, voi):
    monkeypatch.setattr(dicom_io.pixels, "_CHUNK", BLOCK)
    ds = pydicom.dcmread(nf.write_mg(tmp_path / "big.dcm", rows=SIDE, columns=SIDE))
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0  # as most mammograms say: the Modality LUT gives float64
    if voi:
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
    else:
        for keyword in ("WindowCenter", "WindowWidth"):
            if keyword in ds:
                delattr(ds, keyword)
    # the float32 result (4 B) and, per block of a tenth of the image, float64 working copies (about 2 B per pixel
    # of the image); a whole-image pass held about 21 B per pixel
    assert _peak_bytes_per_pixel(ds) <= 7.0


def test_for_processing_and_padding_stay_in_blocks_too(monkeypatch):
    monkeypatch.setattr(dicom_io.pixels, "_CHUNK", BLOCK)
    stored = ramp(rows=SIDE, columns=SIDE, bits_stored=14, seed=2)
    ds = mg_dataset(stored, bits_stored=14, sop_class=MG_FOR_PROCESSING, PixelPaddingValue=0)
    # the padding mask (1 B) joins the result and the blocks
    assert _peak_bytes_per_pixel(ds) <= 8.0


def test_blocks_give_every_pixel_the_value_of_a_whole_image_pass(monkeypatch):
    stored = ramp(rows=61, columns=17, bits_stored=12, seed=4)
    cases = [dict(WindowCenter=1500, WindowWidth=700), dict(photometric="MONOCHROME1"),
             dict(sop_class=MG_FOR_PROCESSING, PixelPaddingValue=0), dict(RescaleSlope=2.5, RescaleIntercept=-100)]
    for attributes in cases:
        ds = mg_dataset(stored, **attributes)
        whole_quirks, block_quirks = [], []
        whole = to_unit_image(stored, ds, whole_quirks)
        with monkeypatch.context() as m:
            m.setattr(dicom_io.pixels, "_CHUNK", 40)  # blocks of two rows, the last one short
            blocks = to_unit_image(stored, ds, block_quirks)
        assert np.array_equal(whole, blocks) and whole_quirks == block_quirks, attributes


def test_in_place_window_gives_the_standard_values():
    values = np.array([-10.0, 0.0, 1000.0, 2047.5, 2048.0, 4000.0, 5000.0])
    expected = np.clip((values - (2048 - 0.5)) / (4096 - 1) + 0.5, 0.0, 1.0)
    expected = np.where(values <= 2048 - 0.5 - (4096 - 1) / 2, 0.0, expected)
    expected = np.where(values > 2048 - 0.5 + (4096 - 1) / 2, 1.0, expected)
    before = values.copy()
    assert np.array_equal(window(values, 2048, 4096), expected)
    assert np.array_equal(values, before)  # the caller's array is not touched
    assert np.array_equal(window(values, 2048, 4096, "LINEAR_EXACT"), np.clip((values - 2048) / 4096 + 0.5, 0, 1))
