"""Grayscale Softcopy Presentation State per source image (PS3.3 A.33.1; highdicom ``pr``), for viewers that do
not render SR: each lesion box as a closed POLYLINE in PIXEL units and a text label ("malignant 0.87"), plus the
result's warnings (the NOT FOR CLINICAL USE banner) as text across the top of the image and in the Content
Description.

Malignant boxes are drawn on layer ``MCCAD MALIGNANT`` (red), benign ones on ``MCCAD BENIGN`` (yellow) and warnings
on ``MCCAD WARNINGS`` (white) (PS3.3 C.10.7 Graphic Layer, recommended display colour in CIELab), so a viewer can
toggle them separately. Built from the source header only: no pixel data is needed.
"""
from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicom_io.result_identity import (MANUFACTURER, MODEL_NAME, DEVICE_SERIAL, SERIES_NUMBERS, check_source_matches,
                                      output_uids, software_versions)
from dicom_io.sr import clipped_box, rectangle_polyline
from dicom_io.uids import derive_uid
from models.results import ImageResult, LesionResult, StudyResult

KIND = "gsps"
MALIGNANT_LAYER = "MCCAD MALIGNANT"
BENIGN_LAYER = "MCCAD BENIGN"
WARNINGS_LAYER = "MCCAD WARNINGS"
_RED = hd.color.CIELabColor(53.24, 80.09, 67.20)
_YELLOW = hd.color.CIELabColor(97.14, -21.55, 94.48)
_WHITE = hd.color.CIELabColor(100.0, 0.0, 0.0)
_LABEL_HEIGHT = 14.0  # pixels; a viewer scales text to its own font, this only places the bounding box
_CHAR_WIDTH = 8.0


def lesion_caption(lesion: LesionResult) -> str:
    """The text drawn next to a box, e.g. "#3 malignant, P(cancer) 0.87" (``LesionResult.caption``)."""
    return f"#{lesion.lesion_id} {lesion.caption()}"


def _clip(value: float, upper: int) -> float:
    return float(min(max(value, 0.0), float(upper)))


def _label_box(lesion: LesionResult, image: ImageResult, text: str) -> tuple[float, float, float, float]:
    """Text bounding box just above the lesion box (below it when the box touches the top edge), inside the image."""
    x0, y0, x1, y1 = lesion.box.as_tuple()
    width = min(_CHAR_WIDTH * len(text), float(image.columns))
    left = _clip(min(x0, image.columns - width), image.columns)
    top = y0 - _LABEL_HEIGHT if y0 >= _LABEL_HEIGHT else y1
    top = _clip(min(top, image.rows - _LABEL_HEIGHT), image.rows)
    return (left, top, _clip(left + width, image.columns), _clip(top + _LABEL_HEIGHT, image.rows))


def _voi(source: Dataset) -> list[hd.pr.SoftcopyVOILUTTransformation] | None:
    """A window for sources without one (CBIS-DDSM), so the presentation state does not render the image black."""
    if "WindowCenter" in source or "VOILUTSequence" in source:
        return None
    low = source.get("SmallestImagePixelValue")
    high = source.get("LargestImagePixelValue")
    if not isinstance(low, int) or not isinstance(high, int) or high <= low:
        low, high = 0, (1 << int(source.get("BitsStored", 12))) - 1
    return [hd.pr.SoftcopyVOILUTTransformation(window_center=(low + high + 1) / 2.0,
                                               window_width=float(high - low + 1))]


def build_presentation_state(result: StudyResult, image: ImageResult,
                             source: Dataset) -> hd.pr.GrayscaleSoftcopyPresentationState:
    """The GSPS that draws ``image``'s lesions on ``source`` (the header of the image they were found on)."""
    check_source_matches(image, source)
    layers = {"malignant": hd.pr.GraphicLayer(MALIGNANT_LAYER, order=1, description="mccad malignant findings",
                                              display_color=_RED),
              "benign": hd.pr.GraphicLayer(BENIGN_LAYER, order=2, description="mccad benign findings",
                                           display_color=_YELLOW),
              "warnings": hd.pr.GraphicLayer(WARNINGS_LAYER, order=3, description="mccad warnings",
                                             display_color=_WHITE)}
    pixel = hd.pr.AnnotationUnitsValues.PIXEL
    drawn: dict[str, tuple[list, list]] = {}
    for lesion in image.lesions:
        tracking_uid = derive_uid(result.study_instance_uid, result.model_version_tag(), KIND,
                                  image.sop_instance_uid, f"lesion-{lesion.lesion_id}")
        boxes, captions = drawn.setdefault(lesion.label, ([], []))
        boxes.append(hd.pr.GraphicObject(hd.pr.GraphicTypeValues.POLYLINE,
                                         rectangle_polyline(clipped_box(lesion, image)), pixel,
                                         tracking_id=f"lesion {lesion.lesion_id}", tracking_uid=tracking_uid))
        text = lesion_caption(lesion)
        captions.append(hd.pr.TextObject(text, pixel, bounding_box=_label_box(lesion, image, text),
                                         text_justification=hd.pr.TextJustificationValues.LEFT,
                                         tracking_id=f"lesion {lesion.lesion_id}", tracking_uid=tracking_uid))
    annotations = [hd.pr.GraphicAnnotation([source], layers[label], graphic_objects=boxes, text_objects=captions)
                   for label, (boxes, captions) in drawn.items()]
    banners = [hd.pr.TextObject(w, pixel, bounding_box=(0.0, n * _LABEL_HEIGHT, float(image.columns),
                                                        min((n + 1) * _LABEL_HEIGHT, float(image.rows))),
                                text_justification=hd.pr.TextJustificationValues.LEFT)
               for n, w in enumerate(result.warnings) if (n + 1) * _LABEL_HEIGHT <= image.rows]
    if banners:
        annotations.append(hd.pr.GraphicAnnotation([source], layers["warnings"], text_objects=banners))
    used = sorted({a.GraphicLayer for a in annotations})
    series_uid, sop_uid = output_uids(result, KIND, image.sop_instance_uid, image.study_instance_uid)
    description = (result.warnings[0] if result.warnings else "mccad calcification findings")[:64]
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[source], series_instance_uid=series_uid, series_number=SERIES_NUMBERS[KIND],
        sop_instance_uid=sop_uid, instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name=MODEL_NAME,
        software_versions=software_versions(result), device_serial_number=DEVICE_SERIAL,
        content_label="MCCAD_FINDINGS", content_description=description.replace("\\", "/"),
        graphic_annotations=annotations or None,
        graphic_layers=[layer for layer in layers.values() if layer.GraphicLayer in used] or None,
        voi_lut_transformations=_voi(source), transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description="mccad calcification boxes (GSPS)")
    # General Series Laterality is type 2C for paired body parts (PS3.3 C.7.3.1); one GSPS series covers both
    # breasts, so each instance carries the laterality of the image it annotates (empty when unknown).
    gsps.Laterality = image.laterality or None
    return gsps
