"""Mammography CAD SR (SOP class 1.2.840.10008.5.1.4.1.1.88.50, PS3.3 A.35.5) with a TID 4000 "Mammography CAD
Document Root" content tree, built from highdicom content items because highdicom has no template for it.

What the templates require (PS3.16) and what we fill:

* TID 4000 root CONTAINER (DCM 111036 "Mammography CAD Report"), template identifier 4000 / DCMR.
  - Language of content (TID 1204, U): en-US.
  - Observation context (TID 1001/1004): a device observer, UID and name "mccad FPNNet", manufacturer, model.
  - Image Library (TID 4020, MC: required because findings reference images): one IMAGE per analysed source image
    with its acquisition context (TID 4021): Image Laterality (DCM 111027) when known, Image View (DCM 111031)
    when known, Horizontal / Vertical Pixel Spacing (DCM 111026 / 111066) when the source states one.
  - CAD Processing and Findings Summary (TID 4001, M): "All algorithms succeeded; with findings" or "...; without
    findings" (CID 6047). Under it one Individual Impression/Recommendation container (TID 4003) per image with
    findings, holding one Single Image Finding (TID 4006) "Calcification Cluster" (SCT 129769006, CID 6014) per
    lesion: a detector box holds a cluster, and the detector does not count the calcifications in it. Each has
    Rendering Intent "Presentation Required", Certainty of Finding (DCM 111012, %) = the detector's score,
    Probability of cancer (DCM 111047, %), Center (DCM 111010, SCOORD POINT) and Outline (DCM 111041, closed
    POLYLINE of the box), each SELECTED FROM the source IMAGE, and the algorithm (TID 4019). A cluster with BI-RADS
    descriptors also has, as properties of the finding, Calcification Distribution (DCM 111008, CID 6012: the
    cluster's own descriptor) and Calcification Type (DCM 111009, CID 6010) of its most likely terms.
  - Summary of Detections (DCM 111064) and Summary of Analyses (DCM 111065), both "Succeeded" (CID 6042), inferred
    from Successful Detections / Analyses containers naming what ran (TID 4015 / 4016) and the algorithm.
  - The result's warnings (NOT FOR CLINICAL USE) as Impression Description TEXT (DCM 111033) under the summary.

Not filled (optional in the templates, and nothing in our result supports them): Breast Composition (TID 4007),
Recommendations, BI-RADS assessment categories, temporal comparison with prior studies, operating points (the
result does not carry the detector threshold table).
"""
from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from highdicom.sr.sop import _SR
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from dicom_io import codes as mc
from dicom_io.mg_metadata import pixel_spacing_mm
from dicom_io.result_identity import (DEVICE_SERIAL, MANUFACTURER, MODEL_NAME, SERIES_NUMBERS,
                                      algorithm_identification, evidence_for, image_header, observation_context,
                                      output_uids, predecessors_of, software_versions)
from dicom_io.sr import clipped_box, rectangle_polyline
from models.results import ImageResult, LesionResult, StudyResult

KIND = "sr-mammo-cad"
MAMMOGRAPHY_CAD_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.50"
RT = hd.sr.RelationshipTypeValues
PRESENTATION_REQUIRED = codes.DCM.PresentationRequiredRenderingDeviceIsExpectedToPresent
SOURCE = hd.sr.CodedConcept("260753009", "SCT", "Source")
ENGLISH_US = hd.sr.CodedConcept("en-US", "RFC5646", "English (United States)")


def _seq(item: Dataset, children: list[Dataset]) -> None:
    """Attach ``children``; none means no Content Sequence at all (an empty one is invalid, PS3.3 C.17.3)."""
    if children:
        item.ContentSequence = hd.sr.ContentSequence(children)


def _image_ref(source: Dataset, relationship: RT) -> hd.sr.ImageContentItem:
    return hd.sr.ImageContentItem(name=SOURCE, referenced_sop_class_uid=source.SOPClassUID,
                                  referenced_sop_instance_uid=source.SOPInstanceUID, relationship_type=relationship)


