"""Read one MG instance into typed metadata (cheap, header only) or a float32 image in [0, 1] (bright = dense).

Used by the SCP (validate on receipt), the worker (group and decode) and ``mccad inspect``. Every problem with the
input becomes one of the :mod:`dicom_io.errors` classes, which carry the C-STORE status to answer with and a message
an IT person can act on (no patient data in it). Pixel transforms live in :mod:`dicom_io.pixels`, header facts
(laterality, view, exam key, archive quirks) in :mod:`dicom_io.mg_metadata`.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicom_io.errors import (
    CorruptDataset,
    DicomInputError,
    ImageTooLarge,
    NoPixelData,
    NotMammogram,
    TruncatedFile,
    UnsupportedImage,
    UnsupportedTransferSyntax,
)
from dicom_io.mg_metadata import (
    MAMMOGRAPHY_SOP_CLASSES,
    SECONDARY_CAPTURE_SOP_CLASSES,
    exam_key_of,
    pixel_spacing_mm,
    read_header_facts,
)
from dicom_io.pixels import VoiError, to_unit_image
from dicom_io.uids import is_valid_uid
from models.types import ImageMeta, MammogramImage

__all__ = [
    "SUPPORTED_TRANSFER_SYNTAXES",
    "check_instance",
    "exam_key_of",
    "is_dicom_file",
    "read_mammogram",
    "read_meta",
]

Source = str | os.PathLike | bytes | Dataset

#: Transfer syntaxes we decode (PS3.5 Annex A), all with the pydicom / pylibjpeg / pyjpegls plugins we install.
SUPPORTED_TRANSFER_SYNTAXES: dict[str, str] = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.5": "RLE Lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Image Compression (Lossless Only)",
    "1.2.840.10008.1.2.4.91": "JPEG 2000 Image Compression",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless Image Compression",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless, Non-Hierarchical (Process 14)",
    "1.2.840.10008.1.2.4.70":
        "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
}
_DEFLATED = "1.2.840.10008.1.2.1.99"
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_ITEM, _SEQUENCE_DELIMITER = (0xFFFE, 0xE000), (0xFFFE, 0xE0DD)


# --------------------------------------------------------------------------------------------------- reading bytes
def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a DICOM Part 10 file: ``DICM`` after the 128-byte preamble, whatever the file's name.
    An unreadable file is not one."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


@contextmanager
def _open(source: str | os.PathLike | bytes) -> Iterator[tuple[BinaryIO, str | None]]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(bytes(source)), None
    else:
        path = Path(source)
        with path.open("rb") as fp:
            yield fp, str(path)


def _parse(fp: BinaryIO, *, header_only: bool) -> tuple[Dataset, list[str]]:
    """pydicom's read, with its exceptions turned into our typed errors. Files without the PS3.10 preamble but
    starting with a plausible group 0002/0008 tag are read leniently (recorded as a quirk)."""
    quirks: list[str] = []
    start = fp.tell()
    try:
        try:
            ds = pydicom.dcmread(fp, stop_before_pixels=header_only)
        except InvalidDicomError as exc:
            fp.seek(start)
            head = fp.read(4)
            if len(head) < 4 or struct.unpack("<H", head[:2])[0] not in (0x0002, 0x0008):
                raise CorruptDataset("not a DICOM file: no 'DICM' prefix (PS3.10 7.1) and no DICOM data element "
                                     "at its start") from exc
            fp.seek(start)
            ds = pydicom.dcmread(fp, stop_before_pixels=header_only, force=True)
            quirks.append("no-part10-preamble")
            if _transfer_syntax(ds) is None and ds.original_encoding[0] is not None:
                implicit, little = ds.original_encoding
                ds.file_meta = getattr(ds, "file_meta", None) or pydicom.dataset.FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = (
                    pydicom.uid.ImplicitVRLittleEndian if implicit
                    else pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian
                )
                quirks.append("transfer-syntax-inferred-from-encoding")
    except DicomInputError:
        raise
    except (EOFError, struct.error) as exc:
        raise TruncatedFile(f"the file ends inside a data element ({exc}); it was cut off in transfer or "
                            "on disk") from exc
    except zlib.error as exc:
        if "incomplete" in str(exc) or "truncated" in str(exc):
            raise TruncatedFile(f"the deflated data set ends early ({exc}); the file was cut off") from exc
        raise CorruptDataset(f"the deflated data set cannot be inflated ({exc})") from exc
    except Exception as exc:  # pydicom raises plain ValueError/KeyError/... for damaged encodings
        raise CorruptDataset(f"the DICOM data set cannot be parsed: {type(exc).__name__}: {exc}") from exc
    return ds, quirks


def _probe_pixel_data(fp: BinaryIO, ds: Dataset) -> tuple[bool, bool]:
    """After a ``stop_before_pixels`` read (pydicom leaves the file at the Pixel Data tag): is there Pixel Data, and
    does the file end before its value does? Defined lengths are checked against the file size; encapsulated data
    (PS3.5 A.4) is walked item by item to its Sequence Delimitation Item, which costs one seek per fragment."""
    position = fp.tell()
    fp.seek(0, io.SEEK_END)
    end = fp.tell()
    fp.seek(position)
    if end - position < 8:
        return False, _last_element_cut(ds, end)
    implicit, little = ds.original_encoding
    order = "<" if little in (True, None) else ">"
    header = fp.read(12)
    group, element = struct.unpack(order + "HH", header[:4])
    if (group << 16 | element) not in _PIXEL_TAGS:
        return False, False
    if implicit:
        (length,) = struct.unpack(order + "L", header[4:8])
        value_start = position + 8
    else:
        vr = header[4:6]
        if vr in (b"OB", b"OW", b"OF", b"OD", b"UN", b"OL", b"OV"):
            (length,) = struct.unpack(order + "L", header[8:12])
            value_start = position + 12
        else:
            (length,) = struct.unpack(order + "H", header[6:8])
            value_start = position + 8
    if length != 0xFFFFFFFF:
        return True, value_start + length > end
    offset = value_start
    while True:
        if offset + 8 > end:
            return True, True
        fp.seek(offset)
        g, e, item_length = struct.unpack(order + "HHL", fp.read(8))
        if (g, e) == _SEQUENCE_DELIMITER:
            return True, False
        if (g, e) != _ITEM or item_length == 0xFFFFFFFF:
            return True, False  # not ours to judge here; the decoder will report a damaged encoding
        offset += 8 + item_length


def _last_element_cut(ds: Dataset, end: int) -> bool:
    """pydicom accepts a file that ends inside an element's value; compare the last element's declared end with the
    file's end to tell a header cut off in transfer from a complete header without Pixel Data."""
    tags = list(ds.keys())
    if not tags:
        return end > 0
    raw = ds.get_item(tags[-1])
    length, tell = getattr(raw, "length", None), getattr(raw, "value_tell", None)
    if length is None or tell is None or length == 0xFFFFFFFF:
        return False
    return tell + length > end


