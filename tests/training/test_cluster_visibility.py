"""``training.simulate.cluster_visibility``: a cluster that stands far above its image's texture is plainly visible to
blob counting, an empty or sub-noise box is not; the set-level reader lines clusters up with their records and with a
detector's predictions (FROC's hit rule), and the command line says what it cannot read."""
from __future__ import annotations

import json

import numpy as np
import pytest

from training.simulate.cluster_visibility import cluster_visibility, main, simulated_set_visibility, summarise
from training.simulate import insert_clusters, make_simulated_dataset, simulate_cluster

SPACING = 0.1


def _noise_image(seed: int = 0, shape=(400, 400)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = (0.45 + 0.01 * rng.standard_normal(shape)).astype(np.float32)
    breast = np.zeros(shape, bool)
    breast[20:-20, 20:-20] = True
    return image, breast


def _with_cluster(delta_mu: float, seed: int = 1):
    image, breast = _noise_image()
    rng = np.random.default_rng(seed)
    cluster = simulate_cluster(rng, "punctate", SPACING)
    cluster = type(cluster)(cluster.pattern, cluster.distribution, cluster.label, cluster.calcifications, delta_mu,
                            cluster.spacing_mm)
    inserted, lesions = insert_clusters(image, SPACING, [cluster], rng, breast, noise_sigma=0.0)
    return inserted, breast, lesions[0].box


def test_a_bright_cluster_stands_out_and_an_empty_box_does_not():
    image, breast, box = _with_cluster(1.6)
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    empty = (60.0, 60.0, 60.0 + w, 60.0 + h) if x0 > 120 or y0 > 120 else (300.0 - w, 300.0 - h, 300.0, 300.0)
    bright, nothing = cluster_visibility(image, breast, [box, empty])
    assert bright.peak_z > 8 and bright.blobs >= 3
    assert bright.chance_windows_per_image < 0.1
    assert nothing.chance_windows_per_image > 1.0 and nothing.blobs <= 1


def test_the_same_cluster_far_below_the_noise_does_not_stand_out():
    image, breast, box = _with_cluster(0.01)
    (faint,) = cluster_visibility(image, breast, [box])
    assert faint.chance_windows_per_image > 1.0 and faint.peak_z < 6


def test_no_texture_or_a_box_outside_the_image_is_an_error():
    image, breast = _noise_image()
    with pytest.raises(ValueError, match="no texture"):
        cluster_visibility(image, np.zeros_like(breast), [(10, 10, 20, 20)])
    with pytest.raises(ValueError, match="outside the image"):
        cluster_visibility(image, breast, [(500, 500, 520, 520)])


def test_a_simulated_set_with_a_detectors_predictions(tmp_path):
    folder = tmp_path / "sim"
    make_simulated_dataset(folder, 2, seed=3, sources=("phantom",), spacing_mm=0.2, clusters_per_image=(2, 2),
                           patterns=("coarse", "round"))
    meta = json.loads((folder / "simulated.json").read_text())
    rows = simulated_set_visibility(folder)
    assert len(rows) == sum(len(r["lesions"]) for r in meta["images"]) == 4
    assert all(r["contrast_to_noise"] > 0 and r["pattern"] in ("coarse", "round") for r in rows)

    # a "detector" that boxes the first cluster of each image exactly and nothing else
    from training.evaluation.evaluate import ImagePrediction, write_predictions

    predictions = write_predictions(tmp_path / "predictions.json", [
        ImagePrediction(record["image"], np.asarray([record["lesions"][0]["box"]]), ["benign"], np.asarray([0.9]))
        for record in meta["images"]])
    out = tmp_path / "visibility.json"
    assert main([str(folder), "--predictions", str(predictions), "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    scores = [r["detector_score"] for r in written["clusters"]]
    assert scores == [0.9, None, 0.9, None]
    assert written["summary"]["all"]["found"] == 2 and written["summary"]["detector_threshold_at_1fp"] == 0.9
    assert summarise(written["clusters"])["all"]["clusters"] == 4  # without a threshold: no "found"
    assert "found" not in summarise(written["clusters"])["all"]


def test_the_command_line_refuses_what_it_cannot_measure(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "simulated.json" in capsys.readouterr().err
    crops = tmp_path / "crops"
    make_simulated_dataset(crops, 1, seed=1, sources=("phantom",), spacing_mm=0.2, crop=96, clusters_per_image=(1, 1))
    assert main([str(crops)]) == 2
    assert "crops" in capsys.readouterr().err
