"""Heatmap of one image as a binary DICOM Segmentation of activation bands (PS3.3 A.51, C.8.20; highdicom ``seg``).

The malignancy activation map (float in [0, 1]) is cut at ``BAND_EDGES`` into non-overlapping bands, one BINARY
segment each (category SCT "Morphologically abnormal structure", type SCT "Calcification of breast"): segment ``k``
holds the pixels whose activation lies in [``BAND_EDGES[k-1]``, ``BAND_EDGES[k]``), the last band reaching 1. Each
segment has its own label ("malignancy activation 0.50-0.75") and Recommended Display CIELab Value (yellow, orange,
red), so a viewer draws the map as coloured bands and lists them. Pixels below the first edge belong to no segment.
Binary rather than fractional because viewers that overlay SEG as label maps (OHIF 3 / Cornerstone3D) refuse
fractional segmentations with more than two distinct values.

The SEG lies on the source image's pixel grid, in its Frame of Reference when it has one (highdicom copies it), with
one frame per segment (empty ones kept, so frame ``k`` is segment ``k``), 1 bit per pixel, uncompressed: the
encoding every DICOM toolkit and viewer decodes.
"""
from __future__ import annotations

import math

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from dicom_io.mg_metadata import pixel_spacing_mm
from dicom_io.result_identity import (MANUFACTURER, MODEL_NAME, DEVICE_SERIAL, SERIES_NUMBERS, ResultObjectError,
                                      algorithm_identification_sequence, check_source_matches, copy_header,
                                      output_uids, software_versions)
from models.results import ImageResult, StudyResult

KIND = "seg-heatmap"
SEGMENT_LABEL = "malignancy activation"
#: Lower edge of each band (segment 1, 2, 3); a band ends where the next begins, the last one at 1.
BAND_EDGES = (0.25, 0.5, 0.75)
#: Recommended Display CIELab of each band: yellow, orange, red (CIE L*a*b*, D65).
BAND_COLOURS = ((97.1, -21.6, 94.5), (74.9, 23.9, 78.9), (53.2, 80.1, 67.2))
#: Rows of the map turned into band numbers at a time: a 64 Mpx map is never copied whole as floats.
ROWS_PER_BLOCK = 256


def band_label(band: int) -> str:
    """The Segment Label of band ``band`` (1-based), e.g. "malignancy activation 0.50-0.75"."""
    upper = BAND_EDGES[band] if band < len(BAND_EDGES) else 1.0
    return f"{SEGMENT_LABEL} {BAND_EDGES[band - 1]:.2f}-{upper:.2f}"


def activation_bands(heatmap: np.ndarray) -> np.ndarray:
    """uint8 band number (0 below the first edge, ``k`` in band ``k``) of every pixel of ``heatmap``.

    Values above 1 fall in the last band and negative ones in none, so nothing needs clipping; made by blocks of
    ``ROWS_PER_BLOCK`` rows, so the only whole-image array is the uint8 result."""
    bands = np.empty(heatmap.shape, np.uint8)
    edges = np.asarray(BAND_EDGES, dtype=np.float32)
    for start in range(0, heatmap.shape[0], ROWS_PER_BLOCK):
        block = heatmap[start:start + ROWS_PER_BLOCK]
        bands[start:start + ROWS_PER_BLOCK] = np.searchsorted(edges, block, side="right")
    return bands


def build_heatmap_segmentation(result: StudyResult, image: ImageResult, source: Dataset,
                               heatmap: np.ndarray) -> hd.seg.Segmentation:
    """The SEG of ``heatmap`` (float in [0, 1], shape = the source's (rows, columns)); NaN or infinite values, or a
    map of another shape, are a ``ResultObjectError``."""
    check_source_matches(image, source)
    heat = np.asarray(heatmap)
    if heat.shape != (image.rows, image.columns):
        raise ResultObjectError(f"heatmap of image {image.sop_instance_uid[-12:]} has shape {heat.shape}, "
                                f"expected ({image.rows}, {image.columns})")
    lowest, highest = float(heat.min()), float(heat.max())  # NaN and infinities show in these, without a mask
    if not (math.isfinite(lowest) and math.isfinite(highest)):
        raise ResultObjectError(f"heatmap of image {image.sop_instance_uid[-12:]} holds NaN or infinite values")
    series_uid, sop_uid = output_uids(result, KIND, image.sop_instance_uid, image.study_instance_uid)
    segments = [hd.seg.SegmentDescription(
        segment_number=band, segment_label=band_label(band),
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.CalcificationOfBreast,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm_identification_sequence(result),
        display_color=hd.color.CIELabColor(*BAND_COLOURS[band - 1]))
        for band in range(1, len(BAND_EDGES) + 1)]
    geometry = _source_geometry(source)
    seg = hd.seg.Segmentation(
        source_images=[geometry], pixel_array=activation_bands(heat),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments, series_instance_uid=series_uid, series_number=SERIES_NUMBERS[KIND],
        sop_instance_uid=sop_uid, instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name=MODEL_NAME,
        software_versions=software_versions(result), device_serial_number=DEVICE_SERIAL,
        content_label="MCCAD_HEATMAP",
        content_description=(result.warnings[0] if result.warnings else "mccad malignancy activation")[:64],
        transfer_syntax_uid=ExplicitVRLittleEndian, omit_empty_frames=False,
        series_description="mccad malignancy activation (SEG)")
    _fit_projection_image(seg, geometry)
    return seg