def _read_header(source: Source) -> tuple[Dataset, bool, list[str]]:
    """The header, whether Pixel Data is present (truncation already raised), and parsing quirks."""
    if isinstance(source, Dataset):
        return source, any(tag in source for tag in _PIXEL_TAGS), []
    with _open(source) as (fp, _):
        ds, quirks = _parse(fp, header_only=True)
        if _transfer_syntax(ds) == _DEFLATED:  # the inflated stream is internal to pydicom: read it whole
            fp.seek(0)
            ds, quirks = _parse(fp, header_only=False)
            return ds, any(tag in ds for tag in _PIXEL_TAGS), quirks
        present, truncated = _probe_pixel_data(fp, ds)
    if truncated:
        where = "its Pixel Data" if present else "its header (inside a data element)"
        raise TruncatedFile(f"the file ends before the end of {where}; it was cut off in transfer or on disk")
    return ds, present, quirks


def _read_full(source: str | os.PathLike | bytes) -> tuple[Dataset, list[str]]:
    with _open(source) as (fp, _):
        return _parse(fp, header_only=False)


# ------------------------------------------------------------------------------------------------------ validation
def _transfer_syntax(ds: Dataset) -> str | None:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return str(uid) if uid else None


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    if value is None or value == "":
        raise CorruptDataset(f"required attribute {keyword} is missing (PS3.3 C.7.6.3 Image Pixel module)")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise CorruptDataset(f"attribute {keyword} holds {str(value)[:40]!r}, which is not a number") from exc


