"""A sample's pixel spacing from its file (PNG physical resolution, DICOM Pixel Spacing) and ``prepare`` resampling
to the spacing a crops-trained detector asks for, with its boxes mapped alongside."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.preprocess import StandardiseConfig
from training.datasets.images import pixel_spacing, prepare
from training.datasets.samples import Lesion, Sample

from tests.dicom_io.mg_factory import mg_dataset, to_bytes


def _png(path: Path, rows: int = 120, cols: int = 100, dpi: tuple[float, float] | None = None) -> Path:
    """Tissue everywhere (nothing for standardisation to cut), 16-bit, with the given physical resolution."""
    pixels = np.random.default_rng(0).integers(20000, 40000, (rows, cols)).astype(np.uint16)
    extra = {"dpi": dpi} if dpi is not None else {}
    Image.fromarray(pixels).save(path, format="PNG", **extra)
    return path


def _sample(path: Path, box: tuple[float, float, float, float] = (20.0, 30.0, 40.0, 50.0)) -> Sample:
    return Sample(image_id=path.name, source=path, patient_id="P1", breast="L", view="CC",
                  lesions=(Lesion(box, "malignant"),))


def _dicom(path: Path, **attributes: object) -> Path:
    """Tissue everywhere too: a wide window keeps every pixel well above background (0.3-0.7)."""
    pixels = np.random.default_rng(1).integers(1000, 3000, (48, 40)).astype(np.uint16)
    path.write_bytes(to_bytes(mg_dataset(pixels, WindowCenter=2000, WindowWidth=5000, **attributes)))
    return path


def test_png_spacing_comes_from_its_dpi(tmp_path: Path) -> None:
    assert pixel_spacing(_sample(_png(tmp_path / "a.png", dpi=(254, 254)))) == pytest.approx((0.1, 0.1))
    assert pixel_spacing(_sample(_png(tmp_path / "b.png", dpi=(508, 508)))) == pytest.approx((0.05, 0.05))
    # (row, column): PIL's dpi is (x, y), so a file twice as fine horizontally has the finer column spacing
    assert pixel_spacing(_sample(_png(tmp_path / "c.png", dpi=(508, 254)))) == pytest.approx((0.1, 0.05))
    assert pixel_spacing(_sample(_png(tmp_path / "d.png"))) is None
    # an image tool's default resolution is not a pixel pitch: 72 dpi (0.35 mm) and 96 dpi (0.26 mm) count as unknown
    assert pixel_spacing(_sample(_png(tmp_path / "e.png", dpi=(72, 72)))) is None
    assert pixel_spacing(_sample(_png(tmp_path / "f.png", dpi=(96, 96)))) is None


def test_dicom_spacing_comes_from_pixel_spacing_then_imager_pixel_spacing(tmp_path: Path) -> None:
    assert pixel_spacing(_sample(_dicom(tmp_path / "a.dcm", PixelSpacing=[0.07, 0.085]))) == (0.07, 0.085)
    imager = _dicom(tmp_path / "b.dcm", PixelSpacing=None, ImagerPixelSpacing=[0.094, 0.094])
    assert pixel_spacing(_sample(imager)) == (0.094, 0.094)
    assert pixel_spacing(_sample(_dicom(tmp_path / "c.dcm", PixelSpacing=None))) is None


def test_prepare_resamples_a_0_05_mm_png_to_0_1_mm_and_halves_its_boxes(tmp_path: Path) -> None:
    # assumed 0.1 mm: only the file's own 0.05 mm can make prepare resample
    config = StandardiseConfig(spacing_mm=0.1, assumed_spacing_mm=0.1)
    fine = prepare(_sample(_png(tmp_path / "fine.png", dpi=(508, 508))), config)
    assert fine.pixels.shape == (60, 50)
    np.testing.assert_allclose(fine.boxes, [[10.0, 15.0, 20.0, 25.0]], atol=1e-5)
    np.testing.assert_allclose(fine.cmap.boxes_to_original(fine.boxes), [[20.0, 30.0, 40.0, 50.0]], atol=1e-5)
    assert fine.label_ids.tolist() == [2]
    unknown = prepare(_sample(_png(tmp_path / "plain.png")), config)
    assert unknown.pixels.shape == (120, 100)
    np.testing.assert_allclose(unknown.boxes, [[20.0, 30.0, 40.0, 50.0]], atol=1e-5)
    # without a target spacing the file's spacing does not matter
    assert prepare(_sample(tmp_path / "fine.png"), StandardiseConfig()).pixels.shape == (120, 100)


def test_prepare_resamples_a_dicom_by_its_pixel_spacing(tmp_path: Path) -> None:
    sample = _sample(_dicom(tmp_path / "a.dcm", PixelSpacing=[0.05, 0.1]), box=(8.0, 10.0, 16.0, 30.0))
    prepared = prepare(sample, StandardiseConfig(spacing_mm=0.1))
    assert prepared.pixels.shape == (24, 40)  # rows at 0.05 mm halve, columns at 0.1 mm stay
    np.testing.assert_allclose(prepared.boxes, [[8.0, 5.0, 16.0, 15.0]], atol=1e-5)
