"""Simulated calcification clusters: morphology statistics, physics of the inserted signal, placement in the breast,
determinism, recorded spacing, the dataset writer and ``mccad simulate``, on phantoms and on a real CBIS-DDSM image."""
from __future__ import annotations

import json
import math
from itertools import pairwise

import numpy as np
import pytest
from PIL import Image

from training.datasets.paper_csv import read_paper_csv
from training.simulate import (
    MALIGNANT_PATTERNS,
    PATTERNS,
    Calcification,
    Cluster,
    Ellipsoid,
    SimulationError,
    breast_mask,
    insert_clusters,
    make_simulated_dataset,
    simulate_cluster,
)
from training.simulate.dataset import _real_background
from training.simulate.synth import MAX_VALUE, synth_study


def _single(diameter_mm: float, spacing_mm: float, density: float = 1.0) -> Cluster:
    a = diameter_mm / 2
    calc = Calcification((Ellipsoid(0.0, 0.0, a, a, a, 0.0),), "solid", density)
    return Cluster("punctate", "grouped", "benign", (calc,), 1.2, spacing_mm)


def _flat(shape=(300, 300), level=0.4) -> tuple[np.ndarray, np.ndarray]:
    image = np.full(shape, level, np.float32)
    mask = np.zeros(shape, bool)
    mask[60:-60, 60:-60] = True
    return image, mask


@pytest.fixture(scope="module")
def phantom_mlo() -> np.ndarray:
    """A lesion-free left MLO phantom at 0.2 mm (chest wall left, pectoral muscle in the upper-left corner)."""
    for patient in range(20):
        for image in synth_study(7, patient, spacing_mm=0.2):
            if image.view == "MLO" and image.laterality == "L" and not image.lesions:
                return image.pixels.astype(np.float32) / MAX_VALUE
    raise AssertionError("no lesion-free left MLO phantom among 20 patients")


@pytest.fixture(scope="module")
def real_lmlo() -> np.ndarray:
    """The first sample's left MLO (CBIS-DDSM, assumed 0.05 mm), area-averaged to 0.2 mm for speed."""
    pixels, laterality, view, spacing = _real_background(1, 0.2)
    assert spacing == (0.05, 0.05)  # the package states none: DDSM film digitisation is assumed
    assert (laterality, view) == ("L", "MLO")
    return pixels


# --------------------------------------------------------------------------------------------------- morphology
def test_same_seed_gives_the_same_cluster_and_labels_follow_the_pattern():
    for pattern in PATTERNS:
        a = simulate_cluster(np.random.default_rng(5), pattern, 0.1)
        b = simulate_cluster(np.random.default_rng(5), pattern, 0.1)
        assert a == b
        assert a.label == ("malignant" if pattern in MALIGNANT_PATTERNS else "benign")
        assert a.spacing_mm == 0.1
        assert all(a.birads_terms)
    assert simulate_cluster(np.random.default_rng(6), "amorphous", 0.1) != simulate_cluster(
        np.random.default_rng(5), "amorphous", 0.1)


def test_unknown_pattern_distribution_or_spacing_is_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(SimulationError, match="pattern"):
        simulate_cluster(rng, "popcorn", 0.1)
    with pytest.raises(SimulationError, match="distribution"):
        simulate_cluster(rng, "punctate", 0.1, distribution="clustered")
    with pytest.raises(SimulationError, match="spacing"):
        simulate_cluster(rng, "punctate", 1.0)


