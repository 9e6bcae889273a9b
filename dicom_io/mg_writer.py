"""Writer of Digital Mammography X-Ray Image Storage - For Presentation instances (PS3.3 A.26.1).

Used for synthetic test studies and demos: a uint16 array with 12 bits stored becomes a complete MG instance with
the modules the IOD requires (Patient, General Study, General Series, DX Series, Mammography Series, Frame of
Reference, General Equipment, General Image, General Acquisition, Image Pixel, DX Anatomy Imaged, DX Image,
DX Detector, Mammography Image, Acquisition Context, VOI LUT, SOP Common), checked with ``dciodvfy``.
The builder is pure; :func:`write_mg_instance` is the only function that touches disk.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

from dicom_io.durable import write_durably
from dicom_io.errors import MccadError
from dicom_io.uids import require_uid

#: Digital Mammography X-Ray Image Storage - For Presentation (PS3.4 B.5).
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"

#: CID 4014 "View for Mammography", SNOMED CT codes (PS3.16).
VIEW_CODES = {
    "CC": ("399162004", "cranio-caudal"),
    "MLO": ("399368009", "medio-lateral oblique"),
}
#: PS3.3 C.7.6.1.1.1 / C.8.11.7 orientation as displayed: a left breast's image rows run from the chest wall
#: (left of the image) towards the nipple, so its columns' direction is anterior; a right breast the other way.
PATIENT_ORIENTATION = {
    ("L", "CC"): ["A", "R"],
    ("R", "CC"): ["P", "L"],
    ("L", "MLO"): ["A", "FR"],
    ("R", "MLO"): ["P", "FL"],
}
BITS_STORED = 12


class MGWriteError(MccadError):
    """The pixels or the description given to the MG writer cannot make a valid instance."""


@dataclass
class MGInstanceSpec:
    """Everything about one MG instance that is not pixels. UIDs must be valid DICOM UIDs (PS3.5 9.1)."""

    patient_id: str
    patient_name: str
    study_uid: str
    series_uid: str
    sop_uid: str
    laterality: str
    view: str
    pixel_spacing_mm: float
    study_date: str
    accession: str
    frame_of_reference_uid: str
    manufacturer: str = "mccad synthetic"
    study_time: str = "090000"
    study_id: str = "1"
    series_number: int = 1
    instance_number: int = 1
    patient_birth_date: str = ""
    patient_sex: str = "F"
    institution_name: str = ""
    model_name: str = "mccad synth"
    software_version: str = ""
    detector_id: str = ""

    def validate(self) -> None:
        for name in ("study_uid", "series_uid", "sop_uid", "frame_of_reference_uid"):
            require_uid(getattr(self, name), name)
        if self.laterality not in ("L", "R"):
            raise MGWriteError("laterality must be 'L' or 'R' (PS3.3 C.8.11.5 Image Laterality), "
                               f"got {self.laterality!r}")
        if self.view not in VIEW_CODES:
            raise MGWriteError(f"view must be one of {sorted(VIEW_CODES)}, got {self.view!r}")
        if not self.pixel_spacing_mm > 0:
            raise MGWriteError(f"pixel spacing must be positive, got {self.pixel_spacing_mm}")
        if len(self.study_date) != 8 or not self.study_date.isdigit():
            raise MGWriteError(f"study date must be YYYYMMDD (PS3.5 DA), got {self.study_date!r}")
        if len(self.accession) > 16:
            raise MGWriteError("accession number longer than 16 characters (PS3.5 SH)")


def _code(value: str, meaning: str, scheme: str = "SCT") -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def build_mg_dataset(pixels: np.ndarray, spec: MGInstanceSpec) -> Dataset:
    """A Digital Mammography For Presentation dataset holding ``pixels`` (uint16, values < 4096, MONOCHROME2)."""
    spec.validate()
    arr = np.asarray(pixels)
    if arr.ndim != 2 or arr.dtype != np.uint16:
        raise MGWriteError(f"pixels must be a 2-D uint16 array, got {arr.dtype} with shape {arr.shape}")
    if arr.size and int(arr.max()) >= 1 << BITS_STORED:
        raise MGWriteError(f"pixel values must fit {BITS_STORED} bits stored, found {int(arr.max())}")
    spacing = f"{spec.pixel_spacing_mm:.6g}"

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    # SOP Common (C.12.1)
    ds.SOPClassUID = MG_FOR_PRESENTATION
    ds.SOPInstanceUID = spec.sop_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]  # C.8.11.7.1.4: value 3 empty for an ordinary mammogram
    ds.InstanceCreationDate = spec.study_date
    ds.InstanceCreationTime = spec.study_time
    # General Study (C.7.2.1)
    ds.StudyDate = spec.study_date
    ds.StudyTime = spec.study_time
    ds.ContentDate = spec.study_date
    ds.ContentTime = spec.study_time
    ds.AcquisitionDateTime = spec.study_date + spec.study_time
    ds.AccessionNumber = spec.accession
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = spec.manufacturer
    ds.InstitutionName = spec.institution_name
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "synthetic screening mammogram"
    ds.SeriesDescription = f"{spec.laterality}{spec.view}"
    ds.ManufacturerModelName = spec.model_name
    ds.SoftwareVersions = spec.software_version or "1"
    # Patient (C.7.1.1)
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = spec.patient_birth_date
    ds.PatientSex = spec.patient_sex
    # DX Anatomy Imaged (C.8.11.2) and Mammography Image (C.8.11.7)
    ds.BodyPartExamined = "BREAST"
    ds.DeviceSerialNumber = spec.detector_id or "0"
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.DetectorType = "DIRECT"
    ds.DetectorID = spec.detector_id or "0"
    ds.DetectorConfiguration = "AREA"
    ds.ViewPosition = spec.view
    ds.StudyInstanceUID = spec.study_uid
    ds.SeriesInstanceUID = spec.series_uid
    ds.StudyID = spec.study_id
    ds.SeriesNumber = spec.series_number
    ds.InstanceNumber = spec.instance_number
    ds.PatientOrientation = PATIENT_ORIENTATION[(spec.laterality, spec.view)]
    ds.FrameOfReferenceUID = spec.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ImageLaterality = spec.laterality
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    # Image Pixel (C.7.6.3) and DX Image (C.8.11.3)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(arr.shape[0]), int(arr.shape[1])
    ds.PixelSpacing = [spacing, spacing]
    ds.BitsAllocated = 16
    ds.BitsStored = BITS_STORED
    ds.HighBit = BITS_STORED - 1
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    # VOI LUT (C.11.2): the full 12-bit range. VOI LUT Function (Type 3) is left out: absent means LINEAR
    # (C.11.2.1.2), and OHIF 3.13's image loader keeps only the first character of a present one ("L"), which its
    # renderer rejects, so a viewport or thumbnail showing the image fails
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    ds.BreastImplantPresent = "NO"
    ds.OrganExposed = "BREAST"
    ds.AnatomicRegionSequence = Sequence([_code("76752008", "Breast")])
    view_item = _code(*VIEW_CODES[spec.view])
    view_item.ViewModifierCodeSequence = Sequence([])
    ds.ViewCodeSequence = Sequence([view_item])
    ds.AcquisitionContextSequence = Sequence([])
    ds.PixelData = np.ascontiguousarray(arr).astype("<u2").tobytes()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MG_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = spec.sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MCCAD"
    ds.file_meta = meta
    return ds


def write_mg_instance(path: Path, pixels: np.ndarray, spec: MGInstanceSpec) -> Path:
    """Build the instance and write it as a DICOM Part 10 file, atomically (temporary name, fsync, rename)."""
    ds = build_mg_dataset(pixels, spec)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return write_durably(Path(path), buffer.getvalue())
