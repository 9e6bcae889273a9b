"""Each supported transfer syntax, really encoded, decodes to the pixels that went in (PS3.5 Annex A)."""
from __future__ import annotations

import numpy as np
import pytest

from dicom_io.reader import SUPPORTED_TRANSFER_SYNTAXES, read_mammogram, read_meta
from tests.dicom_io.mg_factory import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    encoded,
    mg_dataset,
    ramp,
    transfer_syntax_of,
)

LOSSLESS = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLossless,
    JPEGLosslessSV1,
]


@pytest.fixture(scope="module")
def stored() -> np.ndarray:
    return ramp(rows=72, columns=64, bits_stored=12, seed=3)


def test_every_supported_syntax_is_tested():
    assert set(SUPPORTED_TRANSFER_SYNTAXES) == {str(uid) for uid in LOSSLESS} | {str(JPEG2000)}


@pytest.mark.parametrize("syntax", LOSSLESS, ids=lambda uid: uid.name)
def test_lossless_syntax_decodes_to_the_exact_pixels(stored, syntax):
    data = encoded(mg_dataset(stored, bits_stored=12), syntax)
    assert transfer_syntax_of(data) == syntax  # really written in that syntax, not silently left uncompressed
    image = read_mammogram(data)
    expected = (stored.astype(np.float64) - stored.min()) / (stored.max() - stored.min())
    assert image.pixels.dtype == np.float32 and image.pixels.shape == stored.shape
    np.testing.assert_allclose(image.pixels, expected, atol=1e-6)
    assert read_meta(data).rows == 72


def test_lossy_jpeg2000_decodes_close_to_the_pixels(stored):
    data = encoded(mg_dataset(stored, bits_stored=12), JPEG2000)
    assert transfer_syntax_of(data) == JPEG2000
    image = read_mammogram(data)
    expected = (stored.astype(np.float64) - stored.min()) / (stored.max() - stored.min())
    error = np.abs(image.pixels - expected)
    assert 0 < error.max() < 0.2  # lossy: not exact, yet the same image
    assert error.mean() < 0.01
