"""A training-free baseline detector of microcalcification clusters: classical spot detection and the clinical
cluster rule, with every size in millimetres so that one set of parameters serves any pixel pitch (0.05-0.2 mm).

A baseline that learns nothing tells whether a learned detector's figures come from what it learned or merely from
what any bright-spot finder would mark, and it cannot overfit a site it has never seen. Steps, on one image:

1. Working grid: images finer than ``working_pitch_mm`` are area-averaged by an integer factor (0.05 mm film is
   read at 0.1 mm; 0.1-0.2 mm images at their own pitch), which keeps the run time of a 0.05 mm film reasonable and
   loses nothing a 0.3 mm calcification needs.
2. Breast: ``models.breast_mask.breast_mask`` (no background, labels, film borders; on MLO views no pectoral
   muscle), ``margin_mm`` inside the skin line and inside the image's edges (film edges and crop lines).
3. Spot response: a difference of Gaussians tuned to a calcification (``spot_sigma_mm``, the centre;
   ``surround_sigma_mm``, the tissue around it): bright spots of 0.2-0.6 mm answer, smooth tissue and broad dense
   regions do not.
4. Local contrast test: the response divided by the surrounding tissue's robust noise, 1.4826 x the median absolute
   response in blocks of ``noise_block_mm`` (smoothed over the neighbouring blocks), so that a spot must stand out
   against its own texture: busy dense tissue asks for more than fatty tissue. Candidates are local maxima (at most
   one per ``min_separation_mm``) whose ratio reaches ``min_snr`` and whose response reaches ``min_contrast`` (the
   [0, 1] intensity scale of ``models.types.MammogramImage``).
5. Shape test: the Hessian at ``shape_sigma_mm`` must curve down in both directions (the smaller eigenvalue at least
   ``min_roundness`` of the larger), which turns away ridges: vessel walls, ligaments and the edges of dense
   tissue give a line of maxima, a calcification a point.
6. Cluster rule (BI-RADS: at least three calcifications within 1 cm2): a spot with at least ``min_spots - 1`` other
   spots within the radius of a circle of ``cluster_area_mm2`` is a core spot; core spots within that radius of
   each other, and the spots within it of a core spot, form one cluster (density-based clustering with the clinical
   numbers). Isolated specks, such as film dust, never form a cluster.
7. One box per cluster: its spots' extent padded by ``box_margin_mm`` on every side, in the source image's pixels
   (``models.results`` convention), scored ``1 - exp(-sum(snr_i / min_snr) / score_scale)``: more spots and more
   contrast give a higher score, bounded in [0, 1) so that it reads on the same axis as a learned detector's score.

The detector does not tell benign from malignant; a cluster is a finding that asks for a radiologist's look.

Pure numpy and scipy: this module runs beside the model pipeline and imports nothing from ``training`` or torch.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from models.breast_mask import breast_mask

#: the manifest architecture of this detector (``models.registry``); its parameters are ``input_spec["spots"]``
ARCHITECTURE = "spots-dog"
#: pixel pitches (mm) the millimetre parameters are meant for; images outside them are refused
SPACING_RANGE_MM = (0.025, 0.25)


@dataclass(frozen=True)
class SpotDetectorConfig:
    """The detector's parameters, all physical; ``manifest.json`` holds them as ``input_spec["spots"]``."""

    #: images finer than this (mm) are area-averaged by an integer factor to at most this pitch before detection
    working_pitch_mm: float = 0.1
    #: the pitch assumed for an image whose file states none (digitised film such as CBIS-DDSM: 0.042-0.05 mm)
    assumed_spacing_mm: float = 0.05
    #: standard deviation (mm) of the Gaussian matched to a calcification's core (a 0.3-0.5 mm spot)
    spot_sigma_mm: float = 0.12
    #: standard deviation (mm) of the Gaussian that stands for the tissue around a spot
    surround_sigma_mm: float = 0.6
    #: side (mm) of the blocks over which the tissue's robust noise is measured
    noise_block_mm: float = 4.0
    #: a spot's response divided by its tissue's robust noise must reach this
    min_snr: float = 5.0
    #: a spot's response must reach this on the [0, 1] intensity scale (quantised or flat images: no zero noise)
    min_contrast: float = 0.008
    #: standard deviation (mm) of the Gaussian the Hessian of the shape test is taken at: coarser than a pixel at
    #: 0.2 mm, so that one pixel of a vessel's edge does not pass for a spot
    shape_sigma_mm: float = 0.25
    #: the Hessian's smaller eigenvalue must be at least this share of the larger one (1: round, 0: a ridge)
    min_roundness: float = 0.3
    #: two candidates closer than this (mm) are one spot (the brighter stands)
    min_separation_mm: float = 0.6
    #: calcifications per cluster, the clinical rule's three
    min_spots: int = 3
    #: the area (mm2) the clinical rule counts them in: 1 cm2
    cluster_area_mm2: float = 100.0
    #: the box drawn around a cluster extends this far (mm) beyond its outermost spots
    box_margin_mm: float = 1.0
    #: the summed contrast (in units of ``min_snr``) at which a cluster's score reaches 1 - 1/e
    score_scale: float = 6.0
    #: distance (mm) from the skin line within which no spot is looked for
    margin_mm: float = 2.0

    def __post_init__(self) -> None:
        positive = ("working_pitch_mm", "assumed_spacing_mm", "spot_sigma_mm", "surround_sigma_mm",
                    "noise_block_mm", "shape_sigma_mm", "min_snr", "min_separation_mm",
                    "cluster_area_mm2", "score_scale")
        for name in positive:
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"spots.{name} must be positive, got {getattr(self, name)}")
        if self.surround_sigma_mm <= self.spot_sigma_mm:
            raise ValueError("spots.surround_sigma_mm must exceed spots.spot_sigma_mm (a difference of Gaussians "
                             "needs a wider surround than centre)")
        if int(self.min_spots) != self.min_spots or self.min_spots < 1:
            raise ValueError(f"spots.min_spots must be a whole number >= 1, got {self.min_spots}")
        for name in ("min_contrast", "box_margin_mm", "margin_mm"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"spots.{name} must not be negative, got {getattr(self, name)}")
        if not 0.0 <= self.min_roundness <= 1.0:
            raise ValueError(f"spots.min_roundness must lie in [0, 1], got {self.min_roundness}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> "SpotDetectorConfig":
        """Strict: an unknown key is an error (a misspelt parameter must not silently fall back to its default)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"unknown spots parameter(s) {unknown}; known: {sorted(known)}")
        values = dict(spec)
        if "min_spots" in values:
            if float(values["min_spots"]) != int(values["min_spots"]):
                raise ValueError(f"spots.min_spots must be a whole number, got {values['min_spots']}")
            values["min_spots"] = int(values["min_spots"])
        return cls(**values)


@dataclass
class SpotClusters:
    """What :func:`detect_clusters` found on one image, in the source image's pixels (x = column, y = row).

    ``boxes`` (N, 4) float64 ``x0, y0, x1, y1`` per cluster, ``scores`` (N,) in [0, 1), ``n_spots`` (N,) spots per
    cluster, ``spots`` (M, 2) float64 ``x, y`` centres of every spot that passed the tests (in a cluster or not),
    ``snr`` (M,) their contrast ratios, ``cluster_of`` (M,) the index of each spot's cluster, -1 for none.
    """

    boxes: np.ndarray
    scores: np.ndarray
    n_spots: np.ndarray
    spots: np.ndarray
    snr: np.ndarray
    cluster_of: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def _downsample(image: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return image
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def _robust_noise(response: np.ndarray, mask: np.ndarray, block: int) -> np.ndarray:
    """1.4826 x median |response| per block of ``block`` pixels inside the breast, smoothed over the 3 x 3
    neighbouring blocks and spread back over the image; blocks without breast take the breast's median."""
    h, w = response.shape
    nby, nbx = -(-h // block), -(-w // block)
    padded = np.full((nby * block, nbx * block), np.nan, dtype=np.float32)
    padded[:h, :w] = np.where(mask, np.abs(response), np.nan)
    blocks = padded.reshape(nby, block, nbx, block).transpose(0, 2, 1, 3).reshape(nby, nbx, block * block)
    filled = np.sum(~np.isnan(blocks), axis=2)
    enough = filled >= max(4, (block * block) // 4)
    grid = np.full((nby, nbx), np.nan, dtype=np.float64)
    if enough.any():
        grid[enough] = 1.4826 * np.nanmedian(blocks[enough], axis=1)
        fallback = float(np.nanmedian(grid[enough]))
    else:
        fallback = 1.4826 * float(np.median(np.abs(response))) if response.size else 0.0
    grid = np.where(np.isnan(grid), fallback, grid)
    grid = ndimage.uniform_filter(grid, size=3, mode="nearest")
    full = np.repeat(np.repeat(grid, block, axis=0), block, axis=1)[:h, :w]
    return full.astype(np.float32)


def _roundness(smoothed_hessian: tuple[np.ndarray, np.ndarray, np.ndarray], ys: np.ndarray,
               xs: np.ndarray) -> np.ndarray:
    """Smaller over larger magnitude of the Hessian's eigenvalues at each point, 0 unless both curve down."""
    hyy, hxx, hxy = (h[ys, xs].astype(np.float64) for h in smoothed_hessian)
    mean = 0.5 * (hyy + hxx)
    half_gap = np.sqrt(0.25 * (hyy - hxx) ** 2 + hxy ** 2)
    l_small, l_large = mean + half_gap, mean - half_gap  # l_large the more negative
    ratio = np.where((l_large < 0) & (l_small < 0), l_small / np.minimum(l_large, -1e-12), 0.0)
    return np.clip(ratio, 0.0, 1.0)


def _clusters(points_mm: np.ndarray, radius_mm: float, min_spots: int) -> np.ndarray:
    """Density-based clustering with the clinical numbers: the cluster index of each point, -1 for none."""
    n = len(points_mm)
    labels = np.full(n, -1, dtype=np.int64)
    if n < min_spots:
        return labels
    tree = cKDTree(points_mm)
    neighbours = tree.query_ball_point(points_mm, r=radius_mm)
    core = np.array([len(nb) >= min_spots for nb in neighbours])  # the point itself counts
    next_label = 0
    for seed in np.flatnonzero(core):
        if labels[seed] >= 0:
            continue
        labels[seed] = next_label
        stack = [int(seed)]
        while stack:
            i = stack.pop()
            for j in neighbours[i]:
                if labels[j] < 0:
                    labels[j] = next_label
                    if core[j]:
                        stack.append(int(j))
        next_label += 1
    return labels


def _empty(spots: np.ndarray | None = None, snr: np.ndarray | None = None) -> SpotClusters:
    spots = np.zeros((0, 2)) if spots is None else spots
    snr = np.zeros(0) if snr is None else snr
    return SpotClusters(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64), spots, snr,
                        np.full(len(snr), -1, dtype=np.int64))


def detect_clusters(image: np.ndarray, spacing_mm: float, config: SpotDetectorConfig = SpotDetectorConfig(), *,
                    view: str | None = None, laterality: str | None = None) -> SpotClusters:
    """Microcalcification clusters on one mammogram.

    ``image``: 2-D, the [0, 1] scale of ``models.types.MammogramImage`` (bright = dense), any orientation;
    ``spacing_mm``: its pixel pitch; ``view`` / ``laterality``: as DICOM writes them (the MLO pectoral cut and the
    chest-wall side of ``models.breast_mask``; None: decided from the image). Returns the clusters, best first, and
    every spot that passed the tests. Raises ValueError for an image that is not 2-D or a pitch outside
    ``SPACING_RANGE_MM``.
    """
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim != 2:
        raise ValueError(f"detect_clusters expects a 2-D image, got shape {pixels.shape}")
    if not SPACING_RANGE_MM[0] <= spacing_mm <= SPACING_RANGE_MM[1]:
        raise ValueError(f"pixel spacing {spacing_mm} mm is outside the {SPACING_RANGE_MM[0]}-{SPACING_RANGE_MM[1]} "
                         "mm the spot detector's millimetre parameters are meant for")
    factor = max(1, int(math.floor(config.working_pitch_mm / spacing_mm + 1e-6)))
    work = _downsample(pixels, factor)
    pitch = spacing_mm * factor
    if min(work.shape) < 8:
        return _empty()
    mask = breast_mask(work, pitch, view=view, laterality=laterality, margin_mm=config.margin_mm)
    edge = max(1, int(math.ceil(config.margin_mm / pitch)))
    mask[:edge], mask[-edge:], mask[:, :edge], mask[:, -edge:] = False, False, False, False  # film and crop edges
    if not mask.any():
        return _empty()
    centre = ndimage.gaussian_filter(work, config.spot_sigma_mm / pitch, mode="nearest")
    response = centre - ndimage.gaussian_filter(work, config.surround_sigma_mm / pitch, mode="nearest")
    block = max(4, int(round(config.noise_block_mm / pitch)))
    noise = _robust_noise(response, mask, block)
    snr = response / np.maximum(noise, 1e-6)
    size = max(3, 2 * int(round(0.5 * config.min_separation_mm / pitch)) + 1)
    peaks = (response == ndimage.maximum_filter(response, size=size, mode="nearest")) & mask
    peaks &= (snr >= config.min_snr) & (response >= config.min_contrast)
    ys, xs = np.nonzero(peaks)
    if len(ys):
        sigma = config.shape_sigma_mm / pitch
        hessian = tuple(ndimage.gaussian_filter(work, sigma, order=o, mode="nearest") for o in ((2, 0), (0, 2), (1, 1)))
        keep = _roundness(hessian, ys, xs) >= config.min_roundness  # type: ignore[arg-type]
        ys, xs = ys[keep], xs[keep]
    spot_snr = snr[ys, xs].astype(np.float64)
    # centres in source pixels (continuous coordinates: working pixel i covers source [i*f, (i+1)*f))
    spots = np.stack([(xs + 0.5) * factor, (ys + 0.5) * factor], axis=1).astype(np.float64) if len(ys) \
        else np.zeros((0, 2))
    radius_mm = math.sqrt(config.cluster_area_mm2 / math.pi)
    labels = _clusters(spots * spacing_mm, radius_mm, config.min_spots)
    n = int(labels.max()) + 1 if len(labels) else 0
    if n == 0:
        return _empty(spots, spot_snr)
    margin = config.box_margin_mm / spacing_mm
    h, w = pixels.shape
    boxes, scores, counts = [], [], []
    for k in range(n):
        members = labels == k
        pts = spots[members]
        x0, y0 = pts.min(axis=0) - margin
        x1, y1 = pts.max(axis=0) + margin
        boxes.append([max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)])
        evidence = float(np.sum(spot_snr[members] / config.min_snr))
        scores.append(1.0 - math.exp(-evidence / config.score_scale))
        counts.append(int(members.sum()))
    order = np.argsort(-np.asarray(scores), kind="stable")
    remap = np.full(n, -1, dtype=np.int64)
    remap[order] = np.arange(n)
    cluster_of = np.where(labels >= 0, remap[np.maximum(labels, 0)], -1)
    return SpotClusters(np.asarray(boxes, dtype=np.float64)[order], np.asarray(scores, dtype=np.float64)[order],
                        np.asarray(counts, dtype=np.int64)[order], spots, spot_snr, cluster_of)
