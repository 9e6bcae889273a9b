"""Look-alikes (training/simulate/distractors.py): drawn, placed clear of clusters, never annotated."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from training.datasets.paper_csv import read_paper_csv
from training.simulate.distractors import (
    CLUSTER_CLEARANCE_MM,
    DISTRACTOR_KINDS,
    draw_distractor,
    insert_distractors,
    skin_band,
)
from training.simulate.background import breast_mask
from training.simulate.dataset import make_simulated_dataset
from training.simulate.morphology import SimulationError
from training.simulate.synth import MAX_VALUE, synth_study

SPACING = 0.2


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, str, str]:
    """A lesion-free left MLO phantom at 0.2 mm."""
    for patient in range(20):
        for image in synth_study(7, patient, spacing_mm=SPACING):
            if image.view == "MLO" and image.laterality == "L" and not image.lesions:
                return image.pixels.astype(np.float32) / MAX_VALUE, image.laterality, image.view
    raise AssertionError("no lesion-free left MLO phantom among 20 patients")


def test_each_kind_is_drawn_in_its_size_range():
    rng = np.random.default_rng(0)
    for kind in DISTRACTOR_KINDS:
        d = draw_distractor(rng, kind, SPACING)
        assert d.pattern == kind and d.calcifications
        x0, y0, x1, y1 = d.extent_mm()
        if kind == "vascular":
            assert max(x1 - x0, y1 - y0) >= 5.0  # a vessel, not a dot
        else:
            assert len(d.calcifications) == 1 and max(x1 - x0, y1 - y0) <= 3.2
    with pytest.raises(SimulationError, match="unknown distractor"):
        draw_distractor(rng, "scratch", SPACING)


def test_markers_go_to_the_skin_band_and_nothing_touches_a_cluster(phantom):
    pixels, laterality, view = phantom
    mask = breast_mask(pixels, SPACING, view=view, laterality=laterality)
    band = skin_band(pixels, SPACING, view, laterality)
    assert band.any() and not (band & mask).all()
    cluster_box = (200.0, 400.0, 260.0, 460.0)

    class _Cluster:  # only the box of an inserted cluster is read
        box = cluster_box

    out, placed = insert_distractors(pixels, SPACING, 12, np.random.default_rng(4), mask, band, [_Cluster()])
    assert placed and {p.pattern for p in placed} <= set(DISTRACTOR_KINDS)
    clearance = CLUSTER_CLEARANCE_MM / SPACING
    for p in placed:
        x0, y0, x1, y1 = p.box
        apart = (x1 < cluster_box[0] - clearance + 2 or x0 > cluster_box[2] + clearance - 2
                 or y1 < cluster_box[1] - clearance + 2 or y0 > cluster_box[3] + clearance - 2)
        assert apart, f"{p.pattern} at {p.box} is within the clearance of the cluster"
        cx, cy = int(p.centre[0]), int(p.centre[1])
        if p.pattern == "marker":
            assert band[cy, cx]
        else:
            assert mask[cy, cx]
    assert (out >= pixels - 1e-6).mean() > 0.99  # they add attenuation, they do not erase


def test_dataset_records_distractors_but_never_annotates_them(tmp_path):
    plain = make_simulated_dataset(tmp_path / "plain", 3, seed=9, sources=("phantom",), spacing_mm=SPACING,
                                   clusters_per_image=(1, 2))
    mixed = make_simulated_dataset(tmp_path / "mixed", 3, seed=9, sources=("phantom",), spacing_mm=SPACING,
                                   clusters_per_image=(1, 2), distractors_per_image=(2, 2))
    # the look-alikes draw from their own generator: the clusters (and their boxes) are those of the plain set
    assert read_paper_csv(plain) == read_paper_csv(mixed)
    meta = json.loads((tmp_path / "mixed" / "simulated.json").read_text())
    assert meta["distractors_per_image"] == [2, 2]
    assert all(len(im["distractors"]) >= 1 for im in meta["images"])
    for im in meta["images"]:
        a = np.asarray(Image.open(tmp_path / "plain" / im["image"]), np.int64)
        b = np.asarray(Image.open(tmp_path / "mixed" / im["image"]), np.int64)
        changed = np.argwhere(a != b)
        assert changed.size, "the look-alikes changed no pixel"
        inside = np.zeros(a.shape, bool)
        for d in im["distractors"]:
            x0, y0, x1, y1 = (int(round(v)) for v in d["box"])
            pad = 8  # blur and noise reach a few pixels past the drawn outline
            inside[max(y0 - pad, 0):y1 + pad, max(x0 - pad, 0):x1 + pad] = True
        assert inside[changed[:, 0], changed[:, 1]].all(), "pixels changed outside the recorded look-alikes"


def test_a_crop_without_a_cluster_shows_a_look_alike(tmp_path):
    make_simulated_dataset(tmp_path / "neg", 4, seed=2, sources=("phantom",), spacing_mm=SPACING, crop=96,
                           clusters_per_image=(0, 0), distractors_per_image=(1, 1))
    meta = json.loads((tmp_path / "neg" / "simulated.json").read_text())
    shown = [im for im in meta["images"] if im.get("distractors")]
    assert len(shown) == 4 and all(not im["lesions"] for im in meta["images"])


def test_a_bad_range_is_refused(tmp_path):
    with pytest.raises(SimulationError, match="distractors per image"):
        make_simulated_dataset(tmp_path / "x", 1, distractors_per_image=(3, 1))


def test_cli_flag(tmp_path):
    out = tmp_path / "cli"
    run = subprocess.run([sys.executable, "-m", "mccad", "simulate", "--out", str(out), "--images", "2", "--seed",
                          "1", "--sources", "phantom", "--spacing", "0.2", "--distractors", "1-2"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    meta = json.loads((out / "simulated.json").read_text())
    assert meta["distractors_per_image"] == [1, 2]
