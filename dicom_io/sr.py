"""TID 1500 Measurement Report for one study (PS3.16 TID 1500, TID 1410, TID 1501; highdicom Comprehensive 3D SR).

Layout, chosen so that a viewer shows what matters and our reader gets every field of ``StudyResult`` back exactly:

* one TID 1410 planar ROI group per lesion: the box as an Image Region SCOORD (closed 5-point POLYLINE in
  (column, row), PS3.3 C.18.6), finding "Calcification of breast" (SCT 309587003) at the breast with laterality,
  qualitative evaluation "Behavior of the finding site" = Benign / Malignant, "Probability of cancer" (DCM 111047)
  and the other probabilities as NUM with unit UCUM ``{ratio}``, the exact box edges as NUM in ``{pixels}``
  (SCOORD GraphicData is 32-bit float and cannot hold every float64 coordinate);
* one TID 1501 group per image, per breast and for the exam, told apart by their Measurement Method (a private
  99MCCAD code, see ``dicom_io.codes``), with label, probabilities and the facts a reader needs back;
* the report-level "Qualitative Evaluations" container (TID 1500 row 12) with warnings (the NOT FOR CLINICAL USE
  banner), exam key, schema version, timings and one model description per model;
* the algorithm (TID 4019) in every group and a device observer context (TID 1004).

Every NUM carries the exact float in Floating Point Value (0040,A161) next to the Decimal String.
"""
from __future__ import annotations

import json

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from dicom_io import codes as mc
from dicom_io.result_identity import (DEVICE_SERIAL, MANUFACTURER, MODEL_NAME, SERIES_NUMBERS,
                                      algorithm_identification, image_header, model_description, observation_context,
                                      output_uids, software_versions)
from dicom_io.uids import derive_uid
from models.results import BreastResult, ImageResult, LesionResult, StudyResult

KIND = "sr-tid1500"
DOCUMENT_TITLE = codes.DCM.ImagingMeasurementReport


def rectangle_polyline(box: tuple[float, float, float, float]) -> np.ndarray:
    """A box (x0, y0, x1, y1) as the closed 5-point POLYLINE in (column, row) that PS3.3 C.18.6.1.2 expects."""
    x0, y0, x1, y1 = box
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float64)


def clipped_box(lesion: LesionResult, image: ImageResult) -> tuple[float, float, float, float]:
    """The box limited to the image, for drawing: a detector box may overhang the edge by a fraction of a pixel;
    the exact, unclipped edges stay in the NUM items."""
    x0, y0, x1, y1 = lesion.box.as_tuple()
    cols, rows = float(image.columns), float(image.rows)
    return (min(max(x0, 0.0), cols), min(max(y0, 0.0), rows), min(max(x1, 0.0), cols), min(max(y1, 0.0), rows))


def _ratio(name, value: float) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=float(value), unit=mc.RATIO)


def _text(name, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def _uidref(name, value: str) -> hd.sr.UIDRefContentItem:
    return hd.sr.UIDRefContentItem(name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def _finding_site(laterality: str | None) -> list[hd.sr.FindingSite]:
    return [hd.sr.FindingSite(anatomic_location=mc.BREAST, laterality=mc.laterality_code(laterality))]


def _label(label: str) -> hd.sr.QualitativeEvaluation:
    return hd.sr.QualitativeEvaluation(name=mc.BEHAVIOR_OF_FINDING_SITE, value=mc.label_code(label))


def _tracking(result: StudyResult, what: str, identifier: str) -> hd.sr.TrackingIdentifier:
    return hd.sr.TrackingIdentifier(uid=derive_uid(result.study_instance_uid, result.model_version_tag(), KIND, what),
                                    identifier=identifier)


def _lesion_group(result: StudyResult, image: ImageResult, source: Dataset,
                  lesion: LesionResult) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    measurements = [_ratio(mc.PROBABILITY_OF_CANCER, lesion.malignancy_probability),
                    _ratio(mc.PROBABILITY_OF_PREDICTED_CLASS, lesion.probability)]
    for name, value in ((mc.P_INVASIVE_INCL_MICROINVASION, lesion.invasive_incl_microinvasion_probability),
                        (mc.P_INVASIVE_EXCL_MICROINVASION, lesion.invasive_excl_microinvasion_probability),
                        (mc.P_ER_POSITIVE, lesion.er_positive_probability)):
        if value is not None:
            measurements.append(_ratio(name, value))
    for name, value in zip((mc.BOX_X0, mc.BOX_Y0, mc.BOX_X1, mc.BOX_Y1), lesion.box.as_tuple()):
        measurements.append(hd.sr.Measurement(name=name, value=float(value), unit=mc.PIXELS))
    region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                               graphic_data=rectangle_polyline(clipped_box(lesion, image)),
                               source_image=hd.sr.SourceImageForRegion.from_source_image(source))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(result, f"lesion/{image.sop_instance_uid}/{lesion.lesion_id}",
                                      f"lesion {lesion.lesion_id}: {lesion.label} {lesion.probability:.2f}"),
        referenced_region=region, finding_type=mc.BREAST_CALCIFICATION,
        algorithm_id=algorithm_identification(result), finding_sites=_finding_site(image.laterality),
        measurements=measurements, qualitative_evaluations=[_label(lesion.label)])


