"""``mccad synth``: write deterministic synthetic 4-view MG studies with ground-truth calcification boxes.

The annotated fixture for tests and demos (see :mod:`training.simulate.synth`); prints the path of the annotation CSV.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from mccad.argtypes import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth",
                       help="write synthetic 4-view MG studies (DICOM) with annotations in the paper's CSV format")
    p.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    p.add_argument("--patients", type=positive_int, default=2, help="number of synthetic patients (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files (default 0)")
    p.add_argument("--rows", type=positive_int, default=1024, help="image rows (default 1024)")
    p.add_argument("--cols", type=positive_int, default=640, help="image columns (default 640)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings) -> int:
    from mccad.cli import UserError
    from training.simulate.synth import write_synthetic_dataset

    if args.rows < 64 or args.cols < 64:
        raise UserError(f"--rows and --cols must be at least 64 (got {args.rows} x {args.cols})")
    csv_path = write_synthetic_dataset(args.out, args.patients, seed=args.seed, rows=args.rows, cols=args.cols)
    print(csv_path, flush=True)
    return 0
