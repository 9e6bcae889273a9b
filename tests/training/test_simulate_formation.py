"""The image-formation stage of the simulator (``training.simulate.formation``): film grain follows the noise curve
measured on real film and is correlated, digital noise grows with density and is white, the blur scales with the
pitch, scanner artefacts only on film, inserted clusters get the source's blur and response, every image records its
source, and a set made without the stage is what it was."""
from __future__ import annotations

import json

import numpy as np
import pytest

from training.simulate import Calcification, Cluster, Ellipsoid, insert_clusters, make_simulated_dataset
from training.simulate.formation import (
    DETECTOR_BLUR_PX,
    FILM_NOISE_TABLE,
    SCANNER_BLUR_PX,
    add_artefacts,
    blur_sigma_mm,
    form_background,
    insertion_psf_mm,
    linear_response,
    target_noise,
)
from training.simulate.insert import PSF_SIGMA_MM
from training.simulate.noise_stats import noise_power_spectrum, noise_vs_signal


def _flat(level: float, size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    return np.full((size, size), level, np.float32), np.ones((size, size), bool)


def _formed_noise(source: str, level: float, spacing: float, seed: int = 0) -> float:
    pixels, mask = _flat(level)
    formed = form_background(pixels, mask, spacing, source, np.random.default_rng(seed), acquired=False)
    return float(np.median(noise_vs_signal(formed.pixels, mask, spacing)[1]))


def test_film_grain_follows_the_noise_curve_measured_on_real_film():
    table = dict(FILM_NOISE_TABLE)
    mid, bright = _formed_noise("film", 0.55, 0.2), _formed_noise("film", 0.95, 0.2)
    # what the flat-patch measure finds on a formed flat film is the measured level at that grey (stripes included)
    assert mid == pytest.approx(table[0.55], rel=0.15)
    assert bright == pytest.approx(table[0.95], rel=0.2)
    assert mid > 1.5 * bright  # the characteristic curve's shoulder: less noise where the film saturates


def test_digital_noise_grows_with_density_and_with_finer_pitch():
    assert _formed_noise("digital", 0.8, 0.1) > 1.5 * _formed_noise("digital", 0.3, 0.1)
    assert target_noise("digital", np.float32(0.5), 0.05) > 1.8 * target_noise("digital", np.float32(0.5), 0.1)


def test_film_noise_is_correlated_and_digital_noise_is_white():
    """At 0.05 mm the film's grain spectrum falls towards the Nyquist frequency (correlated over
    ``GRAIN_CORRELATION_MM``); the direct detector's stays nearly flat."""
    falls = {}
    for source in ("film", "digital"):
        pixels, mask = _flat(0.5, 768)
        formed = form_background(pixels, mask, 0.05, source, np.random.default_rng(1), acquired=False)
        nps = noise_power_spectrum(formed.pixels, mask, 0.05)
        falls[source] = nps[(6.0, 10.0)] / nps[(2.5, 4.0)]
    assert falls["film"] < 0.3
    assert falls["digital"] > 0.5


def test_a_background_with_noise_of_its_own_is_topped_up_not_doubled():
    pixels, mask = _flat(0.55)
    noisy = pixels + np.random.default_rng(2).normal(0.0, 0.02, pixels.shape).astype(np.float32)
    topped = form_background(noisy, mask, 0.2, "film", np.random.default_rng(3), acquired=True)
    doubled = form_background(noisy, mask, 0.2, "film", np.random.default_rng(3), acquired=False)
    had = topped.record["existing_noise"]
    assert had > dict(FILM_NOISE_TABLE)[0.55] and doubled.record["existing_noise"] == 0.0
    # already noisier than film: the stage adds no grain (only the scanner's stripes), where a background taken as
    # noise-free gets the whole film level on top
    assert float(np.median(noise_vs_signal(topped.pixels, mask, 0.2)[1])) == pytest.approx(had, rel=0.1)
    assert float(np.median(noise_vs_signal(doubled.pixels, mask, 0.2)[1])) > 1.15 * had


def _edge_sigma_px(source: str, spacing: float) -> float:
    """Gaussian sigma (pixels) of the blur the stage gives a vertical step edge: the sigma whose blurred step fits
    the row-averaged profile best (least squares over a 0.01 px grid; the blurred step's spectrum is the Gaussian's
    transfer function, as sampled steps of a sub-pixel blur need)."""
    step = np.full(64, 0.3, np.float32)
    step[16:48] = 0.7
    pixels = np.repeat(step[None, :], 1000, axis=0)
    formed = form_background(pixels, np.ones_like(pixels, bool), spacing, source, np.random.default_rng(4),
                             acquired=True)
    profile = formed.pixels.mean(axis=0)
    freq = np.fft.rfftfreq(step.size)
    errors = []
    grid = np.arange(0.05, 2.0, 0.01)
    for sigma in grid:
        model = np.fft.irfft(np.fft.rfft(step) * np.exp(-2 * (np.pi * sigma * freq) ** 2), n=step.size)
        errors.append(float(((model - profile) ** 2).sum()))
    return float(grid[int(np.argmin(errors))])


def test_the_blur_is_a_share_of_the_pitch_so_it_widens_in_mm_with_coarser_pixels():
    film_fine, film_coarse = _edge_sigma_px("film", 0.05), _edge_sigma_px("film", 0.2)
    assert film_fine == pytest.approx(SCANNER_BLUR_PX, abs=0.06)
    assert film_coarse == pytest.approx(SCANNER_BLUR_PX, abs=0.06)
    assert film_coarse * 0.2 > 3 * film_fine * 0.05  # in mm: four times wider at four times the pitch
    assert _edge_sigma_px("digital", 0.1) == pytest.approx(DETECTOR_BLUR_PX, abs=0.06)
    assert blur_sigma_mm("film", 0.2) == pytest.approx(4 * blur_sigma_mm("film", 0.05))
    assert insertion_psf_mm("film", 0.2) > insertion_psf_mm("film", 0.05) > PSF_SIGMA_MM


def test_scanner_artefacts_only_on_film():
    image = np.full((1000, 1000), 0.5, np.float32)  # 100 cm2 at 0.1 mm
    film, found = add_artefacts(image, 0.1, "film", np.random.default_rng(5))
    kinds = {a["kind"] for a in found}
    assert {"screen_dust", "scanner_dust"} <= kinds
    for artefact in found:
        if artefact["kind"] == "scratch":
            continue
        x0, y0, x1, y1 = (int(v) for v in artefact["box"])
        patch = film[y0:y1, x0:x1]
        assert (patch.max() > 0.53) if artefact["kind"] == "screen_dust" else (patch.min() < 0.47)
    digital, none = add_artefacts(image, 0.1, "digital", np.random.default_rng(5))
    assert none == [] and np.array_equal(digital, image)


def _spot_cluster(spacing: float) -> Cluster:
    calcs = tuple(Calcification((Ellipsoid(x, 0.0, 0.25, 0.25, 0.25, 0.0),), "solid", 1.0) for x in (-1.5, 0.0, 1.5))
    return Cluster("punctate", "grouped", "benign", calcs, 1.2, spacing)


def test_inserted_clusters_get_the_sources_response_and_blur():
    """Under a digital detector's linear response a cluster's contrast does not depend on the background level; under
    the film's characteristic curve it does; a wider point spread lowers the peak."""
    peaks = {}
    for level in (0.15, 0.5):
        pixels, mask = _flat(level, 200)
        for linear in (False, True):
            _, lesions = insert_clusters(pixels, 0.1, [_spot_cluster(0.1)], np.random.default_rng(6), mask,
                                         noise_sigma=0.0, linear_response=linear)
            peaks[level, linear] = lesions[0].peak_contrast
    assert peaks[0.15, True] == pytest.approx(peaks[0.5, True], rel=1e-5)
    assert peaks[0.15, False] < 0.8 * peaks[0.5, False]
    assert linear_response("digital") and not linear_response("film")
    pixels, mask = _flat(0.5, 200)
    _, sharp = insert_clusters(pixels, 0.1, [_spot_cluster(0.1)], np.random.default_rng(6), mask, noise_sigma=0.0)
    _, wide = insert_clusters(pixels, 0.1, [_spot_cluster(0.1)], np.random.default_rng(6), mask, noise_sigma=0.0,
                              psf_sigma_mm=insertion_psf_mm("film", 0.2))
    assert wide[0].peak_contrast < sharp[0].peak_contrast


def test_each_image_records_its_source_and_mixed_draws_both(tmp_path):
    make_simulated_dataset(tmp_path, 8, seed=2, sources=("phantom",), spacing_mm=(0.1, 0.2), crop=96,
                           clusters_per_image=(1, 1), acquisition="mixed")
    meta = json.loads((tmp_path / "simulated.json").read_text())
    assert meta["acquisition"] == "mixed"
    records = meta["images"]
    assert {r["acquisition"] for r in records} == {"film", "digital"}
    for r in records:
        assert r["blur_sigma_mm"] == pytest.approx(blur_sigma_mm(r["acquisition"], r["spacing_mm"]))
        assert isinstance(r["artefacts"], list)
        assert r["artefacts"] == [] or r["acquisition"] == "film"
        for artefact in r["artefacts"]:  # crops keep the artefacts of their window, in window coordinates
            x0, y0, x1, y1 = artefact["box"]
            assert 0 <= x0 < x1 <= r["columns"] and 0 <= y0 < y1 <= r["rows"]
    fixed = tmp_path / "film"
    make_simulated_dataset(fixed, 2, seed=2, sources=("phantom",), spacing_mm=0.2, crop=96, acquisition="film")
    assert {r["acquisition"] for r in json.loads((fixed / "simulated.json").read_text())["images"]} == {"film"}


#: what the simulator made without the stage before the stage existed (seed 11, three phantom crops): per image its
#: draws (phantom, view, noise, crop window), its clusters and its pixels' mean and spread in 16-bit levels. Kept as
#: figures with a tolerance, not as a digest of the PNG bytes and records: floating point may differ in its last bit
#: between CPUs and library builds, and one pixel one level off, or one float's last digit, changes every digest.
WITHOUT_STAGE = [
    {"phantom_patient": 128570, "laterality": "L", "view": "MLO", "noise_sigma": 0.010752,
     "texture_spread": 0.01013624, "crop_window": [639, 500, 767, 628], "mean": 25953.011, "spread": 3649.931,
     "lesions": [{"label": "benign", "pattern": "milk_of_calcium", "distribution": "grouped", "n_calcifications": 8,
                  "visible_calcifications": 6, "draws": 1, "peak_contrast": 0.177727,
                  "box": [13.92, 23.19, 100.52, 112.24]}]},
    {"phantom_patient": 202390, "laterality": "R", "view": "CC", "noise_sigma": 0.01024,
     "texture_spread": 0.00964579, "crop_window": [474, 859, 602, 987], "mean": 20486.411, "spread": 2890.954,
     "lesions": [{"label": "benign", "pattern": "round", "distribution": "grouped", "n_calcifications": 9,
                  "visible_calcifications": 9, "draws": 1, "peak_contrast": 0.386869,
                  "box": [11.77, 21.0, 92.75, 116.92]}]},
    {"phantom_patient": 897328, "laterality": "R", "view": "MLO", "noise_sigma": 0.010496,
     "texture_spread": 0.00989674, "crop_window": [361, 710, 489, 838], "mean": 20412.157, "spread": 3097.115,
     "lesions": [{"label": "benign", "pattern": "coarse", "distribution": "scattered", "n_calcifications": 4,
                  "visible_calcifications": 6, "draws": 1, "peak_contrast": 0.354644,
                  "box": [18.5, 41.27, 96.02, 120.12]}]},
]


def test_a_set_made_without_the_stage_is_unchanged(tmp_path):
    """Without the option the simulator makes what it made before the stage existed (the same draws: phantoms,
    windows, clusters and pixels, to within rounding) and records no acquisition."""
    from PIL import Image

    make_simulated_dataset(tmp_path, 3, seed=11, sources=("phantom",), spacing_mm=(0.1, 0.2), clusters_per_image=(1, 2),
                           crop=128, distractors_per_image=(0, 1))
    meta = json.loads((tmp_path / "simulated.json").read_text())
    assert "acquisition" not in meta and all("acquisition" not in r for r in meta["images"])
    assert len(meta["images"]) == len(WITHOUT_STAGE)
    for record, expected in zip(meta["images"], WITHOUT_STAGE, strict=True):
        assert record["source"] == "phantom"
        for key in ("phantom_patient", "laterality", "view", "crop_window"):
            assert record[key] == expected[key], key
        for key in ("noise_sigma", "texture_spread"):
            assert record[key] == pytest.approx(expected[key], rel=1e-4), key
        assert len(record["lesions"]) == len(expected["lesions"])
        for lesion, want in zip(record["lesions"], expected["lesions"], strict=True):
            for key in ("label", "pattern", "distribution", "n_calcifications", "visible_calcifications", "draws"):
                assert lesion[key] == want[key], key
            assert lesion["peak_contrast"] == pytest.approx(want["peak_contrast"], rel=1e-4)
            assert lesion["box"] == pytest.approx(want["box"], abs=0.01)
        pixels = np.asarray(Image.open(tmp_path / record["image"]), dtype=np.float64)
        assert pixels.shape == (128, 128)
        assert float(pixels.mean()) == pytest.approx(expected["mean"], abs=0.01)
        assert float(pixels.std()) == pytest.approx(expected["spread"], abs=0.01)


def test_mccad_simulate_takes_the_acquisition_and_refuses_an_unknown_one(tmp_path, capsys):
    from mccad.cli import main

    out = tmp_path / "sim"
    assert main(["simulate", "--out", str(out), "--images", "2", "--sources", "phantom", "--spacing", "0.2",
                 "--crop", "64", "--acquisition", "digital"]) == 0
    assert {r["acquisition"] for r in json.loads((out / "simulated.json").read_text())["images"]} == {"digital"}
    with pytest.raises(SystemExit):
        main(["simulate", "--out", str(out), "--acquisition", "xray"])
    assert "xray" in capsys.readouterr().err
