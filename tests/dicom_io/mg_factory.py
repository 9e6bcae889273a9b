"""Small MG instances for reader tests, built with pydicom and compressed for real.

RLE, JPEG-LS and JPEG 2000 use pydicom's encoders (pydicom, pyjpegls, pylibjpeg-openjpeg); JPEG lossless
process 14 has no Python encoder, so it goes through dcmtk's ``dcmcjpeg``; deflate and big endian are written by
pydicom's file writer. The pixel arrays are chosen by each test, so decoded values can be compared exactly.
"""
from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_ENCODED_BY_PYDICOM = {RLELossless, JPEGLSLossless, JPEG2000Lossless, JPEG2000}
_ENCODED_BY_DCMTK = {JPEGLossless: "+el", JPEGLosslessSV1: "+e1"}


def ramp(rows: int = 48, columns: int = 40, bits_stored: int = 12, seed: int = 0) -> np.ndarray:
    """A uint16 test image that spans 0 .. 2**bits_stored - 1, with texture so that codecs have work to do."""
    rng = np.random.default_rng(seed)
    top = 2**bits_stored - 1
    base = np.linspace(0, top, rows * columns).reshape(rows, columns)
    noisy = base + rng.integers(-3, 4, size=base.shape)
    image = np.clip(np.rint(noisy), 0, top).astype(np.uint16)
    image.flat[0], image.flat[-1] = 0, top
    return image


def mg_dataset(
    pixels: np.ndarray,
    *,
    bits_stored: int = 12,
    photometric: str = "MONOCHROME2",
    sop_class: str = MG_FOR_PRESENTATION,
    modality: str | None = "MG",
    image_laterality: str | None = "L",
    view_position: str | None = "CC",
    **attributes: object,
) -> Dataset:
    """An uncompressed (explicit VR little endian) single-frame MG instance holding ``pixels`` as stored values.
    Extra keyword attributes are set as DICOM keywords (``WindowCenter=...``); ``None`` leaves one out."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientID = "TEST-0001"
    ds.PatientName = "Test^Patient"
    if modality is not None:
        ds.Modality = modality
    if image_laterality is not None:
        ds.ImageLaterality = image_laterality
    if view_position is not None:
        ds.ViewPosition = view_position
    ds.PresentationIntentType = "FOR PROCESSING" if sop_class == MG_FOR_PROCESSING else "FOR PRESENTATION"
    ds.Manufacturer = "mccad-tests"
    ds.PixelSpacing = [0.1, 0.1]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16 if pixels.dtype.itemsize == 2 else 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.PixelData = pixels.tobytes()
    for keyword, value in attributes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def voi_lut_sequence(lut: np.ndarray, first_mapped: int, bits: int) -> Dataset:
    """A VOI LUT Sequence of one item (PS3.3 C.11.2): LUT Descriptor [entries, first mapped value, bits per entry]."""
    item = Dataset()
    item.LUTDescriptor = [len(lut), first_mapped, bits]
    item.LUTData = [int(v) for v in lut]
    item["LUTDescriptor"].VR = "US"
    item["LUTData"].VR = "US"
    return Sequence([item])


def to_bytes(ds: Dataset) -> bytes:
    """The PS3.10 file of ``ds`` in its file meta's transfer syntax."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def encoded(ds: Dataset, transfer_syntax: str) -> bytes:
    """``ds`` (uncompressed) written as a PS3.10 file in ``transfer_syntax``, compressing for real."""
    ds = ds.copy()
    ds.file_meta = ds.file_meta.copy()
    if transfer_syntax in _ENCODED_BY_PYDICOM:
        kwargs = {"j2k_cr": [20]} if transfer_syntax == JPEG2000 else {}
        ds.compress(transfer_syntax, **kwargs)
        return to_bytes(ds)
    if transfer_syntax in _ENCODED_BY_DCMTK:
        return dcmcjpeg_encoded(ds, _ENCODED_BY_DCMTK[transfer_syntax])
    if transfer_syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        return to_bytes(ds)
    if transfer_syntax == ExplicitVRBigEndian:
        pixels = np.frombuffer(ds.PixelData, dtype="<u2" if ds.BitsAllocated == 16 else "u1")
        ds.PixelData = pixels.astype(">u2" if ds.BitsAllocated == 16 else "u1").tobytes()
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True, little_endian=False, implicit_vr=False)
        return buffer.getvalue()
    raise ValueError(f"mg_factory cannot encode {transfer_syntax}")


def dcmcjpeg_encoded(ds: Dataset, option: str) -> bytes:
    """``ds`` compressed by dcmtk's dcmcjpeg with ``option`` (+el process 14, +e1 SV1, +eb baseline)."""
    tool = shutil.which("dcmcjpeg")
    if tool is None:
        raise RuntimeError("dcmtk's dcmcjpeg is needed to encode JPEG lossless test data (apt install dcmtk)")
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "in.dcm", Path(tmp) / "out.dcm"
        source.write_bytes(to_bytes(ds))
        subprocess.run([tool, option, str(source), str(target)], check=True, capture_output=True, timeout=60)
        return target.read_bytes()


def transfer_syntax_of(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID)