def _image_group(result: StudyResult, image: ImageResult,
                 source: Dataset) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    measurements = [_ratio(mc.PROBABILITY_OF_CANCER, image.malignancy_probability),
                    _ratio(mc.PROBABILITY_OF_PREDICTED_CLASS, image.probability)]
    if image.sppnet_malignancy_probability is not None:
        measurements.append(_ratio(mc.SPPNET_PROBABILITY_OF_MALIGNANCY, image.sppnet_malignancy_probability))
    measurements += [hd.sr.Measurement(name=mc.IMAGE_ROWS, value=int(image.rows), unit=mc.PIXELS),
                     hd.sr.Measurement(name=mc.IMAGE_COLUMNS, value=int(image.columns), unit=mc.PIXELS)]
    evaluations = [_label(image.label)]
    if image.view is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(name=mc.IMAGE_VIEW, value=mc.view_code(image.view)))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(result, f"image/{image.sop_instance_uid}", f"image {image.view or ''}".strip()),
        finding_type=mc.BREAST_CALCIFICATION, method=mc.IMAGE_ASSESSMENT, algorithm_id=algorithm_identification(result),
        finding_sites=_finding_site(image.laterality), measurements=measurements, qualitative_evaluations=evaluations,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)])
    extra = group[0].ContentSequence
    if image.frame_of_reference_uid:
        extra.append(_uidref(mc.FRAME_OF_REFERENCE_UID, image.frame_of_reference_uid))
    if image.heatmap is not None:
        extra.append(_text(mc.HEATMAP_FILE, image.heatmap))
    return group


def _breast_group(result: StudyResult, breast: BreastResult) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(result, f"breast/{breast.laterality}", f"breast {breast.laterality or '?'}"),
        finding_type=mc.BREAST_CALCIFICATION, method=mc.BREAST_ASSESSMENT,
        algorithm_id=algorithm_identification(result),
        finding_sites=_finding_site(breast.laterality),
        measurements=[_ratio(mc.PROBABILITY_OF_CANCER, breast.malignancy_probability),
                      _ratio(mc.PROBABILITY_OF_PREDICTED_CLASS, breast.probability)],
        qualitative_evaluations=[_label(breast.label)])
    extra = group[0].ContentSequence
    if breast.decided_by is not None:
        extra.append(_uidref(mc.DECIDED_BY_IMAGE, breast.decided_by))
    for uid in breast.image_uids:
        extra.append(_uidref(mc.IMAGE_OF_BREAST, uid))
    return group


def _exam_group(result: StudyResult) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    exam = result.exam
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(result, "exam", "exam"),
        finding_type=mc.BREAST_CALCIFICATION, method=mc.EXAM_ASSESSMENT, algorithm_id=algorithm_identification(result),
        finding_sites=[hd.sr.FindingSite(anatomic_location=mc.BREAST)],
        measurements=[_ratio(mc.PROBABILITY_OF_CANCER, exam.malignancy_probability),
                      _ratio(mc.PROBABILITY_OF_PREDICTED_CLASS, exam.probability)],
        qualitative_evaluations=[_label(exam.label)])


def _report_evaluations(result: StudyResult) -> hd.sr.ContainerContentItem:
    """TID 1500 row 12: report-level qualitative evaluations (TEXT), here what no measurement group holds."""
    container = hd.sr.ContainerContentItem(name=mc.QUALITATIVE_EVALUATIONS,
                                           relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    items = [_text(mc.WARNING, w) for w in result.warnings]
    if result.exam_key is not None:
        items.append(_text(mc.EXAM_KEY, result.exam_key))
    items.append(_text(mc.SCHEMA_VERSION, str(result.schema_version)))
    items.append(_text(mc.TIMINGS, json.dumps(result.timings_s)))
    items += [_text(mc.MODEL_DESCRIPTION, model_description(m)) for m in result.models]
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def build_measurement_report(result: StudyResult, sources: dict[str, Dataset]) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 SR of ``result``; ``sources`` maps SOP Instance UID -> source header (pixels not needed)."""
    template = next(iter(sources.values()), None)
    headers = {im.sop_instance_uid: image_header(im, sources, template) for im in result.images}
    groups: list = []
    for image in result.images:
        groups += [_lesion_group(result, image, headers[image.sop_instance_uid], lesion) for lesion in image.lesions]
    groups += [_image_group(result, image, headers[image.sop_instance_uid]) for image in result.images]
    groups += [_breast_group(result, breast) for breast in result.breasts]
    groups.append(_exam_group(result))
    report = hd.sr.MeasurementReport(observation_context=observation_context(),
                                     procedure_reported=codes.SCT.Mammography, imaging_measurements=groups,
                                     title=DOCUMENT_TITLE)
    report[0].ContentSequence.append(_report_evaluations(result))
    series_uid, sop_uid = output_uids(result, KIND)
    evidence = list(headers.values()) or ([template] if template is not None else [])
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report[0], series_instance_uid=series_uid, series_number=SERIES_NUMBERS[KIND],
        sop_instance_uid=sop_uid, instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name=MODEL_NAME,
        software_versions=software_versions(result), device_serial_number=DEVICE_SERIAL,
        coding_schemes=[mc.coding_scheme_identification()], is_complete=True,
        transfer_syntax_uid=ExplicitVRLittleEndian, series_description="mccad calcification findings (TID 1500)")
    return sr