def test_patterns_differ_in_count_size_and_shape_as_designed():
    rng = np.random.default_rng(11)
    stats = {}
    for pattern in PATTERNS:
        clusters = [simulate_cluster(rng, pattern, 0.1) for _ in range(20)]
        calcs = [c for cl in clusters for c in cl.calcifications]
        sizes = np.array([c.size_mm for c in calcs])
        assert sizes.min() >= 0.1 - 1e-6 and sizes.max() <= 2.0 + 1e-6, pattern  # 0.1-2 mm
        stats[pattern] = {
            "count": np.mean([len(cl.calcifications) for cl in clusters]),
            "size": float(np.median(sizes)),
            "elongation": float(np.median([c.elongation for c in calcs])),
            "density": float(np.mean([c.density for c in calcs])),
            "spread": float(np.median([max(cl.extent_mm()[2] - cl.extent_mm()[0],
                                           cl.extent_mm()[3] - cl.extent_mm()[1]) for cl in clusters])),
        }
    # size: punctate < 0.5 mm < round; coarse and rim are the largest; fine forms are small
    assert stats["punctate"]["size"] < 0.5 <= stats["round"]["size"] < 1.0
    assert min(stats["coarse"]["size"], stats["rim"]["size"]) > 1.0
    for fine in ("amorphous", "fine_pleomorphic"):
        assert stats[fine]["size"] < 0.5
    assert 0.5 <= stats["coarse_heterogeneous"]["size"] <= 1.0
    # shape: linear branching forms are rods, round ones are round, pleomorphic in between
    assert stats["fine_linear_branching"]["elongation"] > 3.0
    assert stats["round"]["elongation"] < 1.3 and stats["punctate"]["elongation"] < 1.3
    elongation = {p: s["elongation"] for p, s in stats.items()}
    assert elongation["round"] < elongation["fine_pleomorphic"] < elongation["fine_linear_branching"]
    # count: suspicious clusters are numerous, coarse and rim few
    assert min(stats[p]["count"] for p in ("fine_pleomorphic", "fine_linear_branching", "diffuse")) > 12
    assert max(stats["coarse"]["count"], stats["rim"]["count"]) < 4
    # amorphous and milk of calcium are faint (low density); diffuse is spread widest
    assert stats["amorphous"]["density"] < 0.75 and stats["milk_of_calcium"]["density"] < 0.5
    assert stats["diffuse"]["spread"] > max(stats[p]["spread"] for p in PATTERNS if p != "diffuse")


def test_linear_and_segmental_clusters_run_along_the_duct_axis():
    rng = np.random.default_rng(2)
    for distribution in ("linear", "segmental"):
        cl = simulate_cluster(rng, "fine_linear_branching", 0.1, distribution=distribution)
        x0, y0, x1, y1 = cl.extent_mm()
        assert x1 - x0 > 1.5 * (y1 - y0), distribution  # laid along +x, the inserter turns +x to the nipple


# ------------------------------------------------------------------------------------------------------ physics
def test_contrast_grows_with_size_and_density():
    image, mask = _flat()
    peaks = []
    for d in (0.1, 0.2, 0.4, 0.8, 1.6):
        _, lesions = insert_clusters(image, 0.05, [_single(d, 0.05)], np.random.default_rng(0), mask)
        peaks.append(lesions[0].peak_contrast)
    assert all(b > a for a, b in pairwise(peaks)), peaks
    assert peaks[0] > 0.0 and peaks[-1] < 1.0
    _, faint = insert_clusters(image, 0.05, [_single(0.4, 0.05, density=0.4)], np.random.default_rng(0), mask)
    assert faint[0].peak_contrast < peaks[2]


def test_contrast_depends_on_the_local_background():
    mid, mask = _flat(level=0.5)
    dense, _ = _flat(level=0.95)
    _, on_mid = insert_clusters(mid, 0.1, [_single(0.5, 0.1)], np.random.default_rng(0), mask)
    _, on_dense = insert_clusters(dense, 0.1, [_single(0.5, 0.1)], np.random.default_rng(0), mask)
    assert on_dense[0].peak_contrast < on_mid[0].peak_contrast  # the toe of the characteristic curve


def test_boxes_contain_every_inserted_calcification():
    image, mask = _flat((500, 500))
    rng = np.random.default_rng(3)
    clusters = [simulate_cluster(rng, p, 0.1) for p in ("fine_linear_branching", "coarse", "amorphous", "rim")]
    out, lesions = insert_clusters(image, 0.1, clusters, rng, mask)
    assert lesions
    changed = np.abs(out - image) > 1e-4
    covered = np.zeros_like(changed)
    for lesion in lesions:
        x0, y0, x1, y1 = lesion.box
        covered[int(math.floor(y0)):int(math.ceil(y1)), int(math.floor(x0)):int(math.ceil(x1))] = True
        rows, cols = slice(int(y0), int(math.ceil(y1))), slice(int(x0), int(math.ceil(x1)))
        region = out[rows, cols] - image[rows, cols]
        assert region.max() > 0.005, lesion.pattern
    assert changed.any()
    assert not (changed & ~covered).any()


def test_noise_added_follows_the_images_own_noise():
    base, mask = _flat((400, 400))
    quiet = base.copy()
    noisy = base + np.random.default_rng(1).normal(0, 0.02, base.shape).astype(np.float32)
    cl = simulate_cluster(np.random.default_rng(4), "coarse", 0.1)
    q_out, q_les = insert_clusters(quiet, 0.1, [cl], np.random.default_rng(9), mask)
    n_out, n_les = insert_clusters(noisy, 0.1, [cl], np.random.default_rng(9), mask)
    assert q_les[0].box == n_les[0].box
    # on a noiseless image the inserted signal is smooth; on a noisy one extra noise sits where the signal is
    q_diff = q_out - quiet
    n_diff = n_out - noisy
    strong = q_diff > 0.5 * q_diff.max()
    assert np.std(n_diff[strong] - q_diff[strong]) > 0.005


