"""Test helpers for the result writers: a small synthetic MG source image and a ``StudyResult`` that exercises
every field (malignant and benign lesions, pathotype/ER probabilities, image/breast/exam verdicts, model infos and
the NOT FOR CLINICAL USE banner).

The source is a Digital Mammography X-Ray Image (For Presentation) of 256 x 192 pixels, the smallest object that
carries every attribute a real FFDM header has and our writers copy (patient, study, frame of reference,
laterality, view, pixel spacing).
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from dicom_io.result_identity import copy_header
from models.descriptors import ClusterDescriptors
from models.results import (NOT_FOR_CLINICAL_USE, BoxXYXY, BreastResult, ExamResult, ImageResult, LesionResult,
                            ModelInfo, StudyResult)

DX_MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
STUDY_UID = "1.2.826.0.1.3680043.8.498.1000"
ROWS, COLUMNS = 256, 192


def make_source(index: int = 1, laterality: str | None = "L", view: str = "CC", rows: int = ROWS,
                columns: int = COLUMNS, with_pixels: bool = True, patient_name: str = "Test^Patient",
                pixel_spacing: bool = True, frame_of_reference: bool = True) -> Dataset:
    """One MG source image; ``with_pixels=False`` gives the header only, as the pipeline hands it to the writers."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DX_MG_FOR_PRESENTATION
    sop_uid = f"{STUDY_UID}.2.{index}"
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = DX_MG_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    ds.ContentDate = "20240102"
    ds.ContentTime = "101501"
    ds.AccessionNumber = "ACC123"
    ds.Modality = "MG"
    ds.Manufacturer = "TestVendor"
    ds.ReferringPhysicianName = ""
    ds.PatientName = patient_name
    ds.PatientID = "PID-0001"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = f"{STUDY_UID}.1"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = index
    if frame_of_reference:
        ds.FrameOfReferenceUID = f"{STUDY_UID}.3"
    if laterality:
        ds.ImageLaterality = laterality
    ds.PatientOrientation = ["P", "L"] if laterality == "R" else ["A", "R"]
    view_codes = {"CC": ("399162004", "cranio-caudal"), "MLO": ("399368009", "medio-lateral oblique")}
    code, meaning = view_codes[view]
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code, "SCT", meaning
    ds.ViewCodeSequence = Sequence([item])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if pixel_spacing:
        ds.PixelSpacing = [0.1, 0.1]
        ds.ImagerPixelSpacing = [0.1, 0.1]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    if with_pixels:
        yy, xx = np.mgrid[0:rows, 0:columns]
        ds.PixelData = ((xx * 7 + yy * 3) % 4096).astype(np.uint16).tobytes()
    return ds


def header_only(ds: Dataset) -> Dataset:
    copy = copy_header(ds)
    if "PixelData" in copy:
        del copy.PixelData
    return copy


#: BI-RADS descriptors of the two lesions of ``make_result(..., descriptors=True)``: a suspicious fine pleomorphic
#: cluster and a typically benign coarse one (awkward floats, as everywhere here).
SUSPICIOUS_DESCRIPTORS = ClusterDescriptors.from_probabilities(
    {"fine_pleomorphic": 0.6123456789012345, "amorphous": 0.2876543210987655, "punctate": 0.1},
    {"grouped": 0.7000000000000001, "segmental": 0.2999999999999999})
BENIGN_DESCRIPTORS = ClusterDescriptors.from_probabilities({"coarse": 0.9, "round": 0.1}, {"scattered": 1.0})


def _with_descriptors(lesions: list[LesionResult]) -> list[LesionResult]:
    first, second = lesions
    return [LesionResult(**{**first.model_dump(), "descriptors": SUSPICIOUS_DESCRIPTORS,
                            "malignancy_interval": (0.7512345678901234, 0.9412345678901234),
                            "network_malignancy_probability": 0.3333333333333333}),
            LesionResult(**{**second.model_dump(), "descriptors": BENIGN_DESCRIPTORS,
                            "malignancy_interval": (0.0012345678901234, 0.8712345678901234),
                            "network_malignancy_probability": 0.1111111111111111})]


