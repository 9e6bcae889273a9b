"""Labelled cluster crops for the descriptor head: one simulated cluster each, its type and distribution known.

Crop ``i`` of a set depends only on ``(seed, i)`` and the set's :class:`CropSetSpec`: a background (one of the real
sample mammograms ``real_images``, or a lesion-free synthetic phantom) at a pitch drawn from ``spacings``; a pattern
drawn uniformly from ``PATTERNS`` and a distribution uniformly from that pattern's usual ones
(``training.simulate.morphology.PATTERN_DISTRIBUTIONS``); the cluster inserted with the simulator's physics and its
reader's rule (at least ``min_visible`` calcifications stand out of the breast's texture, or the pattern is drawn
again) into a window of the breast wide enough for it; then :func:`models.descriptor_head.crop_cluster` around the
cluster's box, moved and resized by up to ``jitter`` of the box's size, as a detector's box would be.

Backgrounds, their breast masks, noise and texture figures are computed once per process and pitch. Phantoms are
``phantoms`` lesion-free views drawn from the set's seed, so that two sets of different seeds share no phantom.
"""
from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.descriptor_head import DescriptorHeadConfig, crop_cluster
from training.simulate.background import breast_mask, image_noise_sigma
from training.simulate.dataset import _phantom_background, _real_background
from training.simulate.insert import insert_clusters
from training.simulate.morphology import DISTRIBUTIONS, PATTERN_DISTRIBUTIONS, PATTERNS, Cluster, simulate_cluster
from training.simulate.visibility import MIN_VISIBLE_CALCIFICATIONS, texture_spread

#: windows tried per crop before the crop is given up (a cluster too wide for the breast part drawn, or one that no
#: reader would see after the inserter's redraws: trying more windows mostly redraws invisible clusters again)
WINDOW_TRIES = 2
#: extra room (mm) around a cluster's reach in the window it is inserted into
WINDOW_MARGIN_MM = 3.0


@dataclass(frozen=True)
class CropSetSpec:
    """How a set of crops is drawn (see the module docstring)."""

    n: int
    seed: int
    spacings: tuple[float, ...] = (0.05, 0.1, 0.14, 0.2)
    real_images: tuple[int, ...] = (0, 1, 2, 3)
    phantom_fraction: float = 0.4
    phantoms: int = 2
    jitter: float = 0.15
    min_visible: int = MIN_VISIBLE_CALCIFICATIONS
    head: DescriptorHeadConfig = field(default_factory=lambda: DescriptorHeadConfig(PATTERNS, DISTRIBUTIONS))


@dataclass
class CropSet:
    """Crops and their truth, index-aligned: ``pixels`` (n, 2, S, S) float16, ``context_mm``, ``pattern`` and
    ``distribution`` (indices into the head's vocabulary), ``spacing_mm`` (the background's pitch) and ``source``."""

    pixels: np.ndarray
    context_mm: np.ndarray
    pattern: np.ndarray
    distribution: np.ndarray
    spacing_mm: np.ndarray
    source: np.ndarray

    def __len__(self) -> int:
        return int(self.pattern.shape[0])

    def save(self, path: Path | str) -> None:
        np.savez(path, **{k: getattr(self, k) for k in self.__dataclass_fields__})

    @classmethod
    def load(cls, path: Path | str) -> "CropSet":
        with np.load(path) as data:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})


_backgrounds: dict[tuple, tuple[np.ndarray, np.ndarray, float, float]] = {}  # see _background


def _cache_key(spec: CropSetSpec, source: str, which: int, spacing: float) -> tuple:
    """A real background is the same image whatever the set; a phantom is the set's own (drawn from its seed)."""
    return (source, spec.seed, which, spacing) if source == "phantom" else (source, spec.real_images[which], spacing)