def test_same_spacing_in_mm_whatever_the_pixel_size():
    cl = simulate_cluster(np.random.default_rng(8), "fine_pleomorphic", 0.05, distribution="grouped")
    widths = []
    for spacing in (0.05, 0.1, 0.2):
        image, mask = _flat((700, 700))
        _, lesions = insert_clusters(image, spacing, [cl], np.random.default_rng(1), mask)
        assert lesions[0].spacing_mm == spacing
        x0, y0, x1, y1 = lesions[0].box
        widths.append(max(x1 - x0, y1 - y0) * spacing)
    assert max(widths) - min(widths) < 0.5  # mm; only the random rotation differs


# --------------------------------------------------------------------------------------------------- placement
def test_clusters_lie_inside_the_breast_of_a_phantom(phantom_mlo):
    mask = breast_mask(phantom_mlo, 0.2, view="MLO", laterality="L")
    h, w = mask.shape
    assert not mask[: h // 20, : w // 20].any()  # pectoral muscle corner
    assert not mask[:, -w // 10:].any()  # background beyond the nipple (with the lead marker)
    assert mask.mean() > 0.15
    rng = np.random.default_rng(0)
    clusters = [simulate_cluster(rng, p, 0.2) for p in ("punctate", "fine_pleomorphic", "round", "amorphous")]
    out, lesions = insert_clusters(phantom_mlo, 0.2, clusters, rng, mask)
    assert len(lesions) >= 3
    for lesion in lesions:
        cx, cy = lesion.centre
        assert mask[int(cy), int(cx)]
    # every visibly changed pixel is within the PSF reach (2 px) of the mask
    from scipy import ndimage

    changed = np.abs(out - phantom_mlo) > 0.01
    assert not (changed & ~ndimage.binary_dilation(mask, iterations=2)).any()


def test_breast_mask_of_a_real_mlo_excludes_muscle_label_and_background(real_lmlo):
    mask = breast_mask(real_lmlo, 0.2, view="MLO", laterality="L")
    h, w = mask.shape
    assert not mask[int(0.05 * h), int(0.03 * w)]  # pectoral muscle, upper chest-wall corner
    assert not mask[int(0.18 * h): int(0.25 * h), int(0.75 * w): int(0.9 * w)].any()  # burned-in "LMLO" label
    assert not mask[int(0.9 * h):, int(0.8 * w):].any()  # background
    assert mask[int(0.6 * h), int(0.15 * w)]  # parenchyma
    assert 0.1 < mask.mean() < 0.5


def test_insertion_into_a_real_mammogram(real_lmlo):
    rng = np.random.default_rng(21)
    clusters = [simulate_cluster(rng, p, 0.2) for p in ("fine_linear_branching", "round", "coarse_heterogeneous")]
    out, lesions = insert_clusters(real_lmlo, 0.2, clusters, rng, view="MLO", laterality="L")
    assert len(lesions) == 3
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
    assert {les.label for les in lesions} == {"benign", "malignant"}
    for lesion in lesions:
        x0, y0, x1, y1 = lesion.box
        assert 0 <= x0 < x1 <= out.shape[1] and 0 <= y0 < y1 <= out.shape[0]
        assert lesion.peak_contrast > 0.01
    again, lesions_again = insert_clusters(real_lmlo, 0.2, clusters, np.random.default_rng(22), view="MLO",
                                           laterality="L")
    third, lesions_third = insert_clusters(real_lmlo, 0.2, clusters, np.random.default_rng(22), view="MLO",
                                           laterality="L")
    assert np.array_equal(again, third) and lesions_again == lesions_third


# ------------------------------------------------------------------------------------------------------ dataset
def test_dataset_is_deterministic_whatever_the_workers_and_records_spacing(tmp_path):
    kwargs = dict(sources=("phantom",), crop=192, spacing_mm=(0.2,), clusters_per_image=(1, 2), bit_depth=16)
    first = make_simulated_dataset(tmp_path / "a", 2, seed=4, **kwargs)
    second = make_simulated_dataset(tmp_path / "b", 2, seed=4, workers=2, **kwargs)  # same files in parallel
    assert first.read_text() == second.read_text()
    for name in ("images/000000.png", "images/000001.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    meta = json.loads((tmp_path / "a" / "simulated.json").read_text())
    annotations = read_paper_csv(first)
    assert list(annotations) == ["images/000000.png", "images/000001.png"]
    for record in meta["images"]:
        assert record["spacing_mm"] == 0.2 and record["source"] == "phantom"
        assert (record["rows"], record["columns"]) == (192, 192)
        boxes = annotations[record["image"]]
        assert len(boxes) == len(record["lesions"])
        for box, lesion in zip(boxes, record["lesions"], strict=True):
            assert box.label == lesion["label"] and lesion["spacing_mm"] == 0.2
            x0, y0, x1, y1 = box.corners()
            assert 0 <= x0 < x1 <= 192 and 0 <= y0 < y1 <= 192
        with Image.open(tmp_path / "a" / record["image"]) as im:
            assert im.mode.startswith("I;16") and im.size == (192, 192)
            assert round(25.4 / float(im.info["dpi"][0]), 4) == 0.2
    assert sum(len(r["lesions"]) for r in meta["images"]) >= 1


def test_mccad_simulate_on_a_real_sample(tmp_path, capsys):
    from mccad.cli import main

    out = tmp_path / "sim"
    code = main(["simulate", "--out", str(out), "--images", "1", "--seed", "1", "--sources", "real",
                 "--spacing", "0.2", "--clusters", "2", "--bits", "8"])
    assert code == 0
    csv_path = capsys.readouterr().out.strip()
    assert csv_path == str(out / "annotations.csv")
    meta = json.loads((out / "simulated.json").read_text())
    record = meta["images"][0]
    assert record["source"] == "real" and record["spacing_mm"] == 0.2 and meta["real_sample_spacing_mm_assumed"] == 0.05
    with Image.open(out / record["image"]) as im:
        assert im.mode == "L" and im.size == (record["columns"], record["rows"])
    # about 1100 x 700 px: the 0.05 mm sample at a quarter of its size
    assert 1000 < record["rows"] < 1200
    boxes = read_paper_csv(out / "annotations.csv")[record["image"]]
    assert len(boxes) == len(record["lesions"]) >= 1


def test_mccad_simulate_refuses_bad_arguments(tmp_path, capsys):
    from mccad.cli import main

    assert main(["simulate", "--out", str(tmp_path), "--sources", "film"]) == 2
    assert "film" in capsys.readouterr().err


def test_mccad_simulate_draws_only_the_weighted_patterns(tmp_path, capsys):
    from mccad.cli import main

    out = tmp_path / "faint"
    code = main(["simulate", "--out", str(out), "--images", "6", "--seed", "3", "--sources", "phantom",
                 "--spacing", "0.2", "--crop", "160", "--clusters", "3", "--bits", "8",
                 "--patterns", "amorphous:3, punctate"])
    assert code == 0
    meta = json.loads((out / "simulated.json").read_text())
    assert meta["patterns"] == ["amorphous", "amorphous", "amorphous", "punctate"]
    drawn = [les["pattern"] for r in meta["images"] for les in r["lesions"]]
    assert drawn and set(drawn) <= {"amorphous", "punctate"}
    for bad, says in (("glitter", "glitter"), ("amorphous:0", "1-100"), ("amorphous:x", "whole number"),
                      (",", "no pattern")):
        with pytest.raises(SystemExit) as stopped:  # refused while parsing, as argparse refuses
            main(["simulate", "--out", str(tmp_path / "bad"), "--patterns", bad])
        assert stopped.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_crop_window_holds_its_lesion_and_cut_boxes_are_kept_or_dropped_by_visibility():
    from training.simulate.dataset import boxes_in_window, crop_window
    from training.simulate.insert import InsertedLesion

    def lesion(box):
        return InsertedLesion(box, "malignant", "amorphous", "grouped", (0.0, 0.0), 0.1, 0.05, 10)

    target = lesion((300.0, 400.0, 360.0, 470.0))
    mask = np.ones((1000, 800), bool)
    for seed in range(5):
        y0, x0, y1, x1 = crop_window(np.random.default_rng(seed), (1000, 800), 256, [target], mask)
        assert (y1 - y0, x1 - x0) == (256, 256) and y0 >= 0 and y1 <= 1000 and x0 >= 0 and x1 <= 800
        assert x0 <= 300 and x1 >= 360 and y0 <= 400 and y1 >= 470
    window = (0, 0, 100, 100)
    kept = boxes_in_window([lesion((40.0, 40.0, 60.0, 60.0)),  # inside
                            lesion((90.0, 10.0, 130.0, 30.0)),  # a quarter inside: dropped
                            lesion((70.0, 50.0, 110.0, 70.0)),  # three quarters inside: clipped
                            lesion((-200.0, -200.0, 300.0, 300.0))], window)  # larger than the window: kept
    assert [box for _, box in kept] == [(40.0, 40.0, 60.0, 60.0), (70.0, 50.0, 100.0, 70.0), (0.0, 0.0, 100.0, 100.0)]
