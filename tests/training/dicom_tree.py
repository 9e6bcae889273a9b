"""Small DICOM files laid out the way public archives ship them, for the dataset reader tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
VIEW_CODES = {"CC": "399162004", "MLO": "399368009"}


def write_dicom(path: Path, pixels: np.ndarray, *, patient_id: str = "anon", study_uid: str | None = None,
                series_uid: str | None = None, series_description: str = "", laterality: str | None = None,
                view: str | None = None, view_code: str | None = None) -> Path:
    """One uint8 or uint16 MONOCHROME2 mammogram at ``path`` (folders made)."""
    pixels = np.asarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MG_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MG_FOR_PRESENTATION, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientID, ds.Modality, ds.SeriesDescription = patient_id, "MG", series_description
    if laterality:
        ds.ImageLaterality = laterality
    if view:
        ds.ViewPosition = view
    if view_code:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = VIEW_CODES[view_code], "SCT", view_code
        ds.ViewCodeSequence = [item]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelData = pixels.astype(np.uint8 if bits == 8 else np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
