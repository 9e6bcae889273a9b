"""``mccad datasets check PATH --format F``: what a dataset holds and what cannot be read, before training on it.

Prints images (by label and archive split), patients, lesions per class (label, finding category, calc type,
distribution, BI-RADS assessment), records the reader could not resolve (an image or ROI mask missing from the
download) and images that cannot be opened. Exit status 0 when everything was found and opened, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from training.datasets.readers import FORMATS, OTHER_FINDINGS

    p = sub.add_parser("datasets", help="inspect annotated datasets (public archives as downloaded, our formats)")
    actions = p.add_subparsers(dest="datasets_action", metavar="ACTION", required=True)
    c = actions.add_parser("check", help="count images, patients and lesions per class; list missing and unreadable "
                                         "files")
    c.add_argument("path", type=Path, help="the dataset: its folder as downloaded (cbis_ddsm, inbreast, "
                                           "vindr_mammo, cmmd, sr_folder) or its annotation file (paper_csv, coco, "
                                           "mias, a CBIS-DDSM table)")
    c.add_argument("--format", required=True, choices=FORMATS, help="the dataset's format")
    c.add_argument("--image-root", type=Path, default=None, help="where the images are, when not beside the "
                                                                 "annotations")
    c.add_argument("--split", default=None, help="only the images of this archive split (e.g. training, test)")
    c.add_argument("--other-findings", default="exclude", choices=OTHER_FINDINGS,
                   help="vindr_mammo: images with a finding other than calcification left out (exclude, default) or "
                        "kept as background")
    c.add_argument("--decode", action="store_true", help="decode every image's pixels as training does (slower; "
                                                         "default: headers only)")
    c.add_argument("--json", type=Path, default=None, help="also write the full report as JSON to this file")
    c.add_argument("--examples", type=int, default=10, help="problem messages printed per kind (default 10)")
    c.add_argument("--no-progress", action="store_true", help="no progress bars")
    c.set_defaults(func=run_check)


def run_check(args: argparse.Namespace, settings) -> int:
    from mccad.cli import UserError
    from training.datasets.check import check_dataset
    from training.datasets.dicom_index import DicomIndexError
    from training.datasets.samples import DatasetError

    try:
        report = check_dataset(args.path, args.format, image_root=args.image_root, split=args.split,
                               other_findings=args.other_findings, decode=args.decode,
                               progress=not args.no_progress)
    except (DatasetError, DicomIndexError, OSError) as exc:
        raise UserError(str(exc)) from exc
    print(report.text(args.examples))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.as_dict(), indent=1))
    return 0 if report.ok else 1
