"""Laterality, view, exam key and spacing: read from the standard places, inferred elsewhere only with a quirk.

One test per archive quirk the reader knows (see dicom_io.mg_metadata)."""
from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_io.reader import exam_key_of, read_meta
from tests.dicom_io.mg_factory import SECONDARY_CAPTURE, mg_dataset

PIXELS = np.zeros((8, 8), np.uint16)


def meta_of(**attributes):
    return read_meta(mg_dataset(PIXELS, **attributes))


def view_code(value: str, scheme: str = "SCT") -> Sequence:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, "view"
    return Sequence([item])


def test_standard_attributes_need_no_quirk():
    meta = meta_of(image_laterality="R", view_position="MLO", PixelSpacing=[0.07, 0.065])
    assert (meta.laterality, meta.view, meta.pixel_spacing_mm) == ("R", "MLO", (0.07, 0.065))
    assert meta.quirks == ()
    assert meta.presentation_intent == "FOR PRESENTATION" and meta.manufacturer == "mccad-tests"


def test_laterality_from_series_laterality_is_recorded():
    meta = meta_of(image_laterality=None, Laterality="R")
    assert meta.laterality == "R" and "laterality-from-0020,0060" in meta.quirks


def test_conflicting_lateralities_keep_image_laterality_and_are_recorded():
    meta = meta_of(image_laterality="L", Laterality="R")
    assert meta.laterality == "L" and "laterality-conflict-0020,0062-vs-0020,0060" in meta.quirks


def test_laterality_from_patient_id_text_is_recorded():
    meta = meta_of(image_laterality=None, PatientID="Calc-Training_P_00005_RIGHT_MLO")
    assert meta.laterality == "R" and "laterality-from-patient-id-text" in meta.quirks


def test_laterality_from_series_description_side_and_view_word():
    meta = meta_of(image_laterality=None, view_position=None, SeriesDescription="screening LMLO")
    assert (meta.laterality, meta.view) == ("L", "MLO")
    assert {"laterality-from-series-description-text", "view-from-series-description-text"} <= set(meta.quirks)


def test_ambiguous_or_missing_laterality_is_none_and_recorded():
    meta = meta_of(image_laterality=None, SeriesDescription="LEFT and RIGHT CC")
    assert meta.laterality is None
    assert {"laterality-ambiguous-series-description-text", "laterality-unknown"} <= set(meta.quirks)


@pytest.mark.parametrize(("code", "scheme", "view"), [
    ("399162004", "SCT", "CC"), ("399368009", "SCT", "MLO"), ("399260004", "SCT", "ML"),
    ("399352003", "SCT", "LM"), ("399192003", "SCT", "XCCL"), ("R-10226", "SRT", "MLO"), ("123456", "99X", "OTHER"),
])
def test_view_from_view_code_sequence(code, scheme, view):
    meta = meta_of(view_position=None, ViewCodeSequence=view_code(code, scheme))
    assert meta.view == view and "view-from-view-code-sequence" in meta.quirks


def test_view_position_wins_over_the_code_sequence():
    meta = meta_of(view_position="CC", ViewCodeSequence=view_code("399368009"))
    assert meta.view == "CC" and not meta.quirks


def test_unknown_view_position_is_other():
    assert meta_of(view_position="SPOT").view == "OTHER"


def test_view_from_patient_orientation_text_is_recorded():
    meta = meta_of(view_position=None, PatientOrientation="MLO")
    assert meta.view == "MLO" and "view-from-patient-orientation-text" in meta.quirks


def test_genuine_patient_orientation_is_not_read_as_text():
    """'P\\L' are direction letters (PS3.3 C.7.6.1.1.1), not laterality 'L'."""
    meta = meta_of(image_laterality=None, view_position=None, PatientOrientation=["P", "L"])
    assert meta.laterality is None and meta.view is None
    assert {"laterality-unknown", "view-unknown"} <= set(meta.quirks)


def test_exam_key_is_the_study_uid_for_normal_data():
    ds = mg_dataset(PIXELS)
    assert exam_key_of(ds) == ds.StudyInstanceUID == read_meta(ds).exam_key


def test_exam_key_groups_folded_patient_ids_across_studies():
    views = ["RIGHT_CC", "LEFT_CC", "RIGHT_MLO", "LEFT_MLO"]
    keys = {exam_key_of(mg_dataset(PIXELS, PatientID=f"Mass-Test_P_00173_{v}")) for v in views}  # 4 study UIDs
    other = exam_key_of(mg_dataset(PIXELS, PatientID="Mass-Test_P_00174_LEFT_CC"))
    assert len(keys) == 1 and other not in keys
    key = keys.pop()
    assert key.startswith("2.25.") and "P_00173" not in key
    meta = meta_of(PatientID="Mass-Test_P_00173_LEFT_MLO_1")  # a trailing index (CBIS ROI style) is tolerated
    assert meta.exam_key == key and "exam-key-from-folded-patient-id" in meta.quirks


def test_spacing_from_imager_pixel_spacing_is_recorded():
    meta = meta_of(PixelSpacing=None, ImagerPixelSpacing=[0.1, 0.1])
    assert meta.pixel_spacing_mm == (0.1, 0.1) and "spacing-from-imager-pixel-spacing" in meta.quirks


def test_secondary_capture_with_modality_mg_is_recorded():
    meta = meta_of(sop_class=SECONDARY_CAPTURE)
    assert meta.sop_class_uid == SECONDARY_CAPTURE and "secondary-capture-with-modality-mg" in meta.quirks