def _background(spec: CropSetSpec, source: str, which: int, spacing: float
                ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Pixels, breast mask, noise sigma and texture spread of a background (cached per process)."""
    key = _cache_key(spec, source, which, spacing)
    if key not in _backgrounds:
        if source == "real":
            pixels, laterality, view, _ = _real_background(spec.real_images[which], spacing)
        else:
            rng = np.random.default_rng([spec.seed, 1_000_003, which])
            pixels, laterality, view, _ = _phantom_background(rng, spec.seed, spacing)
        mask = breast_mask(pixels, spacing, view=view, laterality=laterality)
        _backgrounds[key] = (pixels, mask, image_noise_sigma(pixels, mask), texture_spread(pixels, mask, spacing))
    return _backgrounds[key]


def _reach_mm(cluster: Cluster) -> float:
    x0, y0, x1, y1 = cluster.extent_mm()
    return max(abs(x0), abs(y0), abs(x1), abs(y1)) * math.sqrt(2.0)


def _window(rng: np.random.Generator, mask: np.ndarray, half: int) -> tuple[int, int] | None:
    """Top-left corner of a (2 half) square window centred on a random breast pixel, inside the image."""
    h, w = mask.shape
    if 2 * half > min(h, w):
        return None
    inside = np.flatnonzero(mask[half:h - half, half:w - half].ravel())
    if inside.size == 0:
        return None
    cy, cx = divmod(int(inside[rng.integers(inside.size)]), w - 2 * half)
    return cy, cx


def make_crop(spec: CropSetSpec, index: int) -> tuple[np.ndarray, float, int, int, float, str] | None:
    """Crop ``index`` of the set: pixels, context field (mm), pattern and distribution index, pitch and source;
    None when no window of the drawn background took the cluster."""
    rng = np.random.default_rng([spec.seed, index])
    source = "phantom" if (not spec.real_images or rng.random() < spec.phantom_fraction) else "real"
    which = int(rng.integers(spec.phantoms if source == "phantom" else len(spec.real_images)))
    spacing = float(spec.spacings[int(rng.integers(len(spec.spacings)))])
    pattern = str(PATTERNS[int(rng.integers(len(PATTERNS)))])
    allowed = PATTERN_DISTRIBUTIONS[pattern]
    distribution = str(allowed[int(rng.integers(len(allowed)))])
    pixels, mask, noise, spread = _background(spec, source, which, spacing)
    cluster = simulate_cluster(rng, pattern, spacing, distribution=distribution)

    def redraw(_: Cluster) -> Cluster:
        return simulate_cluster(rng, pattern, spacing, distribution=distribution)

    half = int(math.ceil((_reach_mm(cluster) * (1 + spec.head.context_margin) + WINDOW_MARGIN_MM) / spacing))
    for _ in range(WINDOW_TRIES):
        corner = _window(rng, mask, half)
        if corner is None:
            return None
        r0, c0 = corner
        region = (slice(r0, r0 + 2 * half), slice(c0, c0 + 2 * half))
        image, lesions = insert_clusters(pixels[region], spacing, [cluster], rng, mask[region], noise_sigma=noise,
                                         texture_spread=spread, min_visible=spec.min_visible, redraw=redraw)
        if not lesions:
            continue
        x0, y0, x1, y1 = lesions[0].box
        bw, bh = x1 - x0, y1 - y0
        cx = (x0 + x1) / 2 + rng.uniform(-spec.jitter, spec.jitter) * bw
        cy = (y0 + y1) / 2 + rng.uniform(-spec.jitter, spec.jitter) * bh
        sx, sy = bw * rng.uniform(1 - spec.jitter, 1 + spec.jitter), bh * rng.uniform(1 - spec.jitter, 1 + spec.jitter)
        crop = crop_cluster(image, spacing, (cx - sx / 2, cy - sy / 2, cx + sx / 2, cy + sy / 2), spec.head)
        return (crop.pixels, crop.context_mm, spec.head.patterns.index(lesions[0].pattern),
                spec.head.distributions.index(lesions[0].distribution), spacing, source)
    return None


def _background_entry(spec: CropSetSpec, key: tuple[str, int, float]) -> tuple:
    return _background(spec, *key)


def _prepare_backgrounds(spec: CropSetSpec, workers: int, progress: bool) -> None:
    """Every background the set can draw, computed once here (in ``workers`` processes); the crop workers forked
    afterwards share them."""
    keys = [(source, which, spacing) for spacing in spec.spacings
            for source, count in (("real", len(spec.real_images) if spec.phantom_fraction < 1 else 0),
                                  ("phantom", spec.phantoms if spec.phantom_fraction > 0 else 0))
            for which in range(count) if _cache_key(spec, source, which, spacing) not in _backgrounds]
    results: Iterable = map(partial(_background_entry, spec), keys)
    pool = _fork_pool(workers) if workers > 1 else None
    if pool is not None:
        results = pool.map(partial(_background_entry, spec), keys)
    if progress:
        results = tqdm(results, total=len(keys), desc="backgrounds", unit="image")
    try:
        for (source, which, spacing), entry in zip(keys, results, strict=True):
            _backgrounds[_cache_key(spec, source, which, spacing)] = entry
    finally:
        if pool is not None:
            pool.shutdown()


def _fork_pool(workers: int):
    """Worker processes forked from this one, so that they inherit its prepared backgrounds."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))


def make_crop_set(spec: CropSetSpec, *, workers: int = 1, progress: bool = False) -> CropSet:
    """Draw crops ``0 .. spec.n - 1`` (in ``workers`` processes; the same crops whatever their number), leaving out
    the few whose cluster found no window."""
    indices = range(spec.n)
    _prepare_backgrounds(spec, workers, progress)
    if workers > 1:
        pool = _fork_pool(workers)
        results: Iterable = pool.map(partial(make_crop, spec), indices, chunksize=4)
    else:
        pool, results = None, (make_crop(spec, i) for i in indices)
    if progress:
        results = tqdm(results, total=spec.n, desc=f"crops (seed {spec.seed})", unit="crop")
    try:
        kept = [r for r in results if r is not None]
    finally:
        if pool is not None:
            pool.shutdown()
    size = spec.head.size
    return CropSet(
        pixels=np.stack([r[0] for r in kept]).astype(np.float16) if kept else np.zeros((0, 2, size, size), np.float16),
        context_mm=np.asarray([r[1] for r in kept], np.float32),
        pattern=np.asarray([r[2] for r in kept], np.int64),
        distribution=np.asarray([r[3] for r in kept], np.int64),
        spacing_mm=np.asarray([r[4] for r in kept], np.float32),
        source=np.asarray([r[5] for r in kept], dtype="<U7"))


def spec_record(spec: CropSetSpec) -> dict:
    """The spec as JSON-ready data (what a cached set is checked against)."""
    return json.loads(json.dumps(dataclasses.asdict(spec)))


def cached_crop_set(spec: CropSetSpec, path: Path | str, *, workers: int = 1, progress: bool = False) -> CropSet:
    """The set of ``spec``, read from ``path`` (``.npz``, with its spec beside it as ``.json``) when it was drawn
    with the same spec, else drawn and written there: a resumed or repeated training run draws nothing again."""
    path = Path(path)
    meta = path.with_suffix(".json")
    record = spec_record(spec)
    if path.is_file() and meta.is_file() and json.loads(meta.read_text()) == record:
        return CropSet.load(path)
    crops = make_crop_set(spec, workers=workers, progress=progress)
    tmp = path.with_name(path.stem + ".tmp.npz")
    crops.save(tmp)
    tmp.replace(path)
    meta.write_text(json.dumps(record, indent=1))
    return crops
