"""Resampling to a fixed pixel spacing before the ``max_side`` cap (for detectors trained on crops at native
resolution), the exact coordinate map through it, and reading a standardise record from a newer manifest."""
from __future__ import annotations

import numpy as np
import pytest

from models.preprocess import CoordinateMap, StandardiseConfig, standardise, standardise_config_from

from tests.models.test_preprocess import breast_phantom, random_boxes


def _tissue(rows: int, cols: int) -> np.ndarray:
    """Tissue everywhere: no background to cut, so the input shape is the resampled image's."""
    return np.random.default_rng(0).uniform(0.3, 0.6, (rows, cols)).astype(np.float32)


def test_defaults_leave_the_size_alone_whatever_the_spacing() -> None:
    config = StandardiseConfig()
    assert config.spacing_mm is None and config.assumed_spacing_mm == 0.05
    result = standardise(_tissue(200, 160), "L", config, pixel_spacing_mm=(0.05, 0.05))
    assert result.pixels.shape == (200, 160) and not result.cmap.resized


def test_0_05_mm_to_0_1_mm_halves_both_sides() -> None:
    image = _tissue(200, 160)
    result = standardise(image, "L", StandardiseConfig(spacing_mm=0.1), pixel_spacing_mm=(0.05, 0.05))
    assert result.pixels.shape == (100, 80) and result.cmap.scale_xy == (0.5, 0.5)
    # area averaging: each input pixel is the mean of a 2 x 2 block
    np.testing.assert_allclose(result.pixels, image.reshape(100, 2, 80, 2).mean(axis=(1, 3)), atol=1e-6)
    coarser = standardise(image, "L", StandardiseConfig(spacing_mm=0.2), pixel_spacing_mm=(0.05, 0.05))
    assert coarser.pixels.shape == (50, 40)


def test_anisotropic_spacing_scales_each_axis() -> None:
    image = _tissue(200, 160)
    rows_fine = standardise(image, "L", StandardiseConfig(spacing_mm=0.1), pixel_spacing_mm=(0.05, 0.1))
    assert rows_fine.pixels.shape == (100, 160)
    cols_fine = standardise(image, "L", StandardiseConfig(spacing_mm=0.1), pixel_spacing_mm=(0.1, 0.04))
    assert cols_fine.pixels.shape == (200, 64)
    assert cols_fine.cmap.scale_xy == pytest.approx((0.4, 1.0))


def test_an_image_without_spacing_uses_the_assumed_one() -> None:
    image = _tissue(200, 160)
    assert standardise(image, "L", StandardiseConfig(spacing_mm=0.1)).pixels.shape == (100, 80)  # 0.05 assumed
    assumed = StandardiseConfig(spacing_mm=0.1, assumed_spacing_mm=0.025)
    assert standardise(image, "L", assumed, pixel_spacing_mm=None).pixels.shape == (50, 40)
    # the image's own spacing wins over the assumption
    assert standardise(image, "L", assumed, pixel_spacing_mm=(0.1, 0.1)).pixels.shape == (200, 160)


@pytest.mark.parametrize("left,laterality,spacing,config", [
    (True, "L", (0.05, 0.05), StandardiseConfig(spacing_mm=0.1)),
    (False, "R", (0.07, 0.05), StandardiseConfig(spacing_mm=0.1, crop_rows=True)),
    (False, None, (0.2, 0.2), StandardiseConfig(spacing_mm=0.1)),  # finer than the image: upsampled
    (True, "L", None, StandardiseConfig(spacing_mm=0.083, max_side=120)),
])
def test_boxes_map_to_input_and_back_through_resampling(left, laterality, spacing, config) -> None:
    image = breast_phantom(300, 220, depth=150.0, chest_wall_left=left)
    cmap = standardise(image, laterality, config, pixel_spacing_mm=spacing).cmap
    assert cmap.resized and cmap.flipped == (not left)
    rng = np.random.default_rng(5)
    original = random_boxes(rng, 300, 300, 220)
    np.testing.assert_allclose(cmap.boxes_to_original(cmap.boxes_to_input(original)), original, atol=1e-6, rtol=0)
    h, w = cmap.input_shape
    model = random_boxes(rng, 300, h, w)
    np.testing.assert_allclose(cmap.boxes_to_input(cmap.boxes_to_original(model)), model, atol=1e-6, rtol=0)
    assert CoordinateMap.from_dict(cmap.to_dict()) == cmap


def test_a_bright_square_lands_where_its_mapped_box_says() -> None:
    image = breast_phantom(400, 300, depth=200.0, chest_wall_left=True)
    image[120:160, 40:80] = 1.0
    result = standardise(image, "L", StandardiseConfig(spacing_mm=0.1), pixel_spacing_mm=(0.05, 0.05))
    bx0, by0, bx1, by1 = result.cmap.boxes_to_input(np.array([[40.0, 120.0, 80.0, 160.0]]))[0]
    assert (bx1 - bx0, by1 - by0) == pytest.approx((20.0, 20.0))
    ys, xs = np.nonzero(result.pixels > 0.75)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == pytest.approx((bx0, by0, bx1, by1), abs=1.0)


def test_spacing_then_max_side_both_apply() -> None:
    image = _tissue(400, 300)
    # rows 0.05 -> 0.1 halve (200), columns at 0.1 stay (300); then the longer side is capped at 150
    both = standardise(image, "L", StandardiseConfig(spacing_mm=0.1, max_side=150), pixel_spacing_mm=(0.05, 0.1))
    assert both.pixels.shape == (100, 150)
    # max_side alone would keep the aspect of the pixels instead
    assert standardise(image, "L", StandardiseConfig(max_side=150)).pixels.shape == (150, 112)
    # a cap the resampled image already meets changes nothing
    loose = standardise(image, "L", StandardiseConfig(spacing_mm=0.1, max_side=250), pixel_spacing_mm=(0.05, 0.05))
    assert loose.pixels.shape == (200, 150)


@pytest.mark.parametrize("changes", [{"spacing_mm": 0.005}, {"spacing_mm": 1.5}, {"spacing_mm": 0.0},
                                     {"spacing_mm": -0.1}, {"assumed_spacing_mm": 0.0},
                                     {"assumed_spacing_mm": 2.0}])
def test_out_of_range_spacings_are_refused(changes) -> None:
    with pytest.raises(ValueError, match="spacing_mm"):
        StandardiseConfig(**changes)


def test_limits_of_the_range_are_accepted() -> None:
    StandardiseConfig(spacing_mm=0.01, assumed_spacing_mm=1.0)
    StandardiseConfig(spacing_mm=1.0, assumed_spacing_mm=0.01)


def test_standardise_config_from_ignores_unknown_keys() -> None:
    record = {"column_tolerance": 0.02, "max_side": 256, "spacing_mm": 0.1, "assumed_spacing_mm": 0.07,
              "method": "column-sum", "added_in_a_later_version": [1, 2]}
    assert standardise_config_from(record) == StandardiseConfig(column_tolerance=0.02, max_side=256, spacing_mm=0.1,
                                                                assumed_spacing_mm=0.07)
    assert standardise_config_from({}) == StandardiseConfig()
    with pytest.raises(ValueError, match="spacing_mm"):  # known keys are still validated
        standardise_config_from({"spacing_mm": 5.0})
