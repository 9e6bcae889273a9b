"""Turning stored pixels into the [0, 1] image holds few whole-image temporaries at once: a 64 Mpx image's Modality
LUT output alone is 512 MiB in float64, so every extra copy counts (the 80 Mpx limit allows such images)."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pydicom
import pytest

from dicom_io.pixels import to_unit_image, window
from tests.dicom_io import net_fixtures as nf

SIDE = 1500


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
def test_unit_image_peak_memory_stays_near_two_float64_copies(tmp_path, voi):
    ds = pydicom.dcmread(nf.write_mg(tmp_path / "big.dcm", rows=SIDE, columns=SIDE))
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0  # as most mammograms say: the Modality LUT gives float64
    if voi:
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
    else:
        for keyword in ("WindowCenter", "WindowWidth"):
            if keyword in ds:
                delattr(ds, keyword)
    # float64 from the Modality LUT (8 B), one float64 working array (8 B), masks (1 B), the float32 result (4 B)
    # do not all live at once; the expression-by-expression version held about 27 B per pixel
    assert _peak_bytes_per_pixel(ds) <= 21.0


def test_in_place_window_gives_the_standard_values():
    values = np.array([-10.0, 0.0, 1000.0, 2047.5, 2048.0, 4000.0, 5000.0])
    expected = np.clip((values - (2048 - 0.5)) / (4096 - 1) + 0.5, 0.0, 1.0)
    expected = np.where(values <= 2048 - 0.5 - (4096 - 1) / 2, 0.0, expected)
    expected = np.where(values > 2048 - 0.5 + (4096 - 1) / 2, 1.0, expected)
    before = values.copy()
    assert np.array_equal(window(values, 2048, 4096), expected)
    assert np.array_equal(values, before)  # the caller's array is not touched
    assert np.array_equal(window(values, 2048, 4096, "LINEAR_EXACT"), np.clip((values - 2048) / 4096 + 0.5, 0, 1))
