"""Pixels of a sample and their model-input form, prepared exactly as the pipeline prepares them.

Training must see what inference sees: the same decoder (``dicom_io.reader``) and the same section 2.4
standardisation (``models.preprocess.standardise``) with the same ``StandardiseConfig`` that export writes into the
model manifest. Prepared images are kept in memory for the length of a run (datasets here are small; on large
archives the cache is what keeps an epoch from re-decoding every DICOM).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from tqdm import tqdm

from dicom_io.mg_metadata import pixel_spacing_mm
from dicom_io.reader import read_mammogram
from models.preprocess import CoordinateMap, StandardiseConfig, standardise
from training.datasets.samples import DatasetError, Sample

#: Boxes narrower than this many input pixels after standardisation carry no trainable signal and break the
#: detector's box encoder (zero width); they are dropped from the training targets, never from evaluation.
MIN_INPUT_BOX_SIDE = 1.0
#: a raster file's physical resolution counts as its pixel spacing only within this range (mm): mammography detectors
#: and film digitisers lie well inside it, while the 72 / 96 dpi (0.35 / 0.26 mm) many tools write by default lie out
PLAUSIBLE_SPACING_MM = (0.025, 0.25)


@dataclass
class PreparedImage:
    """A sample in model-input coordinates: standardised pixels, its boxes mapped through the coordinate map."""

    sample: Sample
    pixels: np.ndarray  # float32 (H, W), chest wall left
    boxes: np.ndarray  # (N, 4) float32, input pixels
    label_ids: np.ndarray  # (N,) int64, 1 benign, 2 malignant (models.detector class ids)
    lesion_index: np.ndarray  # (N,) int64, index into sample.lesions of each kept box
    cmap: CoordinateMap


def load_pixels(sample: Sample) -> np.ndarray:
    """Decode the sample's image as float32 in [0, 1], bright = dense.

    DICOM goes through ``dicom_io.reader.read_mammogram`` (every VOI/photometric rule of the product); raster files
    (PNG, TIFF, PGM as MIAS ships): 8-bit by 255, 16-bit containers by the smallest of the 10-, 12- and 16-bit full
    scales that holds their maximum (converted archives often store 12-bit data in 16-bit PNGs).
    """
    path = Path(sample.source)
    if not path.is_file():
        raise DatasetError(f"image {path} of sample {sample.image_id!r} does not exist")
    if sample.is_dicom:
        return np.asarray(read_mammogram(path).pixels, dtype=np.float32)
    with Image.open(path) as im:
        mode = im.mode
        if mode in ("RGB", "RGBA", "P", "LA"):
            im = im.convert("L")
            mode = "L"
        arr = np.asarray(im)
    if arr.ndim != 2:
        raise DatasetError(f"image {path} is not a single-channel mammogram (shape {arr.shape})")
    if arr.dtype == np.uint8:
        return (arr.astype(np.float32) / 255.0)
    if arr.dtype in (np.uint16, np.int32, np.int16) or mode.startswith("I"):
        arr = arr.astype(np.float32)
        top = 65535.0 if arr.max() > 4095 else (4095.0 if arr.max() > 1023 else max(float(arr.max()), 1.0))
        return np.clip(arr / top, 0.0, 1.0).astype(np.float32)
    arr = arr.astype(np.float32)
    return np.clip(arr / max(float(arr.max()), 1e-6), 0.0, 1.0)


def pixel_spacing(sample: Sample) -> tuple[float, float] | None:
    """The sample's pixel spacing (row, column) in mm when its file states one: DICOM Pixel Spacing (or Imager Pixel
    Spacing), a raster file's physical resolution (``mccad simulate`` writes it as the PNG's dpi); else None."""
    path = Path(sample.source)
    if sample.is_dicom:

        return pixel_spacing_mm(pydicom.dcmread(path, stop_before_pixels=True), [])
    with Image.open(path) as im:
        dpi = im.info.get("dpi")
    if not dpi or not all(float(d) > 0 for d in dpi[:2]):
        return None
    spacing = (round(25.4 / float(dpi[1]), 6), round(25.4 / float(dpi[0]), 6))
    if not all(PLAUSIBLE_SPACING_MM[0] <= v <= PLAUSIBLE_SPACING_MM[1] for v in spacing):
        return None  # 72 or 96 dpi: an image tool's default, not a detector's pixel pitch
    return spacing


def prepare(sample: Sample, config: StandardiseConfig) -> PreparedImage:
    """Standardise one sample and map its boxes into input pixels (clipped to the image, degenerate ones dropped)."""
    pixels = load_pixels(sample)
    spacing = pixel_spacing(sample) if config.spacing_mm is not None else None
    std = standardise(pixels, sample.breast, config, spacing)
    h, w = std.pixels.shape
    boxes = sample.boxes
    keep: list[int] = []
    mapped = np.zeros((0, 4), dtype=np.float32)
    if len(boxes):
        mapped = std.cmap.boxes_to_input(boxes)
        mapped[:, [0, 2]] = mapped[:, [0, 2]].clip(0, w)
        mapped[:, [1, 3]] = mapped[:, [1, 3]].clip(0, h)
        widths = mapped[:, 2] - mapped[:, 0]
        heights = mapped[:, 3] - mapped[:, 1]
        keep = [i for i in range(len(mapped)) if widths[i] >= MIN_INPUT_BOX_SIDE and heights[i] >= MIN_INPUT_BOX_SIDE]
        mapped = mapped[keep].astype(np.float32)
    label_ids = np.asarray([1 + int(sample.lesions[i].label == "malignant") for i in keep], dtype=np.int64)
    return PreparedImage(sample=sample, pixels=std.pixels.astype(np.float32), boxes=mapped.reshape(-1, 4),
                         label_ids=label_ids, lesion_index=np.asarray(keep, dtype=np.int64), cmap=std.cmap)


def prepare_all(samples: Sequence[Sample], config: StandardiseConfig, progress: bool = False,
                workers: int = 0) -> list[PreparedImage]:
    """Prepare every sample once (the in-memory cache of a run), in order.

    ``workers`` > 0 decodes in that many processes: decoding full-field DICOMs (JPEG 2000, 20-50 Mpixel) is the slow
    part of preparing a real archive, and it parallelises perfectly.
    """
    if workers > 0 and len(samples) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results: Iterable[PreparedImage] = pool.map(partial(prepare, config=config), samples, chunksize=4)
            if progress:
                results = tqdm(results, total=len(samples), desc="prepare", unit="img", leave=False)
            return list(results)
    items: Iterable[Sample] = samples
    if progress:
        items = tqdm(samples, desc="prepare", unit="img", leave=False)
    return [prepare(s, config) for s in items]
