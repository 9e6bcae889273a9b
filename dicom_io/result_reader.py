"""Readers of mccad's own result objects: the TID 1500 SR back into a ``StudyResult`` (exactly: the SR is our
archive format), and enough of the Mammography CAD SR, the heatmap SEG and the GSPS to check them in round trips.

The readers walk the content tree by concept codes (``dicom_io.codes``), not by position, so that items other
writers or later versions add are skipped rather than misread. They read mccad's objects; an SR from another
vendor raises ``ResultReadError`` at the first missing concept.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from pydicom.dataset import Dataset

from dicom_io import codes as mc
from dicom_io.errors import MccadError
from models.descriptors import ClusterDescriptors
from models.results import (BoxXYXY, BreastResult, ExamResult, ImageResult, LesionResult, ModelInfo,
                            StudyResult, decide)

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
MAMMOGRAPHY_CAD_SR = "1.2.840.10008.5.1.4.1.1.88.50"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"


class ResultReadError(MccadError):
    """An object that is not one of mccad's result objects, or one that is damaged."""


_Reader = TypeVar("_Reader", bound=Callable[..., Any])


def _damage_is_read_error(reader: _Reader) -> _Reader:
    """Report a damaged object (missing attribute, unknown code, bad number) as ``ResultReadError``."""
    @functools.wraps(reader)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return reader(*args, **kwargs)
        except ResultReadError:
            raise
        except (AttributeError, KeyError, IndexError, ValueError, TypeError) as exc:
            raise ResultReadError(
                f"{reader.__name__}: damaged or foreign object ({type(exc).__name__}: {exc})") from exc
    return wrapper  # type: ignore[return-value]


# --- content tree helpers ---------------------------------------------------------------------------------------
def children(item: Dataset) -> list[Dataset]:
    return list(item.get("ContentSequence", []))


def concept_is(item: Dataset, code: object) -> bool:
    names = item.get("ConceptNameCodeSequence")
    return bool(names) and mc.same_concept(names[0], code)


def find_all(item: Dataset, code: object) -> list[Dataset]:
    return [child for child in children(item) if concept_is(child, code)]


def find_one(item: Dataset, code: object, required: bool = True) -> Dataset | None:
    found = find_all(item, code)
    if not found:
        if required:
            raise ResultReadError(f"content item {getattr(code, 'meaning', code)!r} missing from an mccad SR")
        return None
    return found[0]


def walk(item: Dataset) -> Iterator[Dataset]:
    for child in children(item):
        yield child
        yield from walk(child)


def num_value(item: Dataset) -> float:
    """The exact value of a NUM item: Floating Point Value (FD) when present, else the Decimal String."""
    measured = item.MeasuredValueSequence[0]
    if "FloatingPointValue" in measured:
        return float(measured.FloatingPointValue)
    return float(measured.NumericValue)


def _num(group: Dataset, code: object, required: bool = True) -> float | None:
    item = find_one(group, code, required)
    return None if item is None else num_value(item)


def _code_value(group: Dataset, code: object, required: bool = True) -> Dataset | None:
    item = find_one(group, code, required)
    return None if item is None else item.ConceptCodeSequence[0]


def _text(group: Dataset, code: object, required: bool = True) -> str | None:
    item = find_one(group, code, required)
    return None if item is None else str(item.TextValue)


def _laterality(group: Dataset) -> str | None:
    site = find_one(group, mc.codes.SCT.FindingSite, required=False)
    if site is None:
        return None
    lat = find_one(site, mc.LATERALITY, required=False)
    return None if lat is None else mc.laterality_from_code(lat.ConceptCodeSequence[0])


def _referenced_sop(item: Dataset) -> str:
    return str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)


# --- TID 1500 -> StudyResult ------------------------------------------------------------------------------------
def _evidence(ds: Dataset) -> dict[str, tuple[str, str, str]]:
    """SOP Instance UID -> (study, series, SOP class) from the SR Document General evidence sequences."""
    found: dict[str, tuple[str, str, str]] = {}
    for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in ds.get(keyword, []):
            for series in study.get("ReferencedSeriesSequence", []):
                for sop in series.get("ReferencedSOPSequence", []):
                    found[str(sop.ReferencedSOPInstanceUID)] = (
                        str(study.StudyInstanceUID), str(series.SeriesInstanceUID), str(sop.ReferencedSOPClassUID))
    return found


