"""``mccad analyze PATH... --out DIR``: analyse DICOM files or folders offline, one output folder per exam."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path

from mccad.cli import UserError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="analyse mammograms (files or folders) and write results, overlays and DICOM SR")
    p.add_argument("paths", nargs="+", type=Path, help="DICOM files or folders (searched recursively)")
    p.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per exam)")
    p.add_argument("--model", type=Path, default=None, help="model bundle folder (default: MCCAD_MODEL_DIR)")
    p.add_argument("--no-dicom", action="store_true", help="skip the DICOM SR/SEG/GSPS objects")
    p.add_argument("--no-explain", action="store_true", help="skip the CAM heatmaps (faster)")
    p.set_defaults(func=run)


def find_dicom_files(paths: list[Path]) -> list[Path]:
    """Files named on the command line are taken as they are; folders contribute every file that starts with a
    DICOM preamble (``DICM`` at byte 128), whatever its name."""
    from dicom_io.reader import is_dicom_file

    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*")) if p.is_file() and is_dicom_file(p))
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"{path} does not exist")
    return found


def group_by_exam(files: list[Path]) -> tuple[dict[str, list[Path]], dict[Path, str]]:
    """Group files by the reader's exam key (header only); return the groups and the files refused, with why."""
    from dicom_io.errors import DicomInputError
    from dicom_io.reader import read_meta

    groups: dict[str, list[Path]] = defaultdict(list)
    refused: dict[Path, str] = {}
    for path in files:
        try:
            meta = read_meta(path)
        except DicomInputError as exc:
            refused[path] = f"{type(exc).__name__}: {exc}"
            continue
        groups[meta.exam_key].append(path)
    return dict(groups), refused


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in key)[:80] or "exam"


def run(args: argparse.Namespace, settings) -> int:
    from tqdm import tqdm

    from dicom_io.errors import DicomInputError
    from dicom_io.reader import read_mammogram
    from models.pipeline import BundleError, Pipeline
    from worker.outputs import write_study_outputs

    files = find_dicom_files(args.paths)
    if not files:
        raise UserError("no DICOM files found in " + ", ".join(map(str, args.paths)))
    groups, refused = group_by_exam(files)
    for path, why in refused.items():
        print(f"skipped {path}: {why}", file=sys.stderr)
    try:
        pipeline = Pipeline.from_model_dir(args.model or settings.model_dir, device=settings.device,
                                           explain=not args.no_explain, runtime=settings.detector_runtime)
    except (BundleError, OSError) as exc:
        raise UserError(str(exc)) from exc
    except Exception as exc:  # registry errors (tampered or mismatched weights) carry their own message
        if type(exc).__module__.startswith("models."):
            raise UserError(f"cannot load the model: {exc}") from exc
        raise
    summary = []
    failed = bool(refused)
    bar = tqdm(sorted(groups.items()), desc="studies", unit="study", disable=len(groups) < 2, file=sys.stderr)
    for key, paths in bar:
        images = []
        for path in sorted(paths):
            try:
                images.append(read_mammogram(path, max_pixels=settings.max_pixels))
            except DicomInputError as exc:
                print(f"skipped {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
                failed = True
        if not images:
            continue
        analysis = pipeline.analyze(images)
        outputs = write_study_outputs(analysis, images, args.out / _safe(key), dicom=not args.no_dicom)
        summary.append({
            "exam": key,
            "label": analysis.result.exam.label,
            "malignancy_probability": round(analysis.result.exam.malignancy_probability, 4),
            "images": len(images),
            "lesions": sum(len(i.lesions) for i in analysis.result.images),
            "result": str(outputs.result_json),
            "html": str(outputs.html) if outputs.html else None,
            "overlays": [str(p) for p in outputs.overlays],
            "heatmaps": [str(p) for p in outputs.heatmaps],
            "dicom": [str(p) for p in outputs.dicom_objects],
            "warnings": analysis.result.warnings,
        })
    print(json.dumps(summary, indent=2))
    return 1 if failed else 0
