"""``mccad export RUN --out MODEL_DIR``: a training run becomes a registry model folder.

``mccad export MODEL_DIR --out NEW_DIR --version V ...``: a model folder re-issued under a new version with settings
chosen after training (operating point, box score, malignant offset, tiles per pass, test-time flip, tile geometry),
its weights unchanged (``training.reissue``): for a shipped model whose training run is gone."""
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
    p = sub.add_parser("export", help="turn a training run into a model folder (weights, manifest, model card), or "
                                      "re-issue a model folder with settings chosen after training")
    p.add_argument("run", type=Path, help="run folder written by 'mccad train', or a model folder (manifest.json) to "
                                          "re-issue: its weights unchanged, the settings given replaced, --version new")
    p.add_argument("--out", type=Path, required=True, help="model folder to write (e.g. models/weights/mine/detector)")
    p.add_argument("--name", default=None, help="model name (default mccad-<role>)")
    p.add_argument("--version", default=None, help="model version (default 0.1.0; required to re-issue a model)")
    p.add_argument("--training-data", default=None, help="one line describing the training data for the card "
                                                         "(re-issue: default the model's own)")
    p.add_argument("--synthetic-only", action="store_true", help="mark the model as trained on synthetic data only")
    p.add_argument("--metrics", type=Path, default=None, help="metrics.json of 'mccad evaluate' to attach")
    p.add_argument("--dtype", default=None, choices=["float16", "bfloat16", "float32"],
                   help="weights dtype (default float16; a re-issued model keeps its file)")
    p.add_argument("--checkpoint", default=None, choices=["best", "last"], help="run checkpoint (default best)")
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
    p.add_argument("--test-time-flip", choices=("on", "off"), default=None,
                   help="whether a tiled detector also reads each image mirrored, the two readings fused "
                        "(models.flip_fusion; twice the time), written into the manifest (default: as it was); choose "
                        "it and --score-thresh with 'mccad evaluate --test-time-flip' on validation images")
    p.add_argument("--tile", type=int, default=None, metavar="PX",
                   help="a tiled detector's tile side in px, written into "
                        "the manifest (default: as it was); scores move with it, so give --score-thresh chosen on "
                        "validation images read that way")
    p.add_argument("--tile-overlap", type=int, default=None, metavar="PX",
                   help="px shared by neighbouring tiles, written into the manifest (default: as it was)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings) -> int:
    from mccad.cli import UserError
    from models.errors import RegistryError
    from models.registry import MANIFEST
    from training.export import export_run
    from training.reissue import reissue_model
    from training.trainers.common import TrainingError

    flip = None if args.test_time_flip is None else args.test_time_flip == "on"
    after_training = dict(score_thresh=args.score_thresh, tile_batch=args.tile_batch, score_mode=args.score_mode,
                          malignant_offset=args.malignant_offset, test_time_flip=flip, tile=args.tile,
                          tile_overlap=args.tile_overlap)
    try:
        if (args.run / MANIFEST).is_file():
            if args.version is None:
                raise UserError(f"{args.run} is a model folder: give the re-issued model its own --version")
            for option, value in (("--dtype", args.dtype), ("--checkpoint", args.checkpoint)):
                if value is not None:
                    raise UserError(f"{option} is for training runs; a re-issued model keeps {args.run}'s weights file")
            out = reissue_model(args.run, args.out, version=args.version, name=args.name,
                                training_data=args.training_data, synthetic_only=args.synthetic_only,
                                metrics_json=args.metrics, **after_training)
        else:
            out = export_run(args.run, args.out, name=args.name, version=args.version or "0.1.0",
                             training_data=args.training_data or "", synthetic_only=args.synthetic_only,
                             metrics_json=args.metrics, dtype=args.dtype or "float16",
                             which=args.checkpoint or "best", **after_training)
    except (TrainingError, RegistryError, FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    print(out)
    return 0
