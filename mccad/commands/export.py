"""``mccad export RUN --out MODEL_DIR``: a training run becomes a registry model folder (issue 6, item 4)."""
from __future__ import annotations

import argparse
from pathlib import Path


def _threshold(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1) or 'auto', got {text!r}") from exc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="turn a training run into a model folder (weights, manifest, model card)")
    p.add_argument("run", type=Path, help="run folder written by 'mccad train'")
    p.add_argument("--out", type=Path, required=True, help="model folder to write (e.g. models/weights/mine/detector)")
    p.add_argument("--name", default=None, help="model name (default mccad-<role>)")
    p.add_argument("--version", default="0.1.0")
    p.add_argument("--training-data", default="", help="one line describing the training data for the card")
    p.add_argument("--synthetic-only", action="store_true", help="mark the model as trained on synthetic data only")
    p.add_argument("--metrics", type=Path, default=None, help="metrics.json of 'mccad evaluate' to attach")
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--score-thresh", type=_threshold, default=None,
                   help="detector operating point written into the manifest (default: the run's score_thresh); "
                        "choose it on validation images, e.g. from 'mccad evaluate' threshold_at_fp_per_image, "
                        "or 'auto': the threshold of 1 false positive per image that the checkpoint's whole "
                        "validation images gave (val_threshold_at_1fp)")
    p.add_argument("--tile-batch", type=int, default=None,
                   help="tiles per forward pass written into the manifest (default: the training run's); e.g. 2 "
                        "for CPU workers when the run trained on a GPU with 16: the same boxes, less memory")
    p.add_argument("--score-mode", choices=("class", "lesion"), default=None,
                   help="detector box score written into the manifest (default: the run's): class (a box per class, "
                        "its probability; the paper's) or lesion (a box per proposal, 1 - P(background)); choose it "
                        "and --score-thresh in that mode with 'mccad evaluate --score-mode' on validation images")
    p.add_argument("--malignant-offset", type=float, default=None, metavar="X",
                   help="constant added to each proposal's malignant logit, written into the manifest (default: the "
                        "run's, 0): the benign/malignant split calibrated on validation images with 'mccad evaluate "
                        "--malignant-offset'; give --score-thresh chosen with the same offset")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings) -> int:
    from mccad.cli import UserError
    from training.export import export_run
    from training.trainers.common import TrainingError

    try:
        out = export_run(args.run, args.out, name=args.name, version=args.version, training_data=args.training_data,
                         synthetic_only=args.synthetic_only, metrics_json=args.metrics, dtype=args.dtype,
                         which=args.checkpoint, score_thresh=args.score_thresh,
                         tile_batch=args.tile_batch, score_mode=args.score_mode,
                         malignant_offset=args.malignant_offset)
    except (TrainingError, FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    print(out)
    return 0
