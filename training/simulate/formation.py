"""Image formation of the two acquisition sources a simulated mammogram can come from: digitised screen-film and a
digital (DR) detector, applied at the image's own pixel spacing.

Why: a detector trained on one acquisition meets the other in practice (digitised film archives such as MIAS and
DDSM; DR screening). The background alone fixes neither: phantoms carry no acquisition at all, and real backgrounds
carry the film they were scanned from at whatever pitch they are resampled to. This stage gives an image one source's
blur, noise and artefacts, the same for the background and for everything inserted into it.

``film`` (digitised screen-film):

* grain: film noise with the noise-against-signal curve measured on real digitised film (``FILM_NOISE_TABLE``,
  high-pass noise of flat patches against their mean at ``REFERENCE_SPACING_MM``,
  :mod:`training.simulate.noise_stats`) and a spectrum of white grain correlated over ``GRAIN_CORRELATION_MM``
  (screen light spread and grain clumping) then blurred by the scanner; at another pitch the same physical noise is
  sampled, so the pixel noise changes as the film's own does
  (``docs/experiments/film-formation-simulation.md`` has both fits);
* blur: the scanner's spot, ``SCANNER_BLUR_PX`` pixels (Gaussian sigma) at the scanning pitch;
* characteristic curve: the noise table is the curve's print (noise falls at the toe and the shoulder, where the
  curve flattens), and inserted objects get the film contrast slope of :mod:`training.simulate.insert` (step 4);
* scanner artefacts (:func:`add_artefacts`): bright dust specks from the screen (the classic calcification mimic),
  dark dust on the scanner glass, emulsion scratches (bright lines) and column stripes of a line scanner.

``digital`` (direct-conversion DR detector, log-processed):

* quantum noise whose relative size grows as fewer photons pass (``exp(m / 2g)`` in display units ``m``, ``g``
  the display gain per natural-log unit) and electronic noise that grows twice as fast, white (a direct detector
  hardly blurs its noise);
* blur: the detector's charge spread, ``DETECTOR_BLUR_PX`` pixels;
* a linear (log-exposure) response: inserted objects get a contrast independent of the background level;
* no grain and no artefacts.

The digital constants come from the literature's orders of magnitude, not from a measurement: no DR image is
available here.

Noise is *topped up*: a background that already carries acquisition noise (a real film) only gets the noise its own
lacks to reach the source's level, measured the same way (:func:`training.simulate.noise_stats.flat_patches`); a
film background asked to be digital keeps its grain (noise cannot be taken out), which the record says
(``existing_noise``). Phantoms are drawn without acquisition noise and get the full amount.

How the simulator uses it (``training.simulate.dataset``): the background is formed first (:func:`form_background`:
blur, noise, stripes); clusters and look-alikes are then inserted into the formed background with the point spread
widened by the same blur (:func:`insertion_psf_mm`) and the source's response (:func:`linear_response`), so the
reader's visibility rule judges them against the texture they will be seen in; the film's dust and scratches come
last (:func:`add_artefacts`). Every random draw comes from a generator of its own, so a set made without this stage
is unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from training.simulate.insert import DISPLAY_GAIN, PSF_SIGMA_MM
from training.simulate.noise_stats import HIGHPASS_MM, TREND_MM, flat_patches

#: the image-formation sources; ``mixed`` draws one of them per image
ACQUISITIONS: tuple[str, ...] = ("film", "digital")
CHOICES: tuple[str, ...] = (*ACQUISITIONS, "mixed")
#: third element of the per-image seed of this stage's generator (the look-alikes use 1)
FORMATION_STREAM = 2

#: the pitch the film noise table was measured at (mm)
REFERENCE_SPACING_MM = 0.2
#: high-pass noise (:mod:`training.simulate.noise_stats`) of flat patches of real digitised film at 0.2 mm against
#: the patch mean (bright = dense): bin centre, median noise
FILM_NOISE_TABLE: tuple[tuple[float, float], ...] = (
    (0.15, 0.0048), (0.25, 0.0065), (0.35, 0.0075), (0.45, 0.0085), (0.55, 0.0088), (0.65, 0.0085),
    (0.75, 0.0080), (0.85, 0.0062), (0.95, 0.0044))
#: correlation length of the film's noise (Gaussian sigma, mm): screen light spread and grain clumping
GRAIN_CORRELATION_MM = 0.05
#: the scanner's spot (Gaussian sigma) in pixels of its pitch
SCANNER_BLUR_PX = 0.25
#: column stripes of a line scanner: standard deviation of the per-column offset (display units)
STRIPE_SD = 0.0015
#: bright screen-dust specks, dark scanner-dust specks per 100 cm2 of film; chance of an emulsion scratch per film
SCREEN_DUST_PER_100CM2 = 3.0
SCANNER_DUST_PER_100CM2 = 2.0
SCRATCH_CHANCE = 0.3

#: the digital detector's charge spread (Gaussian sigma) in pixels
DETECTOR_BLUR_PX = 0.25
#: the pitch the digital noise levels are stated at (mm)
DIGITAL_REFERENCE_SPACING_MM = 0.1
#: quantum and electronic high-pass noise at mid-grey (display 0.5) at the digital reference pitch
QUANTUM_NOISE = 0.004
ELECTRONIC_NOISE = 0.001


@dataclass(frozen=True)
class FilmOptics:
    """The film's noise spread: its grain's correlation length (mm) and the scanner's spot (Gaussian sigma, pixels
    of the scanning pitch). ``FILM`` holds the calibrated values; other values are for the calibration's grid."""

    correlation_mm: float = GRAIN_CORRELATION_MM
    scanner_blur_px: float = SCANNER_BLUR_PX