def _percent(name, value: float) -> hd.sr.NumContentItem:
    return hd.sr.NumContentItem(name=name, value=float(value) * 100.0, unit=mc.PERCENT,
                                relationship_type=RT.HAS_PROPERTIES)


def _rendering_intent() -> hd.sr.CodeContentItem:
    return hd.sr.CodeContentItem(name=codes.DCM.RenderingIntent, value=PRESENTATION_REQUIRED,
                                 relationship_type=RT.HAS_CONCEPT_MOD)


def _algorithm(result: StudyResult, relationship: RT) -> list[Dataset]:
    """TID 4019 items re-parented with the relationship the including template asks for."""
    items = list(algorithm_identification(result))
    for item in items:
        item.RelationshipType = relationship.value
    return items


def _library_entry(image: ImageResult, source: Dataset) -> hd.sr.ImageContentItem:
    entry = _image_ref(source, RT.CONTAINS)
    context: list[Dataset] = []
    if image.laterality is not None:
        context.append(hd.sr.CodeContentItem(name=mc.IMAGE_LATERALITY, value=mc.laterality_code(image.laterality),
                                             relationship_type=RT.HAS_ACQ_CONTEXT))
    if image.view is not None:
        context.append(hd.sr.CodeContentItem(name=mc.IMAGE_VIEW, value=mc.view_code(image.view),
                                             relationship_type=RT.HAS_ACQ_CONTEXT))
    spacing = pixel_spacing_mm(source, [])
    if spacing is not None:
        for name, value in ((codes.DCM.HorizontalPixelSpacing, spacing[1]),
                            (codes.DCM.VerticalPixelSpacing, spacing[0])):
            context.append(hd.sr.NumContentItem(name=name, value=float(value), unit=mc.MILLIMETER,
                                                relationship_type=RT.HAS_ACQ_CONTEXT))
    if context:
        _seq(entry, context)
    return entry


def _single_image_finding(result: StudyResult, image: ImageResult, lesion: LesionResult,
                          source: Dataset) -> hd.sr.CodeContentItem:
    finding = hd.sr.CodeContentItem(name=codes.DCM.SingleImageFinding, value=mc.CALCIFICATION_CLUSTER,
                                    relationship_type=RT.CONTAINS)
    x0, y0, x1, y1 = box = clipped_box(lesion, image)
    center = hd.sr.ScoordContentItem(name=codes.DCM.Center, graphic_type=hd.sr.GraphicTypeValues.POINT,
                                     graphic_data=np.array([[(x0 + x1) / 2.0, (y0 + y1) / 2.0]]),
                                     relationship_type=RT.HAS_PROPERTIES)
    outline = hd.sr.ScoordContentItem(name=codes.DCM.Outline, graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                                      graphic_data=rectangle_polyline(box),
                                      relationship_type=RT.HAS_PROPERTIES)
    for scoord in (center, outline):
        _seq(scoord, [_image_ref(source, RT.SELECTED_FROM)])
    descriptors: list[Dataset] = []
    if lesion.descriptors is not None:
        descriptors = [
            hd.sr.CodeContentItem(name=mc.CALCIFICATION_DISTRIBUTION, relationship_type=RT.HAS_PROPERTIES,
                                  value=mc.calcification_distribution_code(lesion.descriptors.distribution)),
            hd.sr.CodeContentItem(name=mc.CALCIFICATION_TYPE, relationship_type=RT.HAS_PROPERTIES,
                                  value=mc.calcification_type_code(lesion.descriptors.calcification_type))]
    _seq(finding, [_rendering_intent(), _percent(mc.CERTAINTY_OF_FINDING, lesion.score),
                   _percent(mc.PROBABILITY_OF_CANCER, lesion.malignancy_probability), *descriptors, center, outline,
                   *_algorithm(result, RT.HAS_PROPERTIES)])
    return finding


