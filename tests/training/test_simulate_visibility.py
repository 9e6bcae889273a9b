"""The reader's annotation rule (``training.simulate.visibility``): an annotated cluster shows at least three
calcifications above its breast's texture, a fainter draw is drawn again; without the rule the simulator draws what
it drew before, so every earlier set can be made again."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.simulate import MIN_VISIBLE_CALCIFICATIONS, SimulationError, make_simulated_dataset, simulate_cluster
from training.simulate.insert import insert_clusters
from training.simulate.morphology import Calcification, Cluster, Ellipsoid
from training.simulate.visibility import (
    MIN_SIGMA_PX,
    Z_VISIBLE,
    blob_response,
    check_min_visible,
    filter_sigmas_px,
    texture_spread,
    visible_calcifications,
)

SPACING = 0.1


def _dots(amplitude: float, centres: list[tuple[int, int]], shape=(60, 60)) -> np.ndarray:
    """Calcification-sized Gaussian specks (sigma 1.2 px) of ``amplitude`` at (row, col) ``centres``."""
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    out = np.zeros(shape, np.float32)
    for r, c in centres:
        out += amplitude * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * 1.2 ** 2))
    return out


def _spread_of_one_speck(amplitude: float) -> float:
    """The texture spread at which a lone speck of ``amplitude`` sits exactly at ``Z_VISIBLE``."""
    return float(blob_response(_dots(amplitude, [(30, 30)]), SPACING).max()) / Z_VISIBLE


def test_three_separate_specks_above_the_texture_count_three_and_faint_ones_none():
    spread = _spread_of_one_speck(0.1) * 0.8  # a speck of 0.1 reaches 5 spreads
    three = _dots(0.1, [(15, 15), (15, 45), (45, 30)])
    assert visible_calcifications(three, SPACING, spread) == 3
    assert visible_calcifications(three * 0.5, SPACING, spread) == 0  # 2.5 spreads: texture level
    mixed = _dots(0.1, [(15, 15), (15, 45)]) + _dots(0.03, [(45, 30)])
    assert visible_calcifications(mixed, SPACING, spread) == 2


def test_specks_closer_than_the_peak_window_are_one_and_a_patch_edge_makes_no_speck():
    spread = _spread_of_one_speck(0.1) * 0.8
    assert visible_calcifications(_dots(0.1, [(30, 30), (30, 32)]), SPACING, spread) == 1
    # a speck at the patch's very edge (the inserter's patch is cut at the image border) is still one
    assert visible_calcifications(_dots(0.1, [(0, 30)]), SPACING, spread) == 1
    with pytest.raises(ValueError, match="positive"):
        visible_calcifications(_dots(0.1, [(30, 30)]), SPACING, 0.0)


def test_texture_spread_grows_with_the_texture_and_needs_a_breast():
    rng = np.random.default_rng(0)
    breast = np.zeros((200, 200), bool)
    breast[20:180, 20:180] = True
    quiet = 0.5 + 0.01 * rng.standard_normal((200, 200)).astype(np.float32)
    busy = 0.5 + 0.04 * rng.standard_normal((200, 200)).astype(np.float32)
    assert 3.5 < texture_spread(busy, breast, SPACING) / texture_spread(quiet, breast, SPACING) < 4.5
    with pytest.raises(ValueError, match="no texture"):
        texture_spread(quiet, np.zeros((200, 200), bool), SPACING)


def _faint_cluster(density: float) -> Cluster:
    calcs = tuple(Calcification((Ellipsoid(x, y, 0.15, 0.15, 0.15, 0.0),), "solid", density)
                  for x, y in ((-1.5, 0.0), (0.0, 1.2), (1.5, 0.0)))
    return Cluster("punctate", "grouped", "benign", calcs, 1.2, SPACING)


def _background() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    image = (0.5 + 0.01 * rng.standard_normal((300, 300))).astype(np.float32)
    breast = np.zeros((300, 300), bool)
    breast[30:270, 30:270] = True
    return image, breast


def test_insertion_redraws_a_cluster_no_reader_would_see_and_leaves_it_out_when_it_stays_faint():
    image, breast = _background()
    spread = texture_spread(image, breast, SPACING)
    rng = np.random.default_rng(2)
    redraws: list[Cluster] = []

    def brighter(cluster: Cluster) -> Cluster:
        redraws.append(cluster)
        return _faint_cluster(1.0)

    out, lesions = insert_clusters(image, SPACING, [_faint_cluster(0.02)], rng, breast, noise_sigma=0.01,
                                   texture_spread=spread, min_visible=3, redraw=brighter)
    assert len(redraws) == 1 and len(lesions) == 1
    assert lesions[0].visible_calcifications == 3
    assert not np.array_equal(out, image)

    out, lesions = insert_clusters(image, SPACING, [_faint_cluster(0.02)], np.random.default_rng(2), breast,
                                   noise_sigma=0.01, texture_spread=spread, min_visible=3,
                                   redraw=lambda c: _faint_cluster(0.02))
    assert lesions == [] and np.array_equal(out, image)  # nothing annotated, nothing drawn into the image


def test_without_the_rule_the_insertion_draws_what_it_drew_before_and_still_counts():
    image, breast = _background()
    spread = texture_spread(image, breast, SPACING)
    cluster = simulate_cluster(np.random.default_rng(4), "amorphous", SPACING)
    plain, before = insert_clusters(image, SPACING, [cluster], np.random.default_rng(5), breast, noise_sigma=0.01)
    counted, after = insert_clusters(image, SPACING, [cluster], np.random.default_rng(5), breast, noise_sigma=0.01,
                                     texture_spread=spread)
    assert np.array_equal(plain, counted)
    assert before[0].visible_calcifications is None and after[0].visible_calcifications is not None
    assert before[0].box == after[0].box
    with pytest.raises(ValueError, match="texture_spread and a redraw"):
        insert_clusters(image, SPACING, [cluster], np.random.default_rng(5), breast, min_visible=3)


def test_a_negative_minimum_is_refused(tmp_path):
    assert check_min_visible(0) == 0
    with pytest.raises(SimulationError, match="0 \\(no rule\\) or more"):
        make_simulated_dataset(tmp_path / "x", 1, sources=("phantom",), min_visible=-1)
    run = subprocess.run([sys.executable, "-m", "mccad", "simulate", "--out", str(tmp_path / "y"), "--images", "1",
                          "--min-visible", "-1"], capture_output=True, text=True)
    assert run.returncode == 2 and "--min-visible" in run.stderr


def test_every_annotated_cluster_of_a_set_is_visible_and_without_the_rule_faint_ones_are_annotated(tmp_path):
    # amorphous and fine pleomorphic clusters: the faintest the simulator draws, many of them at texture level
    kwargs = dict(sources=("phantom",), spacing_mm=0.1, clusters_per_image=(2, 3), crop=96,
                  patterns=("amorphous", "fine_pleomorphic"))
    make_simulated_dataset(tmp_path / "rule", 4, seed=6, **kwargs)
    meta = json.loads((tmp_path / "rule" / "simulated.json").read_text())
    assert meta["min_visible_calcifications"] == MIN_VISIBLE_CALCIFICATIONS == 3
    lesions = [les for im in meta["images"] for les in im["lesions"]]
    assert all(im["texture_spread"] > 0 for im in meta["images"])
    assert lesions and all(les["visible_calcifications"] >= 3 for les in lesions)
    assert any(les["draws"] > 1 for les in lesions)  # some were drawn again

    out = tmp_path / "none"
    run = subprocess.run([sys.executable, "-m", "mccad", "simulate", "--out", str(out), "--images", "4", "--seed",
                          "6", "--sources", "phantom", "--spacing", "0.1", "--clusters", "2-3", "--crop", "96",
                          "--patterns", "amorphous,fine_pleomorphic", "--min-visible", "0"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    old = json.loads((out / "simulated.json").read_text())
    assert old["min_visible_calcifications"] == 0
    assert any(les["visible_calcifications"] < 3 for im in old["images"] for les in im["lesions"])
    assert all(les["draws"] == 1 for im in old["images"] for les in im["lesions"])


MIAS_NORMALS = Path(__file__).resolve().parents[3] / "shared" / "data" / "mias-normals"


def test_the_filter_is_never_finer_than_the_pixels():
    assert filter_sigmas_px(0.1) == pytest.approx([1.0, 1.5])
    assert filter_sigmas_px(0.05) == pytest.approx([2.0, 3.0])
    assert filter_sigmas_px(0.2) == pytest.approx([MIN_SIGMA_PX, 0.75])


@pytest.mark.skipif(not MIAS_NORMALS.is_dir(), reason="needs ../shared/data/mias-normals beside the repository")
def test_fine_calcifications_on_a_real_film_at_0_2_mm_are_visible_to_the_reader_rule():
    """On a real 0.2 mm film the filter works at the pixel's own scale, so most fine pleomorphic and linear branching
    clusters show three calcifications, as a reader sees them on that film (a sub-pixel filter sees none)."""
    from dicom_io.reader import read_mammogram
    from models.breast_mask import breast_mask
    from training.simulate.background import image_noise_sigma

    path = sorted(MIAS_NORMALS.rglob("*.dcm"))[0]
    image = read_mammogram(path)
    pixels, spacing = image.pixels.astype(np.float32), float(image.meta.pixel_spacing_mm[0])
    assert spacing == pytest.approx(0.2)
    mask = breast_mask(pixels, spacing, view=image.meta.view, laterality=image.meta.laterality)
    spread, noise = texture_spread(pixels, mask, spacing), image_noise_sigma(pixels, mask)
    rng = np.random.default_rng(3)
    seen = []
    for pattern in ("fine_pleomorphic", "fine_linear_branching"):
        for _ in range(6):
            cluster = simulate_cluster(rng, pattern, spacing)
            _, lesions = insert_clusters(pixels, spacing, [cluster], rng, mask, noise_sigma=noise,
                                         texture_spread=spread)
            seen += [lesion.visible_calcifications >= MIN_VISIBLE_CALCIFICATIONS for lesion in lesions]
    assert len(seen) >= 10 and sum(seen) >= len(seen) / 2