FILM = FilmOptics()


def check_acquisition(choice: str | None) -> str | None:
    """``choice`` when it is None (no formation stage) or one of ``CHOICES``, else ``ValueError``."""
    if choice is not None and choice not in CHOICES:
        raise ValueError(f"unknown acquisition {choice!r}; choose from {', '.join(CHOICES)}")
    return choice


def draw_acquisition(choice: str, rng: np.random.Generator) -> str:
    """The source of one image: ``choice`` itself, or for ``mixed`` film or digital with equal chance."""
    check_acquisition(choice)
    return str(rng.choice(ACQUISITIONS)) if choice == "mixed" else choice


def blur_sigma_mm(source: str, spacing_mm: float, film: FilmOptics = FILM) -> float:
    """The blur this source adds at ``spacing_mm`` (Gaussian sigma, mm): the scanner's spot or the detector's spread,
    both a fixed share of the pitch."""
    return (film.scanner_blur_px if source == "film" else DETECTOR_BLUR_PX) * spacing_mm


def insertion_psf_mm(source: str, spacing_mm: float, film: FilmOptics = FILM) -> float:
    """The point spread an inserted object gets under this source: the inserter's own (``PSF_SIGMA_MM``) widened by
    the source's blur, as the background is."""
    return math.hypot(PSF_SIGMA_MM, blur_sigma_mm(source, spacing_mm, film))


def linear_response(source: str) -> bool:
    """Whether inserted contrast is independent of the background level (a log-processed digital detector) rather
    than following the film's characteristic-curve slope."""
    return source == "digital"


def _noise_sigma_px(source: str, spacing_mm: float, film: FilmOptics) -> float:
    if source == "film":
        return math.hypot(film.correlation_mm, blur_sigma_mm(source, spacing_mm, film)) / spacing_mm
    return blur_sigma_mm(source, spacing_mm) / spacing_mm


def fourier_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """``image`` blurred by a Gaussian of ``sigma_px`` pixels applied as its exact transfer function
    ``exp(-2 pi^2 sigma^2 f^2)`` (f in cycles per pixel): a sub-pixel blur keeps its true, partial effect, which a
    sampled kernel of under a pixel loses. The image wraps at its edges over a few sigma."""
    data = np.asarray(image, dtype=np.float32)
    if sigma_px <= 0:
        return data.copy()
    spectrum = ndimage.fourier_gaussian(np.fft.rfft2(data), sigma_px, n=data.shape[1])
    return np.fft.irfft2(spectrum, s=data.shape).astype(np.float32)


def unit_noise(rng: np.random.Generator, shape: tuple[int, int], source: str, spacing_mm: float,
               film: FilmOptics = FILM) -> np.ndarray:
    """Noise of unit physical spectral density at ``spacing_mm``: white noise of variance ``1 / spacing^2`` (what a
    pixel of that area integrates) filtered by the source's noise spread (for film the grain's correlation and the
    scanner's blur, ``film``). Its pixel level therefore changes with the pitch as a real acquisition's does."""
    white = rng.standard_normal(shape, dtype=np.float32) / np.float32(spacing_mm)
    sigma = _noise_sigma_px(source, spacing_mm, film)
    return fourier_blur(white, sigma)


