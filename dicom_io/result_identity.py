"""What every mccad output object says about who made it and where it belongs.

Shared by the SR, Mammography CAD SR, SEG and GSPS writers so that all four name the same device, software
versions and algorithm (PS3.3 C.7.5.1 General Equipment, PS3.16 TID 4019 Algorithm Identification, PS3.3 C.8.20.2
Segment Algorithm Identification) and derive their UIDs the same deterministic way, so that outputs are idempotent.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from copy import copy as shallow_copy
from importlib import metadata

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from dicom_io.errors import MccadError
from dicom_io.uids import derive_uid, require_uid
from models.results import ImageResult, ModelInfo, StudyResult

MANUFACTURER = "mccad"
ALGORITHM_NAME = "mccad FPNNet"
MODEL_NAME = "mccad FPNNet CAD"
DEVICE_SERIAL = "mccad-software"

# Series numbers per output kind: high, so they sort after the modality's own series in a viewer.
SERIES_NUMBERS = {"sr-tid1500": 9101, "sr-mammo-cad": 9102, "seg-heatmap": 9103, "gsps": 9104}


class ResultObjectError(MccadError):
    """A result that cannot be turned into DICOM objects (inconsistent with its source images, say)."""


def mccad_version() -> str:
    try:
        return metadata.version("mccad")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def _lo(text: str) -> str:
    """A Long String value (PS3.5 6.2: at most 64 characters, no backslash)."""
    return text.replace("\\", "/")[:64]


def software_versions(result: StudyResult) -> list[str]:
    """Software Versions (0018,1020): mccad first, then one value per model (role=name@version)."""
    values = [f"mccad {mccad_version()}"]
    values += [_lo(f"{m.role}={m.name}@{m.version}") for m in sorted(result.models, key=lambda m: m.role)]
    return values


def model_description(model: ModelInfo) -> str:
    """The JSON text that describes one model in SR TEXT items and algorithm parameters (exact round trip)."""
    return json.dumps(model.model_dump(mode="json"), sort_keys=True)


def algorithm_identification(result: StudyResult) -> hd.sr.AlgorithmIdentification:
    """TID 4019: name "mccad FPNNet", the mccad version, one parameter per model."""
    return hd.sr.AlgorithmIdentification(
        name=ALGORITHM_NAME, version=mccad_version(),
        parameters=[f"{m.role}={m.name}@{m.version} sha256:{m.sha256[:12]}" for m in
                    sorted(result.models, key=lambda m: m.role)] or None)


def algorithm_identification_sequence(result: StudyResult) -> hd.AlgorithmIdentificationSequence:
    """PS3.3 C.8.20.2 / 10.16 Algorithm Identification Macro for SEG."""
    parameters = {m.role: _lo(f"{m.name}@{m.version}") for m in result.models} or None
    return hd.AlgorithmIdentificationSequence(name=ALGORITHM_NAME, family=codes.cid7162.ArtificialIntelligence,
                                              version=_lo(mccad_version()), parameters=parameters)


def device_uid() -> str:
    """Device Observer UID (TID 1004): one stable UID for the mccad software as an observing device."""
    return derive_uid("mccad-device-observer", ALGORITHM_NAME)


def observation_context() -> hd.sr.ObservationContext:
    """TID 1001 with a device observer (TID 1004): the findings come from software, not a person."""
    return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(), name=ALGORITHM_NAME, manufacturer_name=MANUFACTURER,
            model_name=MODEL_NAME)))


def studies_of(result: StudyResult) -> list[str]:
    """The studies an exam's results are written into: the result's own study first, then every other study one of
    its images belongs to, in image order. An exam whose views were stored as separate studies gets its reports in
    each of them (the policy in ``dicom_io.outputs``)."""
    studies = [require_uid(result.study_instance_uid, "Study Instance UID of the result")]
    for image in result.images:
        if image.study_instance_uid not in studies:
            studies.append(require_uid(image.study_instance_uid, "Study Instance UID of an image"))
    return studies


def output_uids(result: StudyResult, kind: str, source_uid: str = "", study_uid: str | None = None) -> tuple[str, str]:
    """(Series Instance UID, SOP Instance UID) of one output object, derived, never random.

    ``study_uid`` is the study the object is written into (the result's own study by default): every kind has one
    series per study, shared by all its instances in that study (one per source image for SEG and GSPS), so that no
    series ever spans two studies. The instance UID is ``derive_uid(result study, model tag, kind, source)``, with
    the target study added when it is not the result's own.
    """
    study = require_uid(result.study_instance_uid, "Study Instance UID of the result")
    target = require_uid(study_uid or study, "Study Instance UID of an output")
    tag = result.model_version_tag()
    parts = (study, tag, kind, source_uid) if target == study else (study, tag, kind, source_uid, target)
    return derive_uid(target, tag, f"{kind}/series", ""), derive_uid(*parts)


def evidence_for(headers: dict[str, Dataset], study_uid: str) -> list[Dataset]:
    """Every referenced source header, those of ``study_uid`` first: an SR belongs to the study of its first
    evidence item (highdicom), lists the instances of that study as Current Requested Procedure Evidence and those
    of the exam's other studies as Pertinent Other Evidence (PS3.3 C.17.2.3)."""
    own = [ds for ds in headers.values() if str(ds.StudyInstanceUID) == study_uid]
    if not own:
        raise ResultObjectError(f"no source header of study {study_uid[-12:]} to file a report into")
    return own + [ds for ds in headers.values() if str(ds.StudyInstanceUID) != study_uid]


def predecessors_of(earlier: Sequence[Dataset], study_uid: str, sop_class_uid: str,
                    sop_uid: str) -> list[Dataset] | None:
    """The reports in ``earlier`` that a new report ``sop_uid`` of ``sop_class_uid`` in ``study_uid`` replaces (its
    Predecessor Documents Sequence, PS3.3 C.17.2.3); None when there are none."""
    found = [ds for ds in earlier if str(ds.get("StudyInstanceUID")) == study_uid
             and str(ds.get("SOPClassUID")) == sop_class_uid and str(ds.get("SOPInstanceUID")) != sop_uid]
    return found or None


def image_header(image: ImageResult, sources: dict[str, Dataset], template: Dataset | None) -> Dataset:
    """The source header for ``image``: the real one when we have it, else the least a reference needs.

    The fallback copies the patient and study modules of ``template`` (another source of the same study), so that
    a missing header never produces an object that points into a different patient.
    """
    if image.sop_instance_uid in sources:
        return sources[image.sop_instance_uid]
    if template is None:
        raise ResultObjectError(
            f"no source header for image {image.sop_instance_uid[-12:]} and none for any other image of the study")
    stub = Dataset()
    for keyword in ("SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID"):
        if keyword in template:
            setattr(stub, keyword, template.get(keyword))
    stub.StudyInstanceUID = image.study_instance_uid
    stub.SeriesInstanceUID = image.series_instance_uid
    stub.SOPClassUID = image.sop_class_uid
    stub.SOPInstanceUID = image.sop_instance_uid
    stub.Modality = "MG"
    stub.Rows, stub.Columns = image.rows, image.columns
    if image.frame_of_reference_uid:
        stub.FrameOfReferenceUID = image.frame_of_reference_uid
    return stub


def check_source_matches(image: ImageResult, source: Dataset) -> None:
    """Refuse to draw on a source whose matrix differs from the one the result was computed on."""
    rows, cols = int(source.get("Rows", image.rows)), int(source.get("Columns", image.columns))
    if (rows, cols) != (image.rows, image.columns):
        raise ResultObjectError(
            f"image {image.sop_instance_uid[-12:]}: result computed on {image.rows}x{image.columns} pixels but the "
            f"source header says {rows}x{cols}; re-run the analysis on the stored instance")
    if str(source.get("StudyInstanceUID", image.study_instance_uid)) != image.study_instance_uid:
        raise ResultObjectError(f"image {image.sop_instance_uid[-12:]} belongs to another study than its result")


_ORIENTATION_CHARS = set("LRAPHF")
_TYPE2_IDENTITY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                   "StudyDate", "StudyTime", "ReferringPhysicianName")
_PN_MAX_BYTES = 64