#: Slice Thickness (mm) of a projection image's SEG when the source states no Body Part Thickness: a projection has
#: no slice, and Pixel Measures (which viewers such as OHIF need to place the frame) cannot go without one.
NOMINAL_PROJECTION_THICKNESS_MM = 1.0
#: Pixel Spacing (mm) of the SEG of a source that states no spacing at all: the 1 mm viewers take for such an image
#: (Cornerstone3D's default), so that the SEG lies on the image as the viewer shows it; OHIF 3.13's viewer fails on
#: a SEG without Pixel Measures.
NOMINAL_PIXEL_SPACING_MM = 1.0
#: Plane Orientation (Patient) of a projection image's SEG when the source states no Image Orientation (Patient):
#: rows along the first axis and columns along the second of the source's frame, which is what viewers take such a
#: source's orientation to be (Cornerstone3D's image plane defaults).
NOMINAL_PROJECTION_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _slice_thickness(source: Dataset) -> float:
    """The source's Slice Thickness, else its Body Part Thickness, else ``NOMINAL_PROJECTION_THICKNESS_MM``."""
    return float(source.get("SliceThickness") or source.get("BodyPartThickness") or NOMINAL_PROJECTION_THICKNESS_MM)


def _source_geometry(source: Dataset) -> Dataset:
    """The source header as highdicom is given it: a shallow copy whose patient geometry is complete or absent.

    highdicom places a SEG in the patient coordinate system when the source has a Frame of Reference and Image
    Position (Patient), and then reads its Image Orientation (Patient), Pixel Spacing and Slice Thickness as they
    are. Mammograms state these partly (a position without a thickness is common), which would fail the SEG. So a
    source with position, orientation and a spacing gets Pixel Spacing (from Imager Pixel Spacing when that is all
    it has) and Slice Thickness (``_slice_thickness``) filled in; one with a position but no orientation or no
    spacing is given without its position, and the SEG is matched to it by SOP Instance UID as for any projection
    image. The source itself is left as it is; every UID and reference stays the source's.
    """
    copy = copy_header(source)
    if "FrameOfReferenceUID" not in source or "ImagePositionPatient" not in source:
        return copy
    spacing = pixel_spacing_mm(source, [])
    if "ImageOrientationPatient" not in source or spacing is None:
        del copy.ImagePositionPatient
        return copy
    copy.PixelSpacing = list(spacing)
    copy.SliceThickness = _slice_thickness(source)
    return copy


def _fit_projection_image(seg: hd.seg.Segmentation, source: Dataset) -> None:
    """Adjust what highdicom derives for cross-sectional sources to a projection mammogram.

    * Pixel Measures (PS3.3 C.7.6.16.2.1), without which OHIF's viewer fails on the SEG: Pixel Spacing by the
      reader's rule (``mg_metadata.pixel_spacing_mm``: Pixel Spacing, else Imager Pixel Spacing, when readable and
      positive), else ``NOMINAL_PIXEL_SPACING_MM`` (what viewers take for such a source; digitised film often
      states none); Slice Thickness from the source when it has one, else
      its Body Part Thickness (the compressed breast the projection integrates over), else
      ``NOMINAL_PROJECTION_THICKNESS_MM``.
    * Plane Position / Orientation (Patient) are highdicom's when the source's patient geometry is complete (see
      ``_source_geometry``). Otherwise Plane Orientation (Patient), which OHIF's SEG loader refuses a SEG without
      and compares with the orientation it assumes for the source, is the source's Image Orientation (Patient)
      when it states one, else ``NOMINAL_PROJECTION_ORIENTATION`` with Patient Orientation (PS3.3 C.7.6.1, type 2C)
      copied from the source (empty when the source has none); the frames are matched to the source by SOP
      Instance UID (Derivation Image), never by position, so no Plane Position is invented.
    """
    shared = seg.SharedFunctionalGroupsSequence[0]
    measures = shared.PixelMeasuresSequence[0] if "PixelMeasuresSequence" in shared else Dataset()
    measures.PixelSpacing = list(pixel_spacing_mm(source, []) or (NOMINAL_PIXEL_SPACING_MM, NOMINAL_PIXEL_SPACING_MM))
    measures.SliceThickness = _slice_thickness(source)
    shared.PixelMeasuresSequence = [measures]
    if "PlaneOrientationSequence" not in shared:
        if "ImageOrientationPatient" not in source:
            seg.PatientOrientation = source.get("PatientOrientation") or None
        orientation = Dataset()
        orientation.ImageOrientationPatient = [
            float(v) for v in source.get("ImageOrientationPatient") or NOMINAL_PROJECTION_ORIENTATION]
        shared.PlaneOrientationSequence = [orientation]
