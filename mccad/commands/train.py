"""``mccad train detector|sppnet|patches --data CSV --out RUN``: offline training; ``mccad train descriptors --config
EXP --out RUN`` draws its simulated clusters itself (no ``--data``).

The experiment file (``--config exp.toml``, see ``training.trainers.config``) holds every setting; command-line options
override it. The run folder receives ``config.toml`` (the trainer's settings), ``experiment.toml``, ``metrics.jsonl``,
``last.pt`` (resume by running the same command again) and ``best.pt``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from training.datasets.readers import FORMATS

    p = sub.add_parser("train", help="train the detector, SPPNet or the patch heads on an annotated dataset, "
                   "or the descriptor head on simulated clusters")
    p.add_argument("kind", choices=["detector", "sppnet", "patches", "descriptors"])
    p.add_argument("--data", type=Path, help="annotation file or folder (default: the experiment's data.csv)")
    p.add_argument("--format", default=None, choices=FORMATS,
                   help="dataset format (default paper_csv); check a download first with "
                        "'mccad datasets check PATH --format F'")
    p.add_argument("--image-root", type=Path, default=None, help="where the images are, when not beside the "
                                                                 "annotations (e.g. a CBIS-DDSM download tree)")
    p.add_argument("--split", default=None, help="only the images of this archive split (training, test)")
    p.add_argument("--val-split", default=None, help="only the images of this archive split of --val-data (e.g. "
                                                     "test, with --val-data the same download as --data)")
    p.add_argument("--other-findings", default=None, choices=["exclude", "background"],
                   help="vindr_mammo: images with a finding other than calcification left out (default) or kept "
                        "as background")
    p.add_argument("--out", type=Path, required=True, help="run folder (created; an existing run there is resumed)")
    p.add_argument("--config", type=Path, help="experiment TOML file")
    p.add_argument("--val-data", type=Path, default=None,
                   help="separate validation annotation file (default: the experiment's data.val_csv, else a "
                        "patient-level hold-out of --data)")
    p.add_argument("--folds", type=int, default=None, help="k-fold cross-validation by patient (e.g. 5)")
    p.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    p.add_argument("--task", default=None, help="patches only: pathotype_incl, pathotype_excl or er")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if the run folder holds a checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs of batch jobs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings) -> int:
    from mccad.cli import UserError
    from models.errors import RegistryError
    from training.trainers.config import ConfigFileError, ExperimentConfig, load_experiment
    from training.datasets.samples import DatasetError
    from training.trainers.common import TrainingError
    from training.trainers.run import read_samples, run_experiment

    try:
        exp = load_experiment(args.config) if args.config else ExperimentConfig(kind=args.kind)
    except ConfigFileError as exc:
        raise UserError(str(exc)) from exc
    if exp.kind != args.kind:
        raise UserError(f"the experiment file {args.config} is for {exp.kind!r}, not {args.kind!r}")
    data = exp.data.model_copy(update={k: v for k, v in {
        "csv": args.data, "val_csv": args.val_data, "format": args.format, "folds": args.folds,
        "image_root": args.image_root, "split": args.split, "val_split": args.val_split,
        "other_findings": args.other_findings}.items()
        if v is not None})
    train = dict(exp.train)
    for key, value in (("epochs", args.epochs), ("task", args.task), ("device", args.device)):
        if value is not None:
            train[key] = value
    train.setdefault("epochs", 12)
    exp = exp.model_copy(update={"data": data, "train": train})
    try:
        samples = read_samples(exp, progress=not args.no_progress)
        runs = run_experiment(exp, samples, args.out, resume=not args.no_resume, progress=not args.no_progress)
    except (DatasetError, TrainingError, ValueError, TypeError, RegistryError) as exc:
        raise UserError(str(exc)) from exc
    summary = [{"out_dir": str(r.out_dir), "epochs": r.epochs_completed, "best_epoch": r.best_epoch,
                r.monitor: r.best_metric, "stopped_early": r.stopped_early} for r in runs]
    print(json.dumps(summary, indent=2))
    return 0