def _is_mammogram(ds: Dataset) -> bool:
    modality = str(ds.get("Modality", "")).strip().upper()
    return modality == "MG" or str(ds.get("SOPClassUID", "")) in MAMMOGRAPHY_SOP_CLASSES


def _validate(ds: Dataset, *, has_pixels: bool, max_pixels: int, accept_non_mg: bool) -> None:
    for keyword in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = ds.get(keyword)
        if not is_valid_uid(str(value) if value is not None else None):
            raise CorruptDataset(f"{keyword} is missing or not a valid UID (PS3.5 9.1)")
    if not accept_non_mg and not _is_mammogram(ds):
        modality = str(ds.get("Modality", "")).strip() or "none"
        raise NotMammogram(
            f"Modality is {modality!r} and the SOP class is not Digital Mammography; only MG images are analysed "
            "(set MCCAD_ACCEPT_NON_MG=true to accept other modalities)"
        )
    if not has_pixels:
        raise NoPixelData("the instance has no Pixel Data (7FE0,0010); it is not an image or its pixels were stripped")
    syntax = _transfer_syntax(ds)
    if syntax is None:
        raise CorruptDataset("the file meta information has no Transfer Syntax UID (0002,0010)")
    if syntax not in SUPPORTED_TRANSFER_SYNTAXES:
        name = getattr(pydicom.uid.UID(syntax), "name", syntax)
        raise UnsupportedTransferSyntax(
            f"transfer syntax {syntax} ({name}) is not supported; send it as one of: "
            + ", ".join(sorted(SUPPORTED_TRANSFER_SYNTAXES.values()))
        )
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    samples = _int(ds, "SamplesPerPixel", 1)
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UnsupportedImage(
            f"Photometric Interpretation {photometric or 'missing'} with {samples} samples per pixel: only grayscale "
            "MONOCHROME1/MONOCHROME2 mammograms can be analysed"
        )
    frames = _int(ds, "NumberOfFrames", 1)
    if frames != 1:
        raise UnsupportedImage(f"the instance has {frames} frames; only single-frame mammograms (not tomosynthesis) "
                               "are analysed")
    allocated, stored = _int(ds, "BitsAllocated"), _int(ds, "BitsStored", ds.get("BitsAllocated"))
    if allocated not in (8, 16) or not 1 <= stored <= allocated:
        raise UnsupportedImage(f"Bits Allocated {allocated} / Bits Stored {stored} is not a grayscale layout we "
                               "decode (8 or 16 allocated)")
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    if rows < 1 or columns < 1:
        raise CorruptDataset(f"the image has {rows} rows and {columns} columns")
    if rows * columns * frames > max_pixels:
        raise ImageTooLarge(
            f"the image has {rows}x{columns}x{frames} = {rows * columns * frames} pixels, above the configured budget "
            f"of {max_pixels} (MCCAD_MAX_PIXELS)"
        )


def check_instance(ds: Dataset, *, max_pixels: int = 80_000_000, accept_non_mg: bool = False) -> None:
    """Header-level validation of a data set that includes its Pixel Data (for a file on disk, :func:`read_meta`
    checks without loading the pixels). Raises NotMammogram, CorruptDataset (missing UIDs), NoPixelData,
    UnsupportedTransferSyntax, UnsupportedImage (colour, multi-frame, odd bit layout) or ImageTooLarge."""
    _validate(ds, has_pixels=any(tag in ds for tag in _PIXEL_TAGS), max_pixels=max_pixels, accept_non_mg=accept_non_mg)


# -------------------------------------------------------------------------------------------------------- metadata
def _presentation_intent(ds: Dataset) -> str | None:
    intent = str(ds.get("PresentationIntentType", "") or "").strip().upper()
    return intent if intent in ("FOR PRESENTATION", "FOR PROCESSING") else None