def highpass_level(field: np.ndarray, spacing_mm: float) -> float:
    """The high-pass noise statistic of :mod:`training.simulate.noise_stats` (MAD-sigma of the field minus its
    ``HIGHPASS_MM`` smoothing) over a whole field."""
    residual = field - ndimage.gaussian_filter(field, HIGHPASS_MM / spacing_mm, mode="wrap")
    median = float(np.median(residual))
    return 1.4826 * float(np.median(np.abs(residual - median)))


@lru_cache(maxsize=64)
def unit_level(source: str, spacing_mm: float, film: FilmOptics = FILM) -> float:
    """``highpass_level`` of a 512 x 512 ``unit_noise`` field at ``spacing_mm`` (fixed seed: a property of the
    source and the pitch)."""
    return highpass_level(unit_noise(np.random.default_rng(0), (512, 512), source, spacing_mm, film), spacing_mm)


def target_noise(source: str, means: np.ndarray, spacing_mm: float, film: FilmOptics = FILM) -> np.ndarray:
    """The high-pass noise level this source gives at display level ``means`` (bright = dense) and ``spacing_mm``:
    film, the measured table at its pitch carried to this pitch by the grain's spectrum; digital, quantum and
    electronic noise at the digital reference pitch carried the same way."""
    m = np.asarray(means, dtype=np.float32)
    if source == "film":
        table = np.asarray(FILM_NOISE_TABLE, dtype=np.float32)
        level = np.interp(m, table[:, 0], table[:, 1]).astype(np.float32)
        return level * np.float32(unit_level(source, spacing_mm, film) / unit_level(source, REFERENCE_SPACING_MM,
                                                                                   film))
    # fewer photons behind denser tissue: relative quantum noise grows by exp(attenuation / 2), electronic noise
    # (fixed in the linear signal) by exp(attenuation); attenuation = (m - 0.5) / DISPLAY_GAIN natural-log units
    attenuation = (m - np.float32(0.5)) / np.float32(DISPLAY_GAIN)
    level = np.sqrt(QUANTUM_NOISE ** 2 * np.exp(attenuation) + ELECTRONIC_NOISE ** 2 * np.exp(2 * attenuation))
    scale = unit_level(source, spacing_mm) / unit_level(source, DIGITAL_REFERENCE_SPACING_MM)
    return (level * np.float32(scale)).astype(np.float32)


def existing_noise(pixels: np.ndarray, breast: np.ndarray, spacing_mm: float) -> float:
    """The acquisition noise a background already carries: the median high-pass noise of its flat patches (0 when
    it has none)."""
    patches = flat_patches(pixels, breast, spacing_mm)
    return float(np.median(patches.noise)) if patches.noise.size else 0.0


@dataclass(frozen=True)
class Formed:
    """A formed background and what was done to it (``record``, JSON-ready, for ``simulated.json``)."""

    pixels: np.ndarray
    record: dict


def form_background(pixels: np.ndarray, breast: np.ndarray, spacing_mm: float, source: str,
                    rng: np.random.Generator, *, acquired: bool, film: FilmOptics = FILM) -> Formed:
    """Give a background (float in [0, 1], bright = dense) this source's blur and noise, and for film its scanner's
    column stripes. ``acquired``: the background already carries acquisition noise (a real image), which the added
    noise tops up to the source's level instead of adding to it (module docstring)."""
    if source not in ACQUISITIONS:
        raise ValueError(f"unknown acquisition source {source!r}; choose from {', '.join(ACQUISITIONS)}")
    image = np.asarray(pixels, dtype=np.float32)
    blur = blur_sigma_mm(source, spacing_mm, film)
    blurred = fourier_blur(image, blur / spacing_mm)
    had = existing_noise(blurred, breast, spacing_mm) if acquired else 0.0
    local = ndimage.gaussian_filter(blurred, TREND_MM / spacing_mm, mode="nearest")
    wanted = target_noise(source, local, spacing_mm, film)
    field = unit_noise(rng, image.shape, source, spacing_mm, film)
    amplitude = np.sqrt(np.clip(wanted ** 2 - np.float32(had) ** 2, 0.0, None)) / np.float32(
        highpass_level(field, spacing_mm))
    out = blurred + amplitude * field
    record: dict = {"acquisition": source, "blur_sigma_mm": round(blur, 6),
                    "insertion_psf_mm": round(insertion_psf_mm(source, spacing_mm, film), 6),
                    "existing_noise": round(had, 6),
                    "target_noise_mid_grey": round(float(target_noise(source, np.float32(0.5), spacing_mm, film)),
                                                   6)}
    if source == "film":
        stripes = rng.standard_normal(image.shape[1]).astype(np.float32) * np.float32(STRIPE_SD)
        out = out + stripes[None, :]
        record["stripe_sd"] = STRIPE_SD
    return Formed(np.clip(out, 0.0, 1.0).astype(np.float32), record)


