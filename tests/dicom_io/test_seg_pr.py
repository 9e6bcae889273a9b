"""Heatmap SEG and box GSPS: valid, on the source's grid, the SEG's activation bands read back exactly; hostile
source headers (long non-ASCII names, missing laterality / pixel spacing / frame of reference, CBIS-DDSM quirks)
still give valid objects or a typed error."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
from mammograms import gen_cases
from pydicom.uid import ExplicitVRLittleEndian

from dicom_io.errors import MccadError
from dicom_io.outputs import build_result_objects, write_result_objects
from dicom_io.pr import build_presentation_state
from dicom_io.result_identity import ResultObjectError
from dicom_io.result_reader import ResultReadError, read_heatmap_segmentation, read_presentation_state
from dicom_io.seg import BAND_EDGES, ROWS_PER_BLOCK, activation_bands, build_heatmap_segmentation
from models.results import (NOT_FOR_CLINICAL_USE, BoxXYXY, BreastResult, ExamResult, ImageResult, LesionResult,
                            StudyResult)
from tests.dicom_io.result_fixtures import (dciodvfy_problems, header_only, make_heatmap, make_result, make_source)


def _write(ds, path):
    ds.save_as(path, enforce_file_format=True)
    return path


def _expected_bands(heat):
    """The band of each pixel, computed independently of the writer: 1 from 0.25, 2 from 0.5, 3 from 0.75."""
    return (heat >= 0.25).astype(np.uint8) + (heat >= 0.5) + (heat >= 0.75)


def test_heatmap_segmentation_round_trip(tmp_path):
    source = make_source(1, "L", "CC")
    result = make_result([source])
    heat = make_heatmap()
    path = _write(build_heatmap_segmentation(result, result.images[0], header_only(source), heat), tmp_path / "s.dcm")
    assert dciodvfy_problems(path) == []
    seg = pydicom.dcmread(path)
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID and seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    # binary, one frame per band, each band a segment with its own label and display colour
    assert seg.SegmentationType == "BINARY" and seg.BitsAllocated == 1 and seg.NumberOfFrames == len(BAND_EDGES)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [
        "malignancy activation 0.25-0.50", "malignancy activation 0.50-0.75", "malignancy activation 0.75-1.00"]
    colours = [tuple(s.RecommendedDisplayCIELabValue) for s in seg.SegmentSequence]
    assert len(set(colours)) == len(BAND_EDGES)
    back = read_heatmap_segmentation(seg)
    assert back.source_sop_instance_uid == source.SOPInstanceUID
    assert back.segment_labels[3] == "malignancy activation 0.75-1.00"
    assert back.bands.shape == heat.shape
    assert np.array_equal(back.bands, _expected_bands(heat))
    assert {1, 2, 3} <= set(np.unique(back.bands))  # every band is exercised


def test_projection_source_gets_the_plane_macros_viewers_need(tmp_path):
    """A mammogram without Image Orientation (Patient): Pixel Measures from its spacing, its Patient Orientation,
    and the nominal Plane Orientation (Patient) OHIF's SEG loader needs; no invented Plane Position."""
    source = make_source(2, "R", "MLO")
    assert "ImageOrientationPatient" not in source
    result = make_result([source])
    seg = build_heatmap_segmentation(result, result.images[0], header_only(source), make_heatmap())
    shared = seg.SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [0.1, 0.1]
    assert [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert list(seg.PatientOrientation) == ["P", "L"]
    assert "PlanePositionSequence" not in shared
    assert all("PlanePositionSequence" not in f for f in seg.PerFrameFunctionalGroupsSequence)


def test_source_with_patient_geometry_keeps_its_own(tmp_path):
    source = make_source(1, "L", "CC")
    source.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    source.ImagePositionPatient = [10.0, -20.0, 5.0]
    source.SliceThickness = 0.5  # the rest of an Image Plane module
    result = make_result([source])
    path = _write(build_heatmap_segmentation(result, result.images[0], header_only(source), make_heatmap()),
                  tmp_path / "s.dcm")
    assert dciodvfy_problems(path) == []
    seg = pydicom.dcmread(path)
    orientation = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    assert [float(v) for v in orientation] == [0, 1, 0, 0, 0, -1]
    position = seg.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient
    assert [float(v) for v in position] == [10.0, -20.0, 5.0]


@pytest.mark.parametrize("stated", [("position", "orientation"), ("position", "orientation", "no spacing"),
                                    ("orientation",), ("position",)],
                         ids=["no slice thickness", "no pixel spacing", "orientation only", "position only"])
def test_source_with_part_of_the_patient_geometry_still_gets_a_valid_seg(tmp_path, stated):
    """Mammograms state the Image Plane module partly (a position without a Slice Thickness, an orientation without
    a position): the SEG is still written, valid, with the source's own orientation where it states one, Pixel
    Measures where it states a spacing, a position only with the whole geometry, and the exact bands."""
    source = make_source(1, "L", "CC")
    if "orientation" in stated:
        source.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    if "position" in stated:
        source.ImagePositionPatient = [10.0, -20.0, 5.0]
    if "no spacing" in stated:
        for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
            if keyword in source:
                delattr(source, keyword)
    assert "SliceThickness" not in source
    header = header_only(source)
    result = make_result([source])
    heat = make_heatmap()
    path = _write(build_heatmap_segmentation(result, result.images[0], header, heat), tmp_path / "s.dcm")
    assert dciodvfy_problems(path) == []
    # the caller's header is completed in a copy, never in place
    assert "SliceThickness" not in header and ("ImagePositionPatient" in header) == ("position" in stated)
    seg = pydicom.dcmread(path)
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    assert orientation == ([0, 1, 0, 0, 0, -1] if "orientation" in stated else [1, 0, 0, 0, 1, 0])
    spacing = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    assert spacing == ([1.0, 1.0] if "no spacing" in stated else [0.1, 0.1])
    positioned = "PlanePositionSequence" in seg.PerFrameFunctionalGroupsSequence[0]
    assert positioned == (stated == ("position", "orientation"))
    back = read_heatmap_segmentation(seg)
    assert back.source_sop_instance_uid == source.SOPInstanceUID
    assert np.array_equal(back.bands, _expected_bands(heat))


def test_large_heatmap_is_banded_by_blocks_of_rows(tmp_path):
    """A map taller than one block of rows, with values outside [0, 1], and an odd pixel count (1-bit frames that
    share bytes): the bands are exact on every row."""
    rows = 2 * ROWS_PER_BLOCK + 37
    source = make_source(1, "R", "MLO", rows=rows, columns=479, with_pixels=False)
    result = make_result([source])
    heat = np.zeros((rows, 479), np.float32)
    heat[100:200, 50:90] = 0.3
    heat[ROWS_PER_BLOCK - 3:ROWS_PER_BLOCK + 3, 200:260] = 0.75  # straddles the first block boundary
    heat[rows - 5:, :10] = 1.5
    heat[rows - 5:, 10:20] = -0.5
    path = _write(build_heatmap_segmentation(result, result.images[0], source, heat), tmp_path / "s.dcm")
    assert dciodvfy_problems(path) == []
    bands = read_heatmap_segmentation(pydicom.dcmread(path)).bands
    assert np.array_equal(bands, _expected_bands(heat))
    assert np.array_equal(activation_bands(heat), _expected_bands(heat))


def test_large_heatmap_costs_no_whole_image_float_copy():
    """Python heap (tracemalloc, numpy included) at its peak while the SEG of a 2000 x 2000 map is built, per pixel:
    below 8 bytes. The peak is highdicom's encoding of the uint8 bands; a float32 copy of the map kept alive through
    it would add 4."""
    import tracemalloc

    rows = columns = 2000
    source = make_source(1, "L", "CC", rows=rows, columns=columns, with_pixels=False)
    result = make_result([source])
    heat = np.random.default_rng(0).random((rows, columns), dtype=np.float32)
    build_heatmap_segmentation(*_one_image(), make_heatmap())  # imports and caches outside the measurement
    tracemalloc.start()
    try:
        build_heatmap_segmentation(result, result.images[0], source, heat)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak / (rows * columns) < 8


def test_fractional_segmentation_is_not_read_as_ours(tmp_path):
    seg = pydicom.dcmread(_write(build_heatmap_segmentation(*_one_image(), make_heatmap()), tmp_path / "s.dcm"))
    seg.SegmentationType = "FRACTIONAL"
    with pytest.raises(ResultReadError, match="not a binary Segmentation"):
        read_heatmap_segmentation(seg)


def _one_image():
    source = make_source(1, "L", "CC")
    result = make_result([source])
    return result, result.images[0], header_only(source)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_heatmap_with_nan_or_infinity_is_refused(bad):
    source = make_source(1, "L", "CC")
    result = make_result([source])
    heat = make_heatmap()
    heat[3, 4] = bad
    with pytest.raises(ResultObjectError, match="NaN or infinite"):
        build_heatmap_segmentation(result, result.images[0], header_only(source), heat)


def test_heatmap_outside_zero_one_falls_in_the_end_bands_and_the_callers_map_is_left_alone():
    source = make_source(1, "L", "CC")
    result = make_result([source])
    heat = make_heatmap()
    heat[0, :10], heat[1, :10] = -0.5, 1.5
    before = heat.copy()
    back = read_heatmap_segmentation(build_heatmap_segmentation(result, result.images[0], header_only(source), heat))
    assert np.array_equal(heat, before)
    assert (back.bands[0, :10] == 0).all() and (back.bands[1, :10] == 3).all()
    assert np.array_equal(back.bands, _expected_bands(heat))


def test_heatmap_of_the_wrong_shape_is_refused():
    source = make_source(1, "L", "CC")
    result = make_result([source])
    with pytest.raises(ResultObjectError, match="shape"):
        build_heatmap_segmentation(result, result.images[0], source, np.zeros((10, 10), np.float32))


def test_presentation_state_draws_boxes_captions_and_banner(tmp_path):
    source = make_source(1, "L", "CC")
    result = make_result([source])
    path = _write(build_presentation_state(result, result.images[0], header_only(source)), tmp_path / "p.dcm")
    assert dciodvfy_problems(path) == []
    back = read_presentation_state(pydicom.dcmread(path))
    assert back.source_sop_instance_uids == [source.SOPInstanceUID]
    assert [b.caption for b in back.boxes] == ["#1 malignant, P(cancer) 0.87", "#2 benign, P(cancer) 0.42"]
    for drawn, lesion in zip(back.boxes, result.images[0].lesions, strict=True):
        np.testing.assert_allclose(drawn.box, lesion.box.as_tuple(), atol=1e-4)  # GraphicData is 32-bit float
    assert NOT_FOR_CLINICAL_USE in back.texts
    gsps = pydicom.dcmread(path)
    assert gsps.ContentDescription == NOT_FOR_CLINICAL_USE
    assert [layer.GraphicLayer for layer in gsps.GraphicLayerSequence] == ["MCCAD MALIGNANT", "MCCAD BENIGN",
                                                                          "MCCAD WARNINGS"]


def test_presentation_state_of_an_image_without_findings_or_warnings(tmp_path):
    sources = [make_source(1, "L", "CC"), make_source(2, "R", "MLO")]
    result = make_result(sources, warnings=[])
    path = _write(build_presentation_state(result, result.images[1], header_only(sources[1])), tmp_path / "p.dcm")
    assert dciodvfy_problems(path) == []
    back = read_presentation_state(pydicom.dcmread(path))
    assert back.boxes == [] and back.texts == []


def test_hostile_headers_still_give_valid_objects(tmp_path):
    name = ("Ünïcødé^Ørjan^Ü" + "x^" * 40)[:64]  # 64 characters, >64 bytes in UTF-8, too many components
    sources = [make_source(1, "L", "CC", patient_name=name),
               make_source(2, None, "MLO", pixel_spacing=False, frame_of_reference=False, patient_name=name)]
    for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "ReferringPhysicianName"):
        delattr(sources[0], keyword)  # type 2 attributes some archives drop
    result = make_result(sources)
    heads = {s.SOPInstanceUID: header_only(s) for s in sources}
    heatmaps = {s.SOPInstanceUID: make_heatmap() for s in sources}
    objects = write_result_objects(result, heads, heatmaps, tmp_path)
    assert sorted(o.kind for o in objects) == ["gsps", "gsps", "seg-heatmap", "seg-heatmap", "sr-mammo-cad",
                                               "sr-tid1500"]
    for obj in objects:
        assert dciodvfy_problems(obj.path) == [], obj.kind
        ds = pydicom.dcmread(obj.path, stop_before_pixels=True)
        assert ds.PatientID == "PID-0001" and str(ds.PatientName).startswith("Ünïcødé^Ørjan^Ü")
    # the headers given are fitted in copies: the caller's stay as they came
    assert all(str(h.PatientName) == name for h in heads.values())
    assert "PatientSex" not in heads[sources[0].SOPInstanceUID]


