"""The grayscale pipeline (PS3.4 N.2.1): Modality LUT, VOI (windows and LUT), polarity, For Processing, bit depths.

Expected values are worked out by hand from the formulas of PS3.3 C.11.2.1.2-3, not by calling the code under test.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from dicom_io.reader import read_mammogram
from tests.dicom_io.mg_factory import MG_FOR_PROCESSING, RLELossless, encoded, mg_dataset, ramp, voi_lut_sequence

PROBES = np.array([[0, 1535, 1536, 1792, 2047, 2048, 2304, 2559, 2560, 2561, 4095, 3000]], dtype=np.uint16)


def decode(ds) -> np.ndarray:
    image = read_mammogram(ds)
    assert image.pixels.dtype == np.float32 and image.pixels.min() >= 0.0 and image.pixels.max() <= 1.0
    return image.pixels.astype(np.float64)


def unit_range(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    return (values - values.min()) / (values.max() - values.min())


@pytest.mark.parametrize("bits", [10, 12, 14, 16])
def test_bits_stored_without_voi_span_zero_to_one(bits):
    stored = ramp(rows=40, columns=48, bits_stored=bits, seed=bits)
    pixels = decode(mg_dataset(stored, bits_stored=bits))
    np.testing.assert_allclose(pixels, stored / (2**bits - 1), atol=1e-6)


def test_twelve_bit_data_in_sixteen_bits_is_reported_and_stretched_to_full_range():
    stored = ramp(rows=96, columns=96, bits_stored=12, seed=5) // 2  # 11-bit data in a 16-bit container
    image = read_mammogram(mg_dataset(stored, bits_stored=16))
    assert "effective-bits-11-of-16" in image.meta.quirks
    assert "normalised-by-data-range" in image.meta.quirks
    assert image.pixels.max() == pytest.approx(1.0) and image.pixels.min() == 0.0


def test_multiplied_up_levels_are_measured_by_their_count():
    stored = (ramp(rows=96, columns=96, bits_stored=12, seed=6).astype(np.uint32) * 16).astype(np.uint16)
    image = read_mammogram(mg_dataset(stored, bits_stored=16))
    assert "effective-bits-12-of-16" in image.meta.quirks


def test_monochrome1_is_inverted_so_that_dense_is_bright():
    stored = ramp(rows=40, columns=48, bits_stored=12, seed=1)
    pixels = decode(mg_dataset(stored, photometric="MONOCHROME1"))
    np.testing.assert_allclose(pixels, 1.0 - stored / 4095.0, atol=1e-6)


def test_presentation_lut_inverse_inverts_monochrome2():
    stored = ramp(rows=40, columns=48, bits_stored=12, seed=1)
    image = read_mammogram(mg_dataset(stored, PresentationLUTShape="INVERSE"))
    np.testing.assert_allclose(image.pixels, 1.0 - stored / 4095.0, atol=1e-6)
    assert "presentation-lut-inverse-on-monochrome2" in image.meta.quirks


def test_monochrome1_with_inverse_shape_is_inverted_once():
    """In DX/MG objects INVERSE is what PS3.3 C.8.11.7 requires alongside MONOCHROME1: one inversion, not two."""
    stored = ramp(rows=40, columns=48, bits_stored=12, seed=1)
    pixels = decode(mg_dataset(stored, photometric="MONOCHROME1", PresentationLUTShape="INVERSE"))
    np.testing.assert_allclose(pixels, 1.0 - stored / 4095.0, atol=1e-6)


def test_linear_window_follows_ps33_c11212():
    pixels = decode(mg_dataset(PROBES, WindowCenter=2048, WindowWidth=1024))
    # bounds: x <= 2048 - 0.5 - 511.5 = 1536 -> 0 ; x > 2048 - 0.5 + 511.5 = 2559 -> 1 ; else (x - 2047.5) / 1023 + 0.5
    inside = lambda x: (x - 2047.5) / 1023 + 0.5  # noqa: E731
    expected = [0, 0, 0, inside(1792), inside(2047), inside(2048), inside(2304), inside(2559), 1, 1, 1, 1]
    np.testing.assert_allclose(pixels[0], expected, atol=1e-6)


def test_first_of_several_windows_is_used():
    pixels = decode(mg_dataset(PROBES, WindowCenter=[2048, 100], WindowWidth=[1024, 50], VOILUTFunction="LINEAR_EXACT"))
    assert pixels[0, 5] == pytest.approx(0.5)


def test_linear_exact_window_follows_ps33_c112132():
    pixels = decode(mg_dataset(PROBES, WindowCenter=2048, WindowWidth=1024, VOILUTFunction="LINEAR_EXACT"))
    # x <= 1536 -> 0 ; x > 2560 -> 1 ; else (x - 2048) / 1024 + 0.5
    expected = [0, 0, 0, 0.25, 0.5 - 1 / 1024, 0.5, 0.75, 0.5 + 511 / 1024, 1.0, 1, 1, 1]
    np.testing.assert_allclose(pixels[0], expected, atol=1e-6)


def test_sigmoid_window_follows_ps33_c112131():
    pixels = decode(mg_dataset(PROBES, WindowCenter=2048, WindowWidth=1024, VOILUTFunction="SIGMOID"))
    sigmoid = lambda x: 1 / (1 + math.exp(-4 * (x - 2048) / 1024))  # noqa: E731
    np.testing.assert_allclose(pixels[0], [sigmoid(float(x)) for x in PROBES[0]], atol=1e-6)
    assert pixels[0, 6] == pytest.approx(1 / (1 + math.exp(-1)), abs=1e-6)


def test_voi_lut_sequence_maps_through_the_table_and_is_preferred_to_the_window():
    table = np.arange(256) * 16  # 256 entries from stored value 1000, 12-bit output
    ds = mg_dataset(PROBES, VOILUTSequence=voi_lut_sequence(table, first_mapped=1000, bits=12), WindowCenter=2048,
                    WindowWidth=1024)
    image = read_mammogram(ds)
    # below the first mapped value -> first entry; above the last (1255) -> last entry (PS3.3 C.11.2.1.1)
    expected = np.array([0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255]) * 16 / 4095
    np.testing.assert_allclose(image.pixels[0], expected, atol=1e-6)
    inside = decode(mg_dataset(np.array([[999, 1000, 1100, 1255]], np.uint16),
                               VOILUTSequence=voi_lut_sequence(table, 1000, 12)))
    np.testing.assert_allclose(inside[0], [0, 0, 1600 / 4095, 4080 / 4095], atol=1e-6)
    assert "voi-lut-sequence-preferred-over-window" in image.meta.quirks


def test_rescale_is_applied_before_the_window():
    stored = np.array([[0, 1000, 1100, 1200, 4095]], np.uint16)
    # modality values 2 * s - 100: 2100 is the centre; LINEAR_EXACT width 400 -> (v - 2100) / 400 + 0.5
    pixels = decode(mg_dataset(stored, RescaleSlope=2, RescaleIntercept=-100, WindowCenter=2100, WindowWidth=400,
                               VOILUTFunction="LINEAR_EXACT"))
    np.testing.assert_allclose(pixels[0], [0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_signed_pixels_are_normalised_by_their_range():
    stored = (ramp(rows=40, columns=48, bits_stored=12, seed=2).astype(np.int32) - 2048).astype(np.int16)
    pixels = decode(mg_dataset(stored, bits_stored=12))
    np.testing.assert_allclose(pixels, (stored.astype(np.float64) + 2048) / 4095, atol=1e-6)


def test_for_processing_image_is_log_converted_and_inverted():
    """Raw detector values are linear in exposure; attenuation is linear in its logarithm."""
    stored = ramp(rows=40, columns=48, bits_stored=14, seed=4)
    ds = mg_dataset(stored, bits_stored=14, sop_class=MG_FOR_PROCESSING, photometric="MONOCHROME1", WindowCenter=100,
                    WindowWidth=10)
    image = read_mammogram(ds)
    expected = 1.0 - np.log1p(stored.astype(np.float64)) / math.log1p(16383)
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)
    assert {"for-processing-log-converted", "voi-ignored-for-processing"} <= set(image.meta.quirks)
    assert image.meta.presentation_intent == "FOR PROCESSING"


def test_for_processing_already_logarithmic_is_not_logged_again():
    stored = ramp(rows=40, columns=48, bits_stored=12, seed=4)
    ds = mg_dataset(stored, sop_class=MG_FOR_PROCESSING, PixelIntensityRelationship="LOG")
    image = read_mammogram(ds)
    np.testing.assert_allclose(image.pixels, stored / 4095.0, atol=1e-6)
    assert "for-processing-log-converted" not in image.meta.quirks


def test_pixel_padding_becomes_background_and_is_left_out_of_the_range():
    stored = ramp(rows=40, columns=48, bits_stored=12, seed=7) // 2  # 0..2047
    stored[:, :10] = 4095  # padding, white in MONOCHROME1 terms
    pixels = decode(mg_dataset(stored, photometric="MONOCHROME1", PixelPaddingValue=4095))
    assert np.all(pixels[:, :10] == 0.0)
    np.testing.assert_allclose(pixels[:, 10:], 1.0 - unit_range(stored[:, 10:]), atol=1e-6)


def test_compressed_monochrome1_with_window_combines_all_steps():
    stored = PROBES.repeat(4, axis=0)
    ds = mg_dataset(stored, photometric="MONOCHROME1", WindowCenter=2048, WindowWidth=1024,
                    VOILUTFunction="LINEAR_EXACT")
    pixels = decode(encoded(ds, RLELossless))
    np.testing.assert_allclose(pixels[2, 3:7], [0.75, 0.5 + 1 / 1024, 0.5, 0.25], atol=1e-6)