def _spot(image: np.ndarray, centre: tuple[float, float], sigma_px: float, amplitude: float) -> list[float]:
    """Add a Gaussian spot (peak ``amplitude``) at ``centre`` (x, y); returns its box (x0, y0, x1, y1)."""
    reach = max(2, math.ceil(3 * sigma_px))
    cx, cy = centre
    x0, y0 = max(int(cx) - reach, 0), max(int(cy) - reach, 0)
    x1, y1 = min(int(cx) + reach + 1, image.shape[1]), min(int(cy) + reach + 1, image.shape[0])
    xs = np.arange(x0, x1, dtype=np.float32) + 0.5 - cx
    ys = np.arange(y0, y1, dtype=np.float32) + 0.5 - cy
    image[y0:y1, x0:x1] += np.float32(amplitude) * np.exp(-(xs[None, :] ** 2 + ys[:, None] ** 2) / (2 * sigma_px ** 2))
    return [float(x0), float(y0), float(x1), float(y1)]


def _scratch(image: np.ndarray, rng: np.random.Generator, spacing_mm: float, blur_px: float) -> dict:
    """One emulsion scratch: a straight bright line 20-120 mm long, 0.03-0.08 mm wide."""
    h, w = image.shape
    length = rng.uniform(20.0, 120.0) / spacing_mm
    angle = rng.uniform(0.0, math.pi)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    dx, dy = math.cos(angle) * length / 2, math.sin(angle) * length / 2
    (ax, ay), (bx, by) = (cx - dx, cy - dy), (cx + dx, cy + dy)
    sigma = math.hypot(rng.uniform(0.03, 0.08) / spacing_mm / 2, blur_px, 0.5)
    reach = 3 * sigma
    x0, x1 = int(max(min(ax, bx) - reach, 0)), int(min(max(ax, bx) + reach + 1, w))
    y0, y1 = int(max(min(ay, by) - reach, 0)), int(min(max(ay, by) + reach + 1, h))
    if x1 <= x0 or y1 <= y0:
        return {"kind": "scratch", "box": [0.0, 0.0, 0.0, 0.0]}
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    ux, uy = (bx - ax) / length, (by - ay) / length
    along = np.clip((xs - ax) * ux + (ys - ay) * uy, 0.0, length)
    dist2 = (xs - ax - along * ux) ** 2 + (ys - ay - along * uy) ** 2
    image[y0:y1, x0:x1] += np.float32(rng.uniform(0.03, 0.1)) * np.exp(-dist2 / (2 * sigma ** 2))
    return {"kind": "scratch", "box": [float(x0), float(y0), float(x1), float(y1)]}


def add_artefacts(image: np.ndarray, spacing_mm: float, source: str, rng: np.random.Generator
                  ) -> tuple[np.ndarray, list[dict]]:
    """The film's scanner artefacts over a whole image (nothing for a digital one): bright screen-dust specks
    (0.05-0.15 mm, as bright as a calcification), dark scanner-dust specks, and with ``SCRATCH_CHANCE`` an
    emulsion scratch; each blurred by the scanner. Returns the new image and one record per artefact (kind, box in
    pixels): unannotated, like the look-alikes, so a box on one is a false positive."""
    out = np.array(image, dtype=np.float32, copy=True)
    if source != "film":
        return out, []
    area_100cm2 = out.shape[0] * out.shape[1] * spacing_mm * spacing_mm / 10_000.0
    blur_px = blur_sigma_mm(source, spacing_mm) / spacing_mm
    found: list[dict] = []
    for kind, rate, sign in (("screen_dust", SCREEN_DUST_PER_100CM2, 1.0),
                             ("scanner_dust", SCANNER_DUST_PER_100CM2, -1.0)):
        for _ in range(int(rng.poisson(rate * area_100cm2))):
            centre = (float(rng.uniform(0, out.shape[1])), float(rng.uniform(0, out.shape[0])))
            sigma = math.hypot(rng.uniform(0.05, 0.15) / spacing_mm / 2, blur_px, 0.5)
            found.append({"kind": kind, "box": _spot(out, centre, sigma, sign * rng.uniform(0.05, 0.25))})
    if rng.random() < SCRATCH_CHANCE:
        found.append(_scratch(out, rng, spacing_mm, blur_px))
    return np.clip(out, 0.0, 1.0), found
