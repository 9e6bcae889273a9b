"""``mccad preprocess PATH... --out DIR``: the paper's standardisation (section 2.4) applied to MG files.

Each input is read with :func:`dicom_io.reader.read_mammogram`, turned chest wall left, cropped to the breast and
optionally scaled (:func:`models.preprocess.standardise`). For each image it writes ``<name>.png`` (16-bit
grayscale, the model input) and ``<name>.json`` (the crop, flip and scale that map boxes and heatmaps back to the
original pixels, plus the image's UIDs, laterality and view), and prints both paths. Folders are searched for
``*.dcm`` files. Exit code 1 when any input failed; the others are still processed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preprocess", help="standardise MG images (chest wall left, background cut) to PNG + JSON")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="DICOM files, or folders searched for *.dcm")
    p.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="column mean at or below which a column is background (default 0.01)")
    p.add_argument("--crop-rows", action="store_true", help="also cut background rows above and below the breast")
    p.add_argument("--max-side", type=int, default=None,
                   help="downscale so that the longer side is at most this many pixels")
    p.set_defaults(func=run)


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files as given; folders replaced by their ``*.dcm`` files (recursively, sorted)."""
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(p for p in path.rglob("*.dcm") if p.is_file()) if path.is_dir() else [path])
    return files


def _output_stem(path: Path, used: set[str]) -> str:
    """A file-system-safe, unique name derived from the input path (never from DICOM attributes)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_",
                  f"{path.parent.name}_{path.stem}" if path.parent.name else path.stem).strip("._") or "image"
    stem, n = base, 2
    while stem in used:
        stem, n = f"{base}-{n}", n + 1
    used.add(stem)
    return stem


def write_png16(path: Path, pixels: np.ndarray) -> Path:
    """Save a [0, 1] float image as a 16-bit grayscale PNG, durably."""
    import io

    from PIL import Image

    from dicom_io.durable import write_durably

    data = np.round(np.clip(pixels, 0.0, 1.0) * 65535).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(data).save(buffer, format="PNG")
    return write_durably(path, buffer.getvalue())


def run(args: argparse.Namespace, settings) -> int:
    from dicom_io.durable import write_text_durably
    from dicom_io.errors import DicomInputError
    from dicom_io.reader import read_mammogram
    from mccad.cli import UserError
    from models.preprocess import StandardiseConfig, standardise

    try:
        config = StandardiseConfig(
            column_tolerance=0.01 if args.tolerance is None else args.tolerance,
            crop_rows=args.crop_rows,
            max_side=args.max_side,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    files = expand_inputs(args.paths)
    if not files:
        raise UserError("no DICOM files found in the given paths")
    args.out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    failed = False
    for path in files:
        try:
            image = read_mammogram(path, max_pixels=settings.max_pixels)
        except (DicomInputError, OSError) as exc:
            failed = True
            print(f"mccad preprocess: {path}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            continue
        result = standardise(image.pixels, image.meta.laterality, config, image.meta.pixel_spacing_mm)
        stem = _output_stem(path, used)
        png = write_png16(args.out / f"{stem}.png", result.pixels)
        record = {
            "source": str(path),
            "png": png.name,
            "sop_instance_uid": image.meta.sop_instance_uid,
            "laterality": image.meta.laterality,
            "view": image.meta.view,
            "config": dataclasses.asdict(config),
            "map": result.cmap.to_dict(),
        }
        js = write_text_durably(args.out / f"{stem}.json", json.dumps(record, indent=1))
        print(png, flush=True)
        print(js, flush=True)
    return 1 if failed else 0
