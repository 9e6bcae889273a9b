"""``mccad adapt --normals DIR --out BUNDLE [--model BASE]``: adapt a detector to a site from its own normal studies
(``training.adapt``). Prints the figures of each candidate and where the bundle went."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from mccad.argtypes import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    from training.adapt import NORMAL_FORMATS, AdaptSettings

    d = AdaptSettings()
    p = sub.add_parser("adapt", help="adapt the detector to a site from a folder of its normal studies")
    p.add_argument("--normals", type=Path, required=True,
                   help="folder of the site's normal mammograms (DICOM, any layout, any pitch; split by PatientID)")
    p.add_argument("--format", default="normals", choices=NORMAL_FORMATS,
                   help="how --normals is laid out: normals (default: a folder of DICOM normals, any layout) or "
                        "vindr_mammo (VinDr-Mammo as its publisher ships it: its images without any finding)")
    p.add_argument("--out", type=Path, required=True,
                   help="new model bundle folder (OUT/detector is written; the base bundle's other parts are "
                        "copied beside it)")
    p.add_argument("--model", type=Path, default=None,
                   help="base detector folder (default: the detector of the configured bundle, MCCAD_MODEL_DIR, "
                        "the shipped one unless set)")
    p.add_argument("--work", type=Path, default=None,
                   help="work folder (split, simulated images, the fine-tuning run, predictions); an interrupted "
                        "adaptation resumes from it (default: OUT.work)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"split and simulation seed (default {d.seed})")
    p.add_argument("--train-crops", type=positive_int, default=d.train_crops,
                   help=f"simulated training crops (default {d.train_crops})")
    p.add_argument("--epochs", type=positive_int, default=d.epochs, help=f"fine-tuning epochs (default {d.epochs})")
    p.add_argument("--samples-per-epoch", type=positive_int, default=d.samples_per_epoch,
                   help=f"crops per epoch (default {d.samples_per_epoch})")
    p.add_argument("--target-fp", type=float, default=d.target_fp_per_image,
                   help="false positives per image on the calibration normals the operating point allows "
                        f"(default {d.target_fp_per_image:g})")
    p.add_argument("--no-fine-tune", dest="fine_tune", action="store_false",
                   help="keep the base weights and choose only the site's operating point")
    p.add_argument("--version", default=None, help="version of the new detector (default: BASE_VERSION+site)")
    p.add_argument("--workers", type=positive_int, default=d.workers, help="processes simulating images")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs of batch jobs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings) -> int:
    from mccad.cli import UserError
    from models.errors import RegistryError
    from training.adapt import AdaptationError, AdaptSettings, adapt
    from training.datasets.samples import DatasetError
    from training.trainers.common import TrainingError

    work = args.work or args.out.with_name(args.out.name + ".work")
    try:
        chosen = AdaptSettings(seed=args.seed, train_crops=args.train_crops, epochs=args.epochs,
                               samples_per_epoch=args.samples_per_epoch, target_fp_per_image=args.target_fp,
                               fine_tune=args.fine_tune, workers=args.workers)
        report = adapt(args.normals, args.out, args.model or settings.model_dir / "detector", work, chosen,
                       command="mccad " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                       runtime=settings.detector_runtime, progress=not args.no_progress, fmt=args.format,
                       version=args.version,
                       on_step=lambda text: print(f"mccad adapt: {text}", file=sys.stderr, flush=True))
    except (AdaptationError, DatasetError, TrainingError, RegistryError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    summary = {"bundle": str(args.out), "kept": report["kept"], "pitch_mm": report["pitch_mm"],
               "split": report["split"],
               "candidates": {name: {"score_thresh": c["score_thresh"], "calibrate": c["calibrate"],
                                     "test": c["test"]} for name, c in report["candidates"].items()}}
    print(json.dumps(summary, indent=2))
    return 0
