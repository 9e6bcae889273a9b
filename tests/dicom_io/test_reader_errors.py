"""Every input the reader refuses gives a typed error with its C-STORE status and a message that names the problem."""
from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest

from dicom_io.errors import (
    CorruptDataset,
    ImageTooLarge,
    NoPixelData,
    NotMammogram,
    TruncatedFile,
    UnsupportedImage,
    UnsupportedTransferSyntax,
)
from dicom_io.reader import check_instance, read_mammogram, read_meta
from tests.dicom_io.mg_factory import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    dcmcjpeg_encoded,
    encoded,
    mg_dataset,
    ramp,
    to_bytes,
)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
def stored() -> np.ndarray:
    return ramp(rows=40, columns=48, bits_stored=12, seed=9)


def test_other_modality_is_refused_unless_accepted(stored):
    ds = mg_dataset(stored, sop_class=CT_IMAGE_STORAGE, modality="CT")
    with pytest.raises(NotMammogram, match="'CT'") as caught:
        read_meta(to_bytes(ds))
    assert caught.value.status == 0xA900
    with pytest.raises(NotMammogram):
        check_instance(ds)
    assert read_mammogram(ds, accept_non_mg=True).meta.modality == "CT"


def test_mammography_sop_class_without_modality_is_accepted(stored):
    assert read_meta(mg_dataset(stored, modality=None)).modality == "MG"


def test_missing_pixel_data_is_refused_by_header_and_full_reads(stored):
    ds = mg_dataset(stored)
    del ds.PixelData
    for read in (read_meta, read_mammogram):
        with pytest.raises(NoPixelData) as caught:
            read(to_bytes(ds))
        assert caught.value.status == 0xA900
    with pytest.raises(NoPixelData):
        check_instance(ds)


def test_header_only_read_sees_the_pixel_data_without_decoding_it(stored):
    """read_meta stops before Pixel Data, yet still knows that it is there (a file with none fails above)."""
    assert read_meta(encoded(mg_dataset(stored), JPEG2000Lossless)).columns == 48


def test_jpeg_baseline_is_an_unsupported_transfer_syntax_named_by_uid():
    ds = mg_dataset(ramp(rows=40, columns=48, bits_stored=8, seed=1).astype(np.uint8), bits_stored=8)
    data = dcmcjpeg_encoded(ds, "+eb")  # a real lossy 8-bit JPEG baseline file
    for read in (read_meta, read_mammogram):
        with pytest.raises(UnsupportedTransferSyntax, match=r"1\.2\.840\.10008\.1\.2\.4\.50") as caught:
            read(data)
        assert caught.value.status == 0xC000


def test_image_over_the_pixel_budget_is_refused(stored):
    with pytest.raises(ImageTooLarge, match="1920 pixels") as caught:
        read_mammogram(to_bytes(mg_dataset(stored)), max_pixels=1000)
    assert caught.value.status == 0xA700
    assert read_meta(mg_dataset(stored), max_pixels=1920).rows == 40


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless,
                                    DeflatedExplicitVRLittleEndian],
                         ids=lambda uid: uid.name)
def test_file_cut_inside_pixel_data_is_truncated(stored, syntax):
    data = encoded(mg_dataset(stored), syntax)
    cut = data[: len(data) - 200]
    for read in (read_meta, read_mammogram):
        with pytest.raises(TruncatedFile) as caught:
            read(cut)
        assert caught.value.status == 0xC000


def test_file_cut_inside_a_header_element_is_truncated(stored):
    data = to_bytes(mg_dataset(stored, Manufacturer="Example Medical Systems"))
    middle = data.index(b"Example Medical") + 7  # pydicom itself accepts a value cut short here
    for read in (read_meta, read_mammogram):
        with pytest.raises(TruncatedFile, match="header"):
            read(data[:middle])


def test_not_a_dicom_file_is_corrupt(tmp_path):
    path = tmp_path / "report.txt"
    path.write_bytes(b"this is a radiology report, not an image\n" * 10)
    with pytest.raises(CorruptDataset, match="not a DICOM file"):
        read_meta(path)


def test_damaged_compressed_stream_is_corrupt(stored):
    data = bytearray(encoded(mg_dataset(stored), JPEG2000Lossless))
    marker = bytes(data).index(b"\xff\x4f\xff\x51")  # J2K SOC + SIZ at the start of the codestream
    data[marker : marker + 40] = b"\x00" * 40
    with pytest.raises(CorruptDataset, match="cannot be decoded") as caught:
        read_mammogram(bytes(data))
    assert caught.value.status == 0xC000


def test_missing_uid_is_corrupt(stored):
    ds = mg_dataset(stored)
    del ds.StudyInstanceUID
    with pytest.raises(CorruptDataset, match="StudyInstanceUID"):
        read_meta(ds)


def test_window_width_zero_is_corrupt(stored):
    with pytest.raises(CorruptDataset, match="Window Width"):
        read_mammogram(mg_dataset(stored, WindowCenter=100, WindowWidth=0))


def test_colour_image_is_unsupported(stored):
    rgb = np.repeat((stored // 16).astype(np.uint8)[..., None], 3, axis=2)
    ds = mg_dataset(rgb[..., 0], bits_stored=8)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = rgb.tobytes()
    with pytest.raises(UnsupportedImage, match="RGB") as caught:
        read_mammogram(to_bytes(ds))
    assert caught.value.status == 0xA900


def test_multi_frame_image_is_unsupported(stored):
    ds = mg_dataset(stored)
    ds.NumberOfFrames = 2
    ds.PixelData = np.stack([stored, stored]).tobytes()
    with pytest.raises(UnsupportedImage, match="2 frames"):
        read_meta(to_bytes(ds))


def test_dataset_without_transfer_syntax_is_corrupt(stored):
    ds = mg_dataset(stored)
    del ds.file_meta.TransferSyntaxUID
    with pytest.raises(CorruptDataset, match="Transfer Syntax"):
        check_instance(ds)


def test_file_without_preamble_is_read_and_recorded():
    stored = ramp(rows=40, columns=48, bits_stored=12, seed=1)
    ds = mg_dataset(stored)
    ds.file_meta = pydicom.dataset.FileMetaDataset()  # written as a bare data set: implicit VR, no DICM prefix
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, implicit_vr=True, little_endian=True)
    image = read_mammogram(buffer.getvalue())
    assert {"no-part10-preamble", "transfer-syntax-inferred-from-encoding"} <= set(image.meta.quirks)
    np.testing.assert_allclose(image.pixels, stored / 4095.0, atol=1e-6)
