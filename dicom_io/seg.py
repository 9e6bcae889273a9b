"""Heatmap of one image as a fractional DICOM Segmentation (PS3.3 A.51, C.8.20; highdicom ``seg``).

One segment, "malignancy activation" (category SCT "Morphologically abnormal structure", type SCT "Calcification
of breast"), FRACTIONAL type PROBABILITY with 8-bit values (0..255 for [0, 1], quantisation step 1/255), on the
source image's pixel grid and, when the source has one, its Frame of Reference (highdicom copies it). Large images
use RLE Lossless (PS3.5 Annex G), which every DICOM toolkit and Orthanc decode; small ones stay uncompressed.
"""
from __future__ import annotations

import math

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from dicom_io.result_identity import (MANUFACTURER, MODEL_NAME, DEVICE_SERIAL, SERIES_NUMBERS, ResultObjectError,
                                      algorithm_identification_sequence, check_source_matches, output_uids,
                                      software_versions)
from models.results import ImageResult, StudyResult

KIND = "seg-heatmap"
SEGMENT_LABEL = "malignancy activation"
MAX_FRACTIONAL_VALUE = 255
COMPRESS_ABOVE_PIXELS = 512 * 512


def heatmap_transfer_syntax(rows: int, columns: int) -> str:
    return RLELossless if rows * columns > COMPRESS_ABOVE_PIXELS else ExplicitVRLittleEndian


def build_heatmap_segmentation(result: StudyResult, image: ImageResult, source: Dataset,
                               heatmap: np.ndarray) -> hd.seg.Segmentation:
    """The SEG of ``heatmap`` (float in [0, 1], shape = the source's (rows, columns))."""
    check_source_matches(image, source)
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != (image.rows, image.columns):
        raise ResultObjectError(f"heatmap of image {image.sop_instance_uid[-12:]} has shape {heat.shape}, "
                                f"expected ({image.rows}, {image.columns})")
    lowest, highest = float(heat.min()), float(heat.max())  # NaN and infinities show in these, without a mask
    if not (math.isfinite(lowest) and math.isfinite(highest)):
        raise ResultObjectError(f"heatmap of image {image.sop_instance_uid[-12:]} holds NaN or infinite values")
    if lowest < 0.0 or highest > 1.0:  # a copy only when there is something to clip (a 64 Mpx map is 256 MiB)
        heat = np.clip(heat, 0.0, 1.0)
    series_uid, sop_uid = output_uids(result, KIND, image.sop_instance_uid, image.study_instance_uid)
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.CalcificationOfBreast,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm_identification_sequence(result))
    seg = hd.seg.Segmentation(
        source_images=[source], pixel_array=heat[np.newaxis],
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        segment_descriptions=[segment], series_instance_uid=series_uid, series_number=SERIES_NUMBERS[KIND],
        sop_instance_uid=sop_uid, instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name=MODEL_NAME,
        software_versions=software_versions(result), device_serial_number=DEVICE_SERIAL,
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        max_fractional_value=MAX_FRACTIONAL_VALUE, content_label="MCCAD_HEATMAP",
        content_description=(result.warnings[0] if result.warnings else "mccad malignancy activation")[:64],
        transfer_syntax_uid=heatmap_transfer_syntax(image.rows, image.columns), omit_empty_frames=False,
        series_description="mccad malignancy activation (SEG)")
    _fit_projection_image(seg, source)
    return seg


#: Slice Thickness (mm) of a projection image's SEG when the source states no Body Part Thickness: a projection has
#: no slice, and Pixel Measures (which viewers such as OHIF need to place the frame) cannot go without one.
NOMINAL_PROJECTION_THICKNESS_MM = 1.0


def _fit_projection_image(seg: hd.seg.Segmentation, source: Dataset) -> None:
    """Adjust what highdicom derives for cross-sectional sources to a projection mammogram.

    * Pixel Measures (PS3.3 C.7.6.16.2.1), which OHIF's SEG loader needs: Pixel Spacing from the source's Pixel
      Spacing, else its Imager Pixel Spacing; Slice Thickness from the source when it has one, else its Body Part
      Thickness (the compressed breast the projection integrates over), else ``NOMINAL_PROJECTION_THICKNESS_MM``.
      A source that states no spacing at all gets no macro (nothing true could be said).
    * Plane Position / Orientation (Patient) are highdicom's, present exactly when the source has Image Position /
      Orientation (Patient); a projection mammogram usually has neither, and then Patient Orientation (PS3.3
      C.7.6.1, type 2C) is copied from the source, or left empty when the source has none.
    """
    shared = seg.SharedFunctionalGroupsSequence[0]
    spacing = source.get("PixelSpacing") or source.get("ImagerPixelSpacing")
    if spacing is not None and len(spacing) == 2:
        measures = shared.PixelMeasuresSequence[0] if "PixelMeasuresSequence" in shared else Dataset()
        measures.PixelSpacing = [float(v) for v in spacing]
        thickness = source.get("SliceThickness") or source.get("BodyPartThickness") or NOMINAL_PROJECTION_THICKNESS_MM
        measures.SliceThickness = float(thickness)
        shared.PixelMeasuresSequence = [measures]
    elif "PixelMeasuresSequence" in shared and "SliceThickness" not in shared.PixelMeasuresSequence[0]:
        del shared.PixelMeasuresSequence
    if "ImageOrientationPatient" not in source and "PlaneOrientationSequence" not in shared:
        seg.PatientOrientation = source.get("PatientOrientation") or None
