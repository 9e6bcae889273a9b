"""TID 1500 Measurement Report for one study (PS3.16 TID 1500, TID 1501, TID 300; highdicom Comprehensive 3D SR).

Layout, chosen so that OHIF / Cornerstone3D draw each lesion as a planar annotation with its label (the tests check
both) and our reader gets every field of ``StudyResult`` back exactly:

* "Imaging Measurements" holds one measurement group per lesion and nothing else (viewers take every group there
  for an annotation on an image), written the way Cornerstone3D writes its own rectangles: TID 1501 with the region
  under the first measurement (TID 300), not TID 1410's group-level Image Region, which OHIF 3 draws but labels
  with the NUM values only and cannot track. Each group has
  - the Tracking Identifier ``Cornerstone3DTools@^0.1.0:RectangleROI`` (the tool Cornerstone3D's SR adapter, and so
    OHIF, turns it into) and a Tracking Unique Identifier derived from the study, the models and the lesion;
  - Finding "Calcification cluster" (SCT 129769006: a box holds a cluster, not one calcification) at the breast with
    laterality, and Behavior of the finding site (DCM 125312) = Benign / Malignant;
  - the box as a closed 5-point POLYLINE SCOORD in (column, row) (PS3.3 C.18.6), INFERRED FROM under the first
    NUM, "Probability of cancer" (DCM 111047) (TID 300 row 8), which is where Cornerstone3D's adapter and OHIF look
    for a measurement's region;
  - a Comment (DCM 121106), the text viewers show as the annotation's label: "#<lesion id> <label>, P(cancer) <p>";
  - Certainty of Finding (DCM 111012) = the detector's score, the pathotype / ER probabilities and the exact box
    edges as NUM (SCOORD GraphicData is 32-bit float and cannot hold every float64 coordinate);
  - when the cluster has BI-RADS descriptors: Calcification Type (DCM 111009, a CID 6010 code) and Calcification
    Distribution (DCM 111008, a CID 6012 code) of the most likely terms as CODE items, the 95 % interval of the
    Probability of cancer and the detector's own P(malignant) as NUM, and every probability as a JSON TEXT item
    (99MCCAD MCC040) so that our reader gets the descriptors back exactly;
* the report-level "Qualitative Evaluations" container (TID 1500 row 12) holds the warnings (the NOT FOR CLINICAL
  USE banner), the result's own Study Instance UID (an exam spanning studies has a report in each, see
  ``dicom_io.outputs``), exam key, schema version, timings, one model description per model, one container per image,
  per breast and for the exam (told apart by a private 99MCCAD concept name, see ``dicom_io.codes``) with its label,
  P(malignant) and the facts a reader needs back. They carry no region, so they stay out of Imaging Measurements;
* the algorithm (TID 4019) in every lesion group and a device observer context (TID 1004).

Every NUM carries the exact float in Floating Point Value (0040,A161) next to the Decimal String. The confidence of
each label is not stored: it is ``models.results.decide`` of the P(malignant), as everywhere else.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from dicom_io import codes as mc
from dicom_io.result_identity import (DEVICE_SERIAL, MANUFACTURER, MODEL_NAME, SERIES_NUMBERS,
                                      algorithm_identification, evidence_for, image_header, model_description,
                                      observation_context, output_uids, predecessors_of, software_versions)
from dicom_io.uids import derive_uid
from models.results import BreastResult, ImageResult, LesionResult, StudyResult

KIND = "sr-tid1500"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
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


RT = hd.sr.RelationshipTypeValues
#: What Cornerstone3D's SR adapter (and so OHIF) reads a TID 1410 rectangle as.
CORNERSTONE_RECTANGLE = "Cornerstone3DTools@^0.1.0:RectangleROI"


def _ratio(name, value: float, **kwargs) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=float(value), unit=mc.RATIO, **kwargs)


def _text(name, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type=RT.CONTAINS)


def _uidref(name, value: str) -> hd.sr.UIDRefContentItem:
    return hd.sr.UIDRefContentItem(name=name, value=value, relationship_type=RT.CONTAINS)


def _finding_site(laterality: str | None) -> list[hd.sr.FindingSite]:
    return [hd.sr.FindingSite(anatomic_location=mc.BREAST, laterality=mc.laterality_code(laterality))]


def _label(label: str) -> hd.sr.QualitativeEvaluation:
    return hd.sr.QualitativeEvaluation(name=mc.BEHAVIOR_OF_FINDING_SITE, value=mc.label_code(label))


def lesion_comment(lesion: LesionResult) -> str:
    """The Comment of a lesion group, the label a viewer shows: "#3 malignant, P(cancer) 0.87"."""
    return f"#{lesion.lesion_id} {lesion.caption()}"


def _lesion_group(result: StudyResult, image: ImageResult, source: Dataset,
                  lesion: LesionResult) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    coordinates = hd.sr.CoordinatesForMeasurement(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=rectangle_polyline(clipped_box(lesion, image)),
        source_image=hd.sr.SourceImageForRegion.from_source_image(source))
    measurements = [_ratio(mc.PROBABILITY_OF_CANCER, lesion.malignancy_probability,
                           referenced_coordinates=[coordinates]),
                    _ratio(mc.CERTAINTY_OF_FINDING, lesion.score)]
    for name, value in ((mc.P_INVASIVE_INCL_MICROINVASION, lesion.invasive_incl_microinvasion_probability),
                        (mc.P_INVASIVE_EXCL_MICROINVASION, lesion.invasive_excl_microinvasion_probability),
                        (mc.P_ER_POSITIVE, lesion.er_positive_probability)):
        if value is not None:
            measurements.append(_ratio(name, value))
    evaluations = [_label(lesion.label)]
    if lesion.descriptors is not None:
        low, high = lesion.malignancy_interval
        measurements += [_ratio(mc.P_CANCER_LOW, low), _ratio(mc.P_CANCER_HIGH, high)]
        if lesion.network_malignancy_probability is not None:
            measurements.append(_ratio(mc.NETWORK_PROBABILITY_OF_MALIGNANCY, lesion.network_malignancy_probability))
        evaluations += [
            hd.sr.QualitativeEvaluation(name=mc.CALCIFICATION_TYPE,
                                        value=mc.calcification_type_code(lesion.descriptors.calcification_type)),
            hd.sr.QualitativeEvaluation(name=mc.CALCIFICATION_DISTRIBUTION,
                                        value=mc.calcification_distribution_code(lesion.descriptors.distribution))]
    for name, value in zip((mc.BOX_X0, mc.BOX_Y0, mc.BOX_X1, mc.BOX_Y1), lesion.box.as_tuple(), strict=True):
        measurements.append(hd.sr.Measurement(name=name, value=float(value), unit=mc.PIXELS))
    uid = derive_uid(result.study_instance_uid, result.model_version_tag(), KIND,
                     f"lesion/{image.sop_instance_uid}/{lesion.lesion_id}")
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier=CORNERSTONE_RECTANGLE),
        finding_type=mc.CALCIFICATION_CLUSTER, algorithm_id=algorithm_identification(result),
        finding_sites=_finding_site(image.laterality), measurements=measurements,
        qualitative_evaluations=evaluations)
    group[0].ContentSequence.append(_text(mc.COMMENT, lesion_comment(lesion)))
    if lesion.descriptors is not None:
        group[0].ContentSequence.append(_text(mc.CALCIFICATION_DESCRIPTORS, lesion.descriptors.model_dump_json()))
    return group


def _assessment(name, laterality: str | None, label: str, malignancy_probability: float,
                sites: bool = True) -> hd.sr.ContainerContentItem:
    """A container with a finding's label and P(malignant), for the image, breast and exam assessments."""
    container = hd.sr.ContainerContentItem(name=name, relationship_type=RT.CONTAINS)
    items: list[Dataset] = []
    if sites:
        items += _finding_site(laterality)
    items += [*_label(label), *_ratio(mc.PROBABILITY_OF_CANCER, malignancy_probability)]
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def _image_assessment(image: ImageResult, source: Dataset) -> hd.sr.ContainerContentItem:
    container = _assessment(mc.IMAGE_ASSESSMENT, image.laterality, image.label, image.malignancy_probability)
    items = container.ContentSequence
    items.append(hd.sr.SourceImageForMeasurementGroup.from_source_image(source))
    if image.sppnet_malignancy_probability is not None:
        items.extend(_ratio(mc.SPPNET_PROBABILITY_OF_MALIGNANCY, image.sppnet_malignancy_probability))
    items.extend(hd.sr.Measurement(name=mc.IMAGE_ROWS, value=int(image.rows), unit=mc.PIXELS))
    items.extend(hd.sr.Measurement(name=mc.IMAGE_COLUMNS, value=int(image.columns), unit=mc.PIXELS))
    if image.view is not None:
        items.extend(hd.sr.QualitativeEvaluation(name=mc.IMAGE_VIEW, value=mc.view_code(image.view)))
    if image.frame_of_reference_uid:
        items.append(_uidref(mc.FRAME_OF_REFERENCE_UID, image.frame_of_reference_uid))
    if image.heatmap is not None:
        items.append(_text(mc.HEATMAP_FILE, image.heatmap))
    return container


