"""``mccad export RUN --out MODEL_DIR``: a training run becomes a registry model folder.

``mccad export MODEL_DIR --out NEW_DIR --version V --set thresholds.score_thresh=0.35 ...``: a model folder
re-issued under a new version with settings chosen after training (``training.overrides``: operating point, box
score, malignant offset, tiles, test-time flip), its weights unchanged (``training.reissue``): for a shipped model
whose training run is gone."""
from __future__ import annotations

import argparse
from pathlib import Path


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
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a detector setting chosen after training, written into the manifest (repeat for several): "
                        "thresholds.score_thresh (the operating point, e.g. threshold_at_fp_per_image of 'mccad "
                        "evaluate'; for a training run also 'auto': the threshold of 1 false positive per image its "
                        "whole validation images gave), thresholds.nms_thresh, thresholds.detections_per_img, "
                        "thresholds.cross_class_iou; detector.score_mode (class or lesion), "
                        "detector.malignant_logit_offset, detector.cross_class_suppression; tiling.tile, "
                        "tiling.overlap, tiling.batch, tiling.join, tiling.hflip (the test-time flip); "
                        "breast_gate.margin_mm. A setting that moves the scores needs the operating point chosen "
                        "with it on validation images (training.overrides)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings) -> int:
    from mccad.cli import UserError
    from models.errors import RegistryError
    from models.registry import MANIFEST
    from training.export import export_run
    from training.overrides import parse_sets
    from training.reissue import reissue_model
    from training.trainers.common import TrainingError

    try:
        overrides = parse_sets(args.settings)
        if (args.run / MANIFEST).is_file():
            if args.version is None:
                raise UserError(f"{args.run} is a model folder: give the re-issued model its own --version")
            for option, value in (("--dtype", args.dtype), ("--checkpoint", args.checkpoint)):
                if value is not None:
                    raise UserError(f"{option} is for training runs; a re-issued model keeps {args.run}'s weights file")
            out = reissue_model(args.run, args.out, overrides, version=args.version, name=args.name,
                                training_data=args.training_data, synthetic_only=args.synthetic_only,
                                metrics_json=args.metrics)
        else:
            out = export_run(args.run, args.out, overrides, name=args.name, version=args.version or "0.1.0",
                             training_data=args.training_data or "", synthetic_only=args.synthetic_only,
                             metrics_json=args.metrics, dtype=args.dtype or "float16",
                             which=args.checkpoint or "best")
    except (TrainingError, RegistryError, FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    print(out)
    return 0