def _fit_person_name(value: str) -> str:
    """A Person Name that obeys PS3.5 6.2 (at most 5 components, 64 bytes per component group) with as much of
    the original as fits: surplus ``^`` become spaces, the alphabetic group is cut at a character boundary."""
    groups = value.split("=")
    fitted = []
    for group in groups[:3]:
        parts = group.split("^")
        if len(parts) > 5:
            parts = parts[:4] + [" ".join(parts[4:])]
        text = "^".join(parts).replace("\\", "/")
        while len(text.encode("utf-8")) > _PN_MAX_BYTES:
            text = text[:-1]
        fitted.append(text.rstrip("^ "))
    return "=".join(fitted)


def copy_header(source: Dataset) -> Dataset:
    """A copy of ``source`` (with its file meta) whose top-level attributes can be set and deleted without touching
    the source.

    Each top-level element is copied, its value shared (Pixel Data is not duplicated, and a sequence's items are the
    source's: replace a sequence, never edit it in place). ``Dataset(source)`` would not do: it shares the source's
    element dictionary, and pydicom sets an existing attribute by changing its element's value in place.
    """
    copy = Dataset({tag: shallow_copy(element) for tag, element in source.items()})
    if hasattr(source, "file_meta"):
        copy.file_meta = source.file_meta
    return copy


def fit_source_header(source: Dataset) -> Dataset:
    """A copy of a source header whose copied identity attributes are valid in our outputs.

    Archives send person names longer than 64 bytes or with too many components, and CBIS-DDSM puts the view
    ("CC") in Patient Orientation. The outputs copy these attributes (patient module, PS3.3 C.7.1.1; Patient
    Orientation, C.7.6.1.1.1), so invalid values are fitted here: the name is shortened (Patient ID, which PACS
    match on, is never altered: one that is invalid is refused), an orientation that is not two direction codes
    is left out, and missing type 2 patient / study attributes are added empty (PS3.3 C.7.1.1, C.7.2.1).
    Everything else is copied unchanged.
    """
    fitted = copy_header(source)
    for keyword in _TYPE2_IDENTITY:
        if keyword not in fitted:  # type 2 in the outputs: present, empty when the source does not know
            setattr(fitted, keyword, None)
    patient_id = str(source.get("PatientID", "") or "")
    if len(patient_id) > 64 or "\\" in patient_id:
        raise ResultObjectError("the source's Patient ID is longer than 64 characters or holds a backslash; "
                                "fix the instance at the modality or PACS, outputs must carry the same Patient ID")
    for keyword in ("PatientName", "ReferringPhysicianName"):
        value = source.get(keyword)
        if value is not None and str(value) != _fit_person_name(str(value)):
            setattr(fitted, keyword, _fit_person_name(str(value)))
    orientation = source.get("PatientOrientation")
    if orientation is not None:
        values = list(orientation) if not isinstance(orientation, str) else [orientation]
        if len(values) != 2 or any(not v or set(str(v)) - _ORIENTATION_CHARS for v in values):
            del fitted.PatientOrientation
    return fitted