def _breast_assessment(breast: BreastResult, headers: dict[str, Dataset]) -> hd.sr.ContainerContentItem:
    container = _assessment(mc.BREAST_ASSESSMENT, breast.laterality, breast.label, breast.malignancy_probability)
    if breast.decided_by is not None:
        container.ContentSequence.append(_uidref(mc.DECIDED_BY_IMAGE, breast.decided_by))
    for uid in breast.image_uids:
        container.ContentSequence.append(hd.sr.ImageContentItem(
            name=mc.IMAGE_OF_BREAST, referenced_sop_class_uid=headers[uid].SOPClassUID, referenced_sop_instance_uid=uid,
            relationship_type=RT.CONTAINS))
    return container


def _report_evaluations(result: StudyResult, headers: dict[str, Dataset]) -> hd.sr.ContainerContentItem:
    """TID 1500 row 12: report-level qualitative evaluations, here what no lesion group holds."""
    container = hd.sr.ContainerContentItem(name=mc.QUALITATIVE_EVALUATIONS, relationship_type=RT.CONTAINS)
    items: list[Dataset] = [_text(mc.WARNING, w) for w in result.warnings]
    items.append(_uidref(mc.RESULT_STUDY_UID, result.study_instance_uid))
    if result.exam_key is not None:
        items.append(_text(mc.EXAM_KEY, result.exam_key))
    items.append(_text(mc.SCHEMA_VERSION, str(result.schema_version)))
    items.append(_text(mc.TIMINGS, json.dumps(result.timings_s)))
    items += [_text(mc.MODEL_DESCRIPTION, model_description(m)) for m in result.models]
    items += [_image_assessment(image, headers[image.sop_instance_uid]) for image in result.images]
    items += [_breast_assessment(breast, headers) for breast in result.breasts]
    items.append(_assessment(mc.EXAM_ASSESSMENT, None, result.exam.label, result.exam.malignancy_probability,
                             sites=False))
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def build_measurement_report(result: StudyResult, sources: dict[str, Dataset], study_uid: str | None = None,
                             earlier: Sequence[Dataset] = ()) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 SR of ``result`` filed into ``study_uid`` (default: the result's own study); ``sources`` maps
    SOP Instance UID -> source header (pixels not needed). Every SR of an exam holds the whole result. The reports
    in ``earlier`` of this study and SOP class, other than this one, become its Predecessor Documents."""
    template = next(iter(sources.values()), None)
    headers = {im.sop_instance_uid: image_header(im, sources, template) for im in result.images}
    groups: list = []
    for image in result.images:
        groups += [_lesion_group(result, image, headers[image.sop_instance_uid], lesion) for lesion in image.lesions]
    # highdicom wants at least one group; TID 1500 needs Imaging Measurements only when there is one (row 6 or 12)
    placeholder = [hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(identifier="none"))] if not groups else []
    report = hd.sr.MeasurementReport(observation_context=observation_context(),
                                     procedure_reported=codes.SCT.Mammography,
                                     imaging_measurements=groups or placeholder, title=DOCUMENT_TITLE)
    content = [item for item in report[0].ContentSequence
               if not (placeholder and item.ValueType == "CONTAINER"
                       and mc.same_concept(item.ConceptNameCodeSequence[0], codes.DCM.ImagingMeasurements))]
    report[0].ContentSequence = hd.sr.ContentSequence([*content, _report_evaluations(result, headers)])
    study_uid = study_uid or result.study_instance_uid
    series_uid, sop_uid = output_uids(result, KIND, study_uid=study_uid)
    evidence = evidence_for(headers, study_uid)
    predecessors = predecessors_of(earlier, study_uid, COMPREHENSIVE_3D_SR, sop_uid)
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report[0], series_instance_uid=series_uid, series_number=SERIES_NUMBERS[KIND],
        sop_instance_uid=sop_uid, instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name=MODEL_NAME,
        software_versions=software_versions(result), device_serial_number=DEVICE_SERIAL,
        coding_schemes=[mc.coding_scheme_identification()], is_complete=True, previous_versions=predecessors,
        transfer_syntax_uid=ExplicitVRLittleEndian, series_description="mccad calcification findings (TID 1500)")
    return sr
