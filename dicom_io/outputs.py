"""All DICOM result objects of one exam, built and written in one place (the worker sends what this writes).

Per study: one TID 1500 SR (``sr-tid1500``) and one Mammography CAD SR (``sr-mammo-cad``). Per source image: one
GSPS (``gsps``) and, when a heatmap exists for it, one SEG of its activation bands (``seg-heatmap``). Every UID is
derived from the study, the model versions, the kind and the source image (``result_identity.output_uids``), and
the file name from the SOP Instance UID, so writing the same result twice replaces the same files with objects of
the same UIDs.

Exams that span studies (a site that stores each view as its own study, as CBIS-DDSM does): every object belongs
to exactly one study and one series of that study. A SEG or GSPS goes into the study of the image it is drawn on;
the two SRs are written into every study of the exam, each holding the whole exam's result (the breast and exam
verdicts need every view), with the instances of its own study as Current Requested Procedure Evidence and those
of the other studies as Pertinent Other Evidence, so that every referenced instance is in its evidence and a viewer
that opens any one of the studies finds the findings.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from dicom_io.cad_sr import build_cad_report
from dicom_io.durable import write_durably
from dicom_io.pr import build_presentation_state
from dicom_io.result_identity import ResultObjectError, fit_source_header, image_header, studies_of
from dicom_io.seg import build_heatmap_segmentation
from dicom_io.sr import build_measurement_report
from models.results import StudyResult

KINDS = ("sr-tid1500", "sr-mammo-cad", "seg-heatmap", "gsps")


@dataclass
class OutputObject:
    """One written result object: what it is, where it lies, and the UIDs a PACS will know it by."""

    kind: str  # 'sr-tid1500' | 'sr-mammo-cad' | 'seg-heatmap' | 'gsps'
    path: Path
    sop_instance_uid: str
    sop_class_uid: str


def _short(uid: str) -> str:
    """12 hex digits of the UID's SHA-256: a stable, path-safe file name part (never the raw UID)."""
    return hashlib.sha256(uid.encode("ascii", "replace")).hexdigest()[:12]


def build_result_objects(result: StudyResult, sources: dict[str, pydicom.Dataset],
                         heatmaps: dict[str, np.ndarray],
                         earlier: Sequence[Dataset] = ()) -> list[tuple[str, pydicom.Dataset]]:
    """(kind, dataset) for every output object of ``result``; builds in memory, writes nothing.

    ``sources`` maps SOP Instance UID -> source header (pixels not needed); ``heatmaps`` maps SOP Instance UID ->
    float32 [0, 1] array of the source's (rows, columns); ``earlier`` are the headers of the reports of an earlier
    result of the same exam (another model): each new SR names those of its study and SOP class in its Predecessor
    Documents Sequence. Raises ``ResultObjectError`` when the result and its sources disagree (another study,
    another matrix size) or when there is no source header at all.
    """
    if not sources:
        raise ResultObjectError("no source image headers given: output objects copy the patient and study from them")
    if not result.images:
        raise ResultObjectError("the result holds no images: nothing to report on")
    sources = {uid: fit_source_header(ds) for uid, ds in sources.items()}
    template = next(iter(sources.values()))
    objects: list[tuple[str, Dataset]] = []
    for study_uid in studies_of(result):
        objects += [("sr-tid1500", build_measurement_report(result, sources, study_uid, earlier)),
                    ("sr-mammo-cad", build_cad_report(result, sources, study_uid, earlier))]
    for image in result.images:
        header = image_header(image, sources, template)
        heatmap = heatmaps.get(image.sop_instance_uid)
        if heatmap is not None:
            objects.append(("seg-heatmap", build_heatmap_segmentation(result, image, header, heatmap)))
        objects.append(("gsps", build_presentation_state(result, image, header)))
    for _, ds in objects:
        # Copied names arrive decoded from whatever the source used; UTF-8 (PS3.3 C.12.1.1.2) encodes them all.
        ds.SpecificCharacterSet = "ISO_IR 192"
    return objects


def earlier_reports(out_dir: Path) -> list[Dataset]:
    """The headers of the SRs an earlier result left in ``out_dir`` (none when the folder is new)."""
    return [pydicom.dcmread(path, stop_before_pixels=True) for path in sorted(Path(out_dir).glob("sr-*.dcm"))]


def write_result_objects(result: StudyResult, sources: dict[str, pydicom.Dataset], heatmaps: dict[str, np.ndarray],
                         out_dir: Path) -> list[OutputObject]:
    """Build every output object and write each durably as ``out_dir/<kind>-<short>.dcm`` (DICOM Part 10).

    Results replace results: the SRs of an earlier result in ``out_dir`` (another model's) become the new SRs'
    predecessors, and every object file of the earlier result that the new one does not rewrite is removed from
    ``out_dir`` once the new ones are written (``superseded_files``). What was already sent stays in the PACS: the
    new SRs say which reports they replace; the old SEG and GSPS series are told apart by their model versions
    (Software Versions) and are the PACS's to retire. The same model writes objects of the same UIDs, which
    replace the earlier instances wherever they are stored.
    """
    out_dir = Path(out_dir)
    before = sorted(out_dir.glob("*.dcm"))
    written = []
    for kind, ds in build_result_objects(result, sources, heatmaps, earlier_reports(out_dir)):
        sop_uid = str(ds.SOPInstanceUID)
        path = out_dir / f"{kind}-{_short(sop_uid)}.dcm"
        write_durably(path, lambda handle, ds=ds: ds.save_as(handle, enforce_file_format=True))
        written.append(OutputObject(kind=kind, path=path, sop_instance_uid=sop_uid, sop_class_uid=str(ds.SOPClassUID)))
    kept = {o.path for o in written}
    for path in before:
        if path not in kept:
            path.unlink(missing_ok=True)
    return written