def _lesion(group: Dataset) -> tuple[str, LesionResult]:
    probability = find_one(group, mc.PROBABILITY_OF_CANCER)
    region = next(item for item in children(probability) if item.ValueType == "SCOORD")
    source_uid = _referenced_sop(children(region)[0])
    comment = _text(group, mc.COMMENT)
    try:
        lesion_id = int(comment.split(" ", 1)[0].removeprefix("#"))
    except ValueError as exc:
        raise ResultReadError(f"comment {comment!r} does not name an mccad lesion") from exc
    decision = decide(_num(group, mc.PROBABILITY_OF_CANCER))
    lesion = LesionResult(**_descriptor_fields(group),
        lesion_id=lesion_id,
        box=BoxXYXY(x0=_num(group, mc.BOX_X0), y0=_num(group, mc.BOX_Y0), x1=_num(group, mc.BOX_X1),
                    y1=_num(group, mc.BOX_Y1)),
        label=mc.label_from_code(_code_value(group, mc.BEHAVIOR_OF_FINDING_SITE)),
        probability=decision.probability, malignancy_probability=decision.malignancy_probability,
        score=_num(group, mc.CERTAINTY_OF_FINDING),
        invasive_incl_microinvasion_probability=_num(group, mc.P_INVASIVE_INCL_MICROINVASION, False),
        invasive_excl_microinvasion_probability=_num(group, mc.P_INVASIVE_EXCL_MICROINVASION, False),
        er_positive_probability=_num(group, mc.P_ER_POSITIVE, False))
    return source_uid, lesion


def _descriptor_fields(group: Dataset) -> dict[str, Any]:
    """A lesion group's descriptors, the interval of its P(malignant) and the detector's own reading; none when
    the group has no descriptors. The coded type and distribution must name the descriptors' most likely terms."""
    text = _text(group, mc.CALCIFICATION_DESCRIPTORS, False)
    if text is None:
        return {}
    descriptors = ClusterDescriptors.model_validate_json(text)
    for code, expected in ((mc.CALCIFICATION_TYPE, mc.calcification_type_code(descriptors.calcification_type)),
                           (mc.CALCIFICATION_DISTRIBUTION,
                            mc.calcification_distribution_code(descriptors.distribution))):
        if not mc.same_concept(_code_value(group, code), expected):
            raise ResultReadError(f"the lesion's {code.meaning} code disagrees with its descriptors")
    return {"descriptors": descriptors,
            "malignancy_interval": (_num(group, mc.P_CANCER_LOW), _num(group, mc.P_CANCER_HIGH)),
            "network_malignancy_probability": _num(group, mc.NETWORK_PROBABILITY_OF_MALIGNANCY, False)}


def _decided(group: Dataset) -> dict[str, Any]:
    """Label, P(malignant) and confidence of an assessment container (the label as written, checked by the model)."""
    p = decide(_num(group, mc.PROBABILITY_OF_CANCER))
    return {"label": mc.label_from_code(_code_value(group, mc.BEHAVIOR_OF_FINDING_SITE)),
            "malignancy_probability": p.malignancy_probability, "probability": p.probability}


def _image(group: Dataset, evidence: dict[str, tuple[str, str, str]],
           lesions: dict[str, list[LesionResult]]) -> ImageResult:
    sop_uid = _referenced_sop(find_one(group, mc.codes.DCM.SourceOfMeasurement))
    if sop_uid not in evidence:
        raise ResultReadError(f"image {sop_uid[-12:]} is referenced but missing from the SR's evidence")
    study_uid, series_uid, sop_class = evidence[sop_uid]
    view = _code_value(group, mc.IMAGE_VIEW, False)
    for_item = find_one(group, mc.FRAME_OF_REFERENCE_UID, required=False)
    return ImageResult(
        sop_instance_uid=sop_uid, sop_class_uid=sop_class, series_instance_uid=series_uid,
        study_instance_uid=study_uid, frame_of_reference_uid=None if for_item is None else str(for_item.UID),
        laterality=_laterality(group), view=None if view is None else mc.view_from_code(view),
        rows=int(_num(group, mc.IMAGE_ROWS)), columns=int(_num(group, mc.IMAGE_COLUMNS)),
        lesions=lesions.get(sop_uid, []), **_decided(group),
        sppnet_malignancy_probability=_num(group, mc.SPPNET_PROBABILITY_OF_MALIGNANCY, False),
        heatmap=_text(group, mc.HEATMAP_FILE, False))


