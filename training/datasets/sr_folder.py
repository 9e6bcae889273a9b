"""A folder of mccad's own TID 1500 SR objects (``dicom_io.sr``) next to the MG images they describe.

This is how reviewed results become training data: a radiologist corrects boxes or labels in the SR (or a workflow
writes SRs from biopsy results), and the folder goes back into training. Every ``*.dcm`` under the folder is read
header-only: MG images are indexed by SOP Instance UID; SRs are decoded with
``dicom_io.result_reader.read_measurement_report`` and each image they describe becomes a Sample whose lesions are the
SR's lesions (box and benign/malignant label). Pathotype and ER are not ground truth in an SR (they are model
probabilities) and are left empty. Images an SR names but the folder lacks are an error that names the UID.
"""
from __future__ import annotations

from pathlib import Path

import pydicom

from dicom_io.result_reader import read_measurement_report
from training.datasets.samples import DatasetError, Lesion, Sample

SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33"}


def read_sr_folder(folder: Path) -> list[Sample]:

    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"SR folder {folder} does not exist")
    images: dict[str, tuple[Path, str]] = {}
    reports = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue  # not DICOM: ignored (READMEs, JSON next to the objects)
        sop_class = str(ds.get("SOPClassUID", ""))
        if sop_class in SR_CLASSES:
            reports.append((path, pydicom.dcmread(path)))
        elif "PixelData" in ds or str(ds.get("Modality", "")) == "MG":
            images[str(ds.SOPInstanceUID)] = (path, str(ds.get("PatientID", "")))
    samples = []
    for path, ds in reports:
        try:
            result = read_measurement_report(ds)
        except Exception as exc:
            raise DatasetError(f"{path} is not an mccad measurement report: {exc}") from exc
        for image in result.images:
            if image.sop_instance_uid not in images:
                raise DatasetError(f"{path} describes image {image.sop_instance_uid}, which is not in {folder}")
            source, patient = images[image.sop_instance_uid]
            lesions = tuple(Lesion(les.box.as_tuple(), les.label) for les in image.lesions)
            samples.append(Sample(image_id=image.sop_instance_uid, source=source,
                                  patient_id=patient or result.study_instance_uid, breast=image.laterality,
                                  view=image.view, lesions=lesions))
    return samples