def _impression(result: StudyResult, image: ImageResult, source: Dataset) -> hd.sr.ContainerContentItem:
    impression = hd.sr.ContainerContentItem(name=mc.INDIVIDUAL_IMPRESSION_RECOMMENDATION,
                                            relationship_type=RT.HAS_PROPERTIES)
    _seq(impression, [_rendering_intent(),
                      *[_single_image_finding(result, image, lesion, source) for lesion in image.lesions]])
    return impression


def _performed(result: StudyResult, summary_name, container_name, item_name, value) -> hd.sr.CodeContentItem:
    summary = hd.sr.CodeContentItem(name=summary_name, value=codes.DCM.Succeeded, relationship_type=RT.CONTAINS)
    container = hd.sr.ContainerContentItem(name=container_name, relationship_type=RT.INFERRED_FROM)
    performed = hd.sr.CodeContentItem(name=item_name, value=value, relationship_type=RT.CONTAINS)
    _seq(performed, _algorithm(result, RT.HAS_PROPERTIES))
    _seq(container, [performed])
    _seq(summary, [container])
    return summary


def build_cad_report(result: StudyResult, sources: dict[str, Dataset], study_uid: str | None = None,
                     earlier: Sequence[Dataset] = ()) -> _SR:
    """The Mammography CAD SR of ``result`` filed into ``study_uid`` (default: the result's own study; see the
    module docstring for the content tree); the reports in ``earlier`` of this study and SOP class, other than this
    one, become its Predecessor Documents."""
    template = next(iter(sources.values()), None)
    headers = {im.sop_instance_uid: image_header(im, sources, template) for im in result.images}
    root = hd.sr.ContainerContentItem(name=codes.DCM.MammographyCADReport, template_id="4000")
    library = hd.sr.ContainerContentItem(name=codes.DCM.ImageLibrary, relationship_type=RT.CONTAINS)
    _seq(library, [_library_entry(im, headers[im.sop_instance_uid]) for im in result.images])
    any_findings = any(im.lesions for im in result.images)
    summary = hd.sr.CodeContentItem(
        name=codes.DCM.CADProcessingAndFindingsSummary, relationship_type=RT.CONTAINS,
        value=codes.DCM.AllAlgorithmsSucceededWithFindings if any_findings
        else codes.DCM.AllAlgorithmsSucceededWithoutFindings)
    _seq(summary, [
        *[_impression(result, im, headers[im.sop_instance_uid]) for im in result.images if im.lesions],
        *[hd.sr.TextContentItem(name=codes.DCM.ImpressionDescription, value=w, relationship_type=RT.HAS_PROPERTIES)
          for w in result.warnings]])
    content = [*hd.sr.LanguageOfContentItemAndDescendants(language=ENGLISH_US),
               *observation_context(), library, summary,
               _performed(result, codes.DCM.SummaryOfDetections, codes.DCM.SuccessfulDetections,
                          codes.DCM.DetectionPerformed, mc.CALCIFICATION_CLUSTER),
               _performed(result, codes.DCM.SummaryOfAnalyses, codes.DCM.SuccessfulAnalyses,
                          codes.DCM.AnalysisPerformed, mc.INDIVIDUAL_IMPRESSION_RECOMMENDATION_ANALYSIS)]
    _seq(root, content)
    study_uid = study_uid or result.study_instance_uid
    series_uid, sop_uid = output_uids(result, KIND, study_uid=study_uid)
    evidence = evidence_for(headers, study_uid)
    predecessors = predecessors_of(earlier, study_uid, MAMMOGRAPHY_CAD_SR_STORAGE, sop_uid)
    return _SR(evidence=evidence, content=root, series_instance_uid=series_uid, series_number=SERIES_NUMBERS[KIND],
               sop_instance_uid=sop_uid, sop_class_uid=MAMMOGRAPHY_CAD_SR_STORAGE, instance_number=1,
               manufacturer=MANUFACTURER, manufacturer_model_name=MODEL_NAME,
               software_versions=software_versions(result), device_serial_number=DEVICE_SERIAL,
               coding_schemes=[mc.coding_scheme_identification()], is_complete=True, previous_versions=predecessors,
               transfer_syntax_uid=ExplicitVRLittleEndian, series_description="mccad Mammography CAD SR")