def _breast(group: Dataset) -> BreastResult:
    decided = find_one(group, mc.DECIDED_BY_IMAGE, required=False)
    return BreastResult(
        laterality=_laterality(group), **_decided(group),
        decided_by=None if decided is None else str(decided.UID),
        image_uids=[_referenced_sop(item) for item in find_all(group, mc.IMAGE_OF_BREAST)])


@_damage_is_read_error
def read_measurement_report(ds: Dataset) -> StudyResult:
    """The ``StudyResult`` an mccad TID 1500 SR holds, equal to the one it was written from."""
    if (str(ds.get("SOPClassUID", "")) != COMPREHENSIVE_3D_SR
            or not concept_is(ds, mc.codes.DCM.ImagingMeasurementReport)):
        raise ResultReadError("not an mccad TID 1500 measurement report "
                              "(Comprehensive 3D SR, Imaging Measurement Report)")
    measurements = find_one(ds, mc.codes.DCM.ImagingMeasurements, required=False)
    evaluations = find_one(ds, mc.QUALITATIVE_EVALUATIONS)
    evidence = _evidence(ds)
    lesions: dict[str, list[LesionResult]] = {}
    for group in [] if measurements is None else find_all(measurements, mc.codes.DCM.MeasurementGroup):
        source_uid, lesion = _lesion(group)
        lesions.setdefault(source_uid, []).append(lesion)
    images = [_image(group, evidence, lesions) for group in find_all(evaluations, mc.IMAGE_ASSESSMENT)]
    breasts = [_breast(group) for group in find_all(evaluations, mc.BREAST_ASSESSMENT)]
    exam_group = find_one(evaluations, mc.EXAM_ASSESSMENT)
    schema = _text(evaluations, mc.SCHEMA_VERSION)
    study = find_one(evaluations, mc.RESULT_STUDY_UID, required=False)  # the exam's study, when filed into another
    return StudyResult(
        schema_version=int(schema), study_instance_uid=str((study or ds).get("UID", ds.StudyInstanceUID)),
        exam_key=_text(evaluations, mc.EXAM_KEY, False), images=images, breasts=breasts,
        exam=ExamResult(**_decided(exam_group)),
        models=[ModelInfo.model_validate_json(str(item.TextValue))
                for item in find_all(evaluations, mc.MODEL_DESCRIPTION)],
        timings_s=json.loads(_text(evaluations, mc.TIMINGS)),
        warnings=[str(item.TextValue) for item in find_all(evaluations, mc.WARNING)])


# --- Mammography CAD SR, SEG, GSPS: read back enough for round-trip checks -----------------------------------------
@dataclass
class CadFinding:
    """One Single Image Finding of an mccad Mammography CAD SR."""

    source_sop_instance_uid: str
    outline: np.ndarray  # closed polyline, (column, row), float32 as stored
    certainty_percent: float
    probability_of_cancer_percent: float
    calcification_type: tuple[str, str] | None = None  # (code value, scheme) of Calcification Type, if written
    calcification_distribution: tuple[str, str] | None = None


@dataclass
class CadReport:
    findings_summary: str  # code meaning of CAD Processing and Findings Summary
    library_sop_instance_uids: list[str]
    findings: list[CadFinding] = field(default_factory=list)
    impressions: list[str] = field(default_factory=list)  # Impression Description texts (our warnings)


def _code_pair(item: Dataset, code: object) -> tuple[str, str] | None:
    value = _code_value(item, code, False)
    return None if value is None else (str(value.CodeValue), str(value.CodingSchemeDesignator))