def _meta_of(ds: Dataset, source_path: str | None, read_quirks: list[str]) -> ImageMeta:
    facts = read_header_facts(ds)
    quirks = list(read_quirks) + facts.quirks
    sop_class = str(ds.SOPClassUID)
    if sop_class in SECONDARY_CAPTURE_SOP_CLASSES and _is_mammogram(ds):
        quirks.append("secondary-capture-with-modality-mg")
    spacing = pixel_spacing_mm(ds, quirks)
    manufacturer = str(ds.get("Manufacturer", "") or "").strip() or None
    return ImageMeta(
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=sop_class,
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        patient_id=str(ds.get("PatientID", "") or ""),
        exam_key=facts.exam_key,
        laterality=facts.laterality,
        view=facts.view,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        pixel_spacing_mm=spacing,
        manufacturer=manufacturer,
        presentation_intent=_presentation_intent(ds),  # type: ignore[arg-type]
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or "") or None,
        modality=str(ds.get("Modality", "") or "").strip() or "MG",
        source_path=source_path,
        quirks=tuple(dict.fromkeys(quirks)),
    )


def _path_of(source: Source) -> str | None:
    return str(Path(source)) if isinstance(source, (str, os.PathLike)) else None


def read_meta(
    source: str | os.PathLike | bytes | Dataset, *, accept_non_mg: bool = False, max_pixels: int = 80_000_000
) -> ImageMeta:
    """Header-only read and validation (the file is read up to Pixel Data, whose presence and length are checked
    without decoding): cheap enough for the SCP to run on every received instance. Raises the errors of
    :func:`check_instance` plus TruncatedFile and CorruptDataset."""
    ds, has_pixels, quirks = _read_header(source)
    _validate(ds, has_pixels=has_pixels, max_pixels=max_pixels, accept_non_mg=accept_non_mg)
    return _meta_of(ds, _path_of(source), quirks)


def _decode(ds: Dataset) -> np.ndarray:
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # decoders raise ValueError/RuntimeError/... for damaged streams
        text = str(exc)
        if any(word in text.lower() for word in ("less than expected", "truncat", "end of", "insufficient",
                                                 "too short")):
            raise TruncatedFile(f"the pixel data is shorter than the image needs ({text[:200]})") from exc
        raise CorruptDataset(f"the pixel data cannot be decoded: {type(exc).__name__}: {text[:200]}") from exc
    if pixels.ndim != 2 or pixels.shape != (int(ds.Rows), int(ds.Columns)):
        raise CorruptDataset(f"decoded pixels have shape {pixels.shape}, the header says {ds.Rows}x{ds.Columns}")
    return pixels


def read_mammogram(
    source: str | os.PathLike | bytes | Dataset, *, max_pixels: int = 80_000_000, accept_non_mg: bool = False
) -> MammogramImage:
    """Decode one MG instance into a float32 image in [0, 1], bright = dense, shape (Rows, Columns).

    The grayscale pipeline is :func:`dicom_io.pixels.to_unit_image`: Modality LUT; for "For Processing" images with
    linear intensity (Pixel Intensity Relationship LIN or absent) a logarithmic conversion ``log1p(value - min)``,
    because attenuation is linear in log exposure, their VOI being ignored; otherwise the VOI LUT Sequence or the
    first window (LINEAR, LINEAR_EXACT, SIGMOID, PS3.3 C.11.2.1.2); without VOI the actual data range (the effective
    bit depth is recorded as a quirk, e.g. ``effective-bits-12-of-16``); then MONOCHROME1 / Presentation LUT Shape
    INVERSE inversion, applied once; padding pixels set to 0. Header validation is that of :func:`read_meta`.
    """
    ds, has_pixels, quirks = _read_header(source)
    _validate(ds, has_pixels=has_pixels, max_pixels=max_pixels, accept_non_mg=accept_non_mg)
    if not isinstance(source, Dataset) and "PixelData" not in ds and "FloatPixelData" not in ds:
        ds, _ = _read_full(source)
    meta = _meta_of(ds, _path_of(source), quirks)
    pixel_quirks: list[str] = []
    try:
        unit = to_unit_image(_decode(ds), ds, pixel_quirks)
    except VoiError as exc:
        raise CorruptDataset(str(exc)) from exc
    if pixel_quirks:
        meta = meta.model_copy(update={"quirks": tuple(dict.fromkeys(meta.quirks + tuple(pixel_quirks)))})
    return MammogramImage(pixels=unit, meta=meta)