def make_result(sources: list[Dataset], warnings: list[str] | None = None, descriptors: bool = False) -> StudyResult:
    """A result with two lesions on the first image (one malignant with pathotype/ER, one benign), none on the
    others, with deliberately awkward floats (not representable in float32) so that "exact" round trips mean it.
    With ``descriptors`` the two lesions have BI-RADS descriptors, an interval and the detector's own reading."""
    images = []
    for n, ds in enumerate(sources):
        lesions = []
        if n == 0:
            lesions = [
                LesionResult(lesion_id=1, box=BoxXYXY(x0=10.25, y0=20.1, x1=60.333333333333336, y1=80.7),
                             label="malignant", probability=0.8712345678901234,
                             malignancy_probability=0.8712345678901234, score=0.9312345678901234,
                             invasive_incl_microinvasion_probability=0.31, invasive_excl_microinvasion_probability=0.2,
                             er_positive_probability=0.7777777777777778),
                LesionResult(lesion_id=2, box=BoxXYXY(x0=100.0, y0=150.5, x1=130.0, y1=190.0), label="benign",
                             probability=1.0 - 0.42, malignancy_probability=0.42, score=0.61),
            ]
            lesions = _with_descriptors(lesions) if descriptors else lesions
        images.append(ImageResult(
            sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID,
            series_instance_uid=ds.SeriesInstanceUID, study_instance_uid=ds.StudyInstanceUID,
            frame_of_reference_uid=ds.get("FrameOfReferenceUID"),
            laterality=ds.get("ImageLaterality") or ds.get("Laterality") or None,
            view="CC" if n % 2 == 0 else "MLO", rows=int(ds.Rows), columns=int(ds.Columns), lesions=lesions,
            label="malignant" if n == 0 else "benign", malignancy_probability=0.8712345678901234 if n == 0 else 0.1,
            probability=0.8712345678901234 if n == 0 else 0.9, sppnet_malignancy_probability=0.66 if n == 0 else None,
            heatmap=f"heatmap-{n}.png" if n == 0 else None))
    lateralities = sorted({im.laterality for im in images}, key=str)
    breasts = [BreastResult(laterality=lat, label="malignant" if lat == images[0].laterality else "benign",
                            malignancy_probability=0.8712345678901234 if lat == images[0].laterality else 0.1,
                            probability=0.8712345678901234 if lat == images[0].laterality else 0.9,
                            decided_by=next(im.sop_instance_uid for im in images if im.laterality == lat),
                            image_uids=[im.sop_instance_uid for im in images if im.laterality == lat])
               for lat in lateralities]
    return StudyResult(
        study_instance_uid=sources[0].StudyInstanceUID, exam_key="PID-0001/20240102", images=images, breasts=breasts,
        exam=ExamResult(label="malignant", malignancy_probability=0.8712345678901234, probability=0.8712345678901234),
        models=[ModelInfo(role="detector", name="fpnnet", version="1.2.0", sha256="ab" * 32, synthetic_only=True),
                ModelInfo(role="er", name="er-resnet", version="0.3.1", sha256="cd" * 32, synthetic_only=True)],
        timings_s={"detect": 1.25, "total": 3.5},
        warnings=[NOT_FOR_CLINICAL_USE] if warnings is None else warnings)


def make_heatmap(rows: int = ROWS, columns: int = COLUMNS) -> np.ndarray:
    yy, xx = np.mgrid[0:rows, 0:columns].astype(np.float32)
    heat = np.exp(-(((xx - 35) / 20) ** 2 + ((yy - 50) / 25) ** 2)).astype(np.float32)
    return np.clip(heat, 0.0, 1.0)




# --- validators -------------------------------------------------------------------------------------------------

# dciodvfy messages we accept, each with the reason it is not a defect of ours.
DCIODVFY_ALLOWED = (
    # Our documented private coding scheme (PS3.16 8.2: designators starting "99" are private); dciodvfy only
    # knows the standard designators.
    re.compile(r"Warning - Unrecognized defined term <99MCCAD> .*Coding Scheme Designator"),
    # CBIS-DDSM (and other converted archives) store "Mass-Test_P_00173_LEFT_CC" as Patient's Name; the outputs must
    # copy the patient module unchanged, and a single-component name is only "dubious", not invalid.
    re.compile(r"Warning - Value dubious for this VR - \(0x0010,0x0010\) PN .* Retired Person Name form"),
    # GSPS of a source with no laterality at all: General Series Laterality (type 2C) is then present and empty,
    # which dciodvfy flags as "only permitted when actually unknown": it is unknown.
    re.compile(r"Warning - is only permitted to be empty when actually unknown.*attribute <Laterality>"),
    # A source without Study ID: the outputs belong to that study and copy its (empty) Study ID rather than invent
    # one; dciodvfy notes that a DICOMDIR could not index it, which is not a requirement of the IOD.
    re.compile(r"Warning - Missing attribute or value that would be needed to build DICOMDIR - Study ID"),
)


def dciodvfy_problems(path: Path) -> list[str]:
    """Every error and every warning outside ``DCIODVFY_ALLOWED`` that dciodvfy reports for ``path``."""
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [line for line in lines if line.startswith(("Error", "Warning"))
            and not any(rule.search(line) for rule in DCIODVFY_ALLOWED)]


def dsrdump_text(path: Path) -> str:
    proc = subprocess.run(["dsrdump", "+Pl", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"dsrdump failed on {path.name}: {proc.stderr[-2000:]}"
    return proc.stdout