@_damage_is_read_error
def read_cad_report(ds: Dataset) -> CadReport:
    """The findings of an mccad Mammography CAD SR (TID 4000)."""
    if str(ds.get("SOPClassUID", "")) != MAMMOGRAPHY_CAD_SR or not concept_is(ds, mc.codes.DCM.MammographyCADReport):
        raise ResultReadError("not a Mammography CAD SR with a Mammography CAD Report root")
    library = find_one(ds, mc.codes.DCM.ImageLibrary)
    summary = find_one(ds, mc.codes.DCM.CADProcessingAndFindingsSummary)
    report = CadReport(findings_summary=str(summary.ConceptCodeSequence[0].CodeMeaning),
                       library_sop_instance_uids=[_referenced_sop(item) for item in children(library)])
    for item in walk(summary):
        if concept_is(item, mc.codes.DCM.SingleImageFinding):
            outline = find_one(item, mc.codes.DCM.Outline)
            report.findings.append(CadFinding(
                source_sop_instance_uid=_referenced_sop(children(outline)[0]),
                outline=np.asarray(outline.GraphicData, dtype=np.float32).reshape(-1, 2),
                certainty_percent=num_value(find_one(item, mc.CERTAINTY_OF_FINDING)),
                probability_of_cancer_percent=num_value(find_one(item, mc.PROBABILITY_OF_CANCER)),
                calcification_type=_code_pair(item, mc.CALCIFICATION_TYPE),
                calcification_distribution=_code_pair(item, mc.CALCIFICATION_DISTRIBUTION)))
        elif concept_is(item, mc.codes.DCM.ImpressionDescription):
            report.impressions.append(str(item.TextValue))
    return report


@dataclass
class HeatmapSegmentation:
    source_sop_instance_uid: str
    segment_labels: dict[int, str]  # segment number -> label, e.g. {3: "malignancy activation 0.75-1.00"}
    bands: np.ndarray  # uint8, the source's (rows, columns): the segment number of each pixel, 0 for none


@_damage_is_read_error
def read_heatmap_segmentation(ds: Dataset) -> HeatmapSegmentation:
    """The activation bands of an mccad binary SEG: each frame's pixels get the number of the segment that frame
    belongs to (Segment Identification of the frame's functional groups). The bands do not overlap, so the result
    is exact; a SEG of another type is a ``ResultReadError``."""
    if str(ds.get("SOPClassUID", "")) != SEGMENTATION or ds.get("SegmentationType") != "BINARY":
        raise ResultReadError("not a binary Segmentation")
    frames = ds.pixel_array
    frames = frames[np.newaxis] if frames.ndim == 2 else frames
    bands = np.zeros(frames.shape[1:], np.uint8)
    for frame, groups in zip(frames, ds.PerFrameFunctionalGroupsSequence, strict=True):
        bands[frame != 0] = int(groups.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
    source = ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    return HeatmapSegmentation(source_sop_instance_uid=str(source), bands=bands,
                               segment_labels={int(s.SegmentNumber): str(s.SegmentLabel) for s in ds.SegmentSequence})


@dataclass
class PresentationBox:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 from the rectangle's corners
    caption: str | None


@dataclass
class PresentationState:
    source_sop_instance_uids: list[str]
    boxes: list[PresentationBox]
    texts: list[str]  # every text object, captions and warnings


@_damage_is_read_error
def read_presentation_state(ds: Dataset) -> PresentationState:
    """Boxes, captions and texts of an mccad GSPS (captions matched to boxes by their tracking identifier)."""
    if str(ds.get("SOPClassUID", "")) != GSPS:
        raise ResultReadError("not a Grayscale Softcopy Presentation State")
    sources = [str(image.ReferencedSOPInstanceUID) for series in ds.get("ReferencedSeriesSequence", [])
               for image in series.ReferencedImageSequence]
    boxes: list[PresentationBox] = []
    texts: list[str] = []
    for annotation in ds.get("GraphicAnnotationSequence", []):
        captions = {}
        for text in annotation.get("TextObjectSequence", []):
            texts.append(str(text.UnformattedTextValue))
            if "TrackingID" in text:
                captions[str(text.TrackingID)] = str(text.UnformattedTextValue)
        for graphic in annotation.get("GraphicObjectSequence", []):
            points = np.asarray(graphic.GraphicData, dtype=np.float64).reshape(-1, 2)
            boxes.append(PresentationBox(
                box=(float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()),
                     float(points[:, 1].max())),
                caption=captions.get(str(graphic.get("TrackingID", "")))))
    return PresentationState(source_sop_instance_uids=sources, boxes=boxes, texts=texts)