def test_invalid_patient_id_is_a_typed_error():
    source = make_source(1, "L", "CC")
    result = make_result([source])
    source.PatientID = "P" * 70
    with pytest.raises(MccadError, match="Patient ID"):
        build_result_objects(result, {source.SOPInstanceUID: header_only(source)}, {})


def test_real_cbis_ddsm_header(tmp_path):
    """Secondary Capture SOP class with Modality MG, laterality only in (0020,0060), "CC" as Patient Orientation,
    no pixel spacing, no frame of reference, 2864 x 4432 pixels: every object is still valid."""
    case = next(iter(gen_cases()))
    real = pydicom.dcmread(case["lcc"], stop_before_pixels=True)
    image = ImageResult(
        sop_instance_uid=real.SOPInstanceUID, sop_class_uid=real.SOPClassUID,
        series_instance_uid=real.SeriesInstanceUID,
        study_instance_uid=real.StudyInstanceUID, laterality="L", view="CC", rows=int(real.Rows),
        columns=int(real.Columns), label="malignant", malignancy_probability=0.9, probability=0.9,
        lesions=[LesionResult(lesion_id=1, box=BoxXYXY(x0=1000.5, y0=2000.25, x1=1100, y1=2090), label="malignant",
                              probability=0.9, malignancy_probability=0.9, score=0.95)])
    result = StudyResult(study_instance_uid=real.StudyInstanceUID, images=[image],
                         breasts=[BreastResult(laterality="L", label="malignant", malignancy_probability=0.9,
                                               probability=0.9)],
                         exam=ExamResult(label="malignant", malignancy_probability=0.9, probability=0.9), models=[],
                         warnings=[NOT_FOR_CLINICAL_USE])
    heat = np.zeros((image.rows, image.columns), np.float32)
    heat[2000:2100, 1000:1100] = 1.0
    objects = write_result_objects(result, {real.SOPInstanceUID: real}, {real.SOPInstanceUID: heat}, tmp_path)
    for obj in objects:
        assert dciodvfy_problems(obj.path) == [], obj.kind
        assert pydicom.dcmread(obj.path, stop_before_pixels=True).PatientID == real.PatientID
    (seg,) = [o for o in objects if o.kind == "seg-heatmap"]
    assert np.array_equal(read_heatmap_segmentation(pydicom.dcmread(seg.path)).bands, _expected_bands(heat))
