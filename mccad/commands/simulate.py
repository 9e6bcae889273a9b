"""``mccad simulate``: write a simulated training set (BI-RADS calcification clusters inserted into real and phantom
mammograms) as PNG images plus the paper's CSV; prints the CSV path. See :mod:`training.simulate`."""
from __future__ import annotations

import argparse
from pathlib import Path

from mccad.argtypes import positive_int


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive whole number, got {text}")
    return value


def _spacings(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"pixel spacings must be numbers (mm), comma separated, got {text!r}") from exc
    if not values or any(not 0.025 <= v <= 0.5 for v in values):
        raise argparse.ArgumentTypeError(f"pixel spacings must lie in 0.025-0.5 mm, got {text!r}")
    return values


def _cluster_range(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in text.split("-")) if "-" in text else (int(text), int(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a count or a range such as 0-3, got {text!r}") from exc
    if lo < 0 or hi < lo:
        raise argparse.ArgumentTypeError(f"expected 0 <= low <= high, got {text!r}")
    return lo, hi


def _indices(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma separated image indices such as 0,1,2,3, "
                                         f"got {text!r}") from exc


def _pattern_weights(text: str) -> list[str]:
    """``amorphous:3,punctate:2,round`` -> each named morphology repeated by its whole-number weight (default 1),
    the list the simulator draws a cluster's pattern from uniformly: weights are shares, and a pattern not named is
    never drawn."""
    from training.simulate.morphology import PATTERNS

    drawn: list[str] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        name, _, weight = entry.partition(":")
        name = name.strip()
        if name not in PATTERNS:
            raise argparse.ArgumentTypeError(f"unknown pattern {name!r}; known: {', '.join(PATTERNS)}")
        try:
            count = int(weight) if weight else 1
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"weight of {name} must be a whole number, got {weight!r}") from exc
        if not 1 <= count <= 100:
            raise argparse.ArgumentTypeError(f"weight of {name} must lie in 1-100, got {count}")
        drawn.extend([name] * count)
    if not drawn:
        raise argparse.ArgumentTypeError("--patterns names no pattern")
    return drawn


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="write simulated calcification clusters in real/phantom mammograms "
                                        "(PNG + paper CSV) for training")
    p.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    p.add_argument("--images", type=positive_int, default=16, help="number of images to write (default 16)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files (default 0)")
    p.add_argument("--sources", default="real,phantom",
                   help="backgrounds, comma separated: real (the mammograms package), phantom (default both)")
    p.add_argument("--crop", type=positive_int, default=None,
                   help="write CROP x CROP windows around clusters at native resolution instead of whole images")
    p.add_argument("--spacing", type=_spacings, default=[0.1],
                   help="pixel spacing(s) in mm to render at, comma separated, drawn per image (default 0.1)")
    p.add_argument("--clusters", type=_cluster_range, default=(0, 3),
                   help="clusters per image, a count or a range such as 0-3 (default 0-3)")
    p.add_argument("--distractors", type=_cluster_range, default=(0, 0),
                   help="unannotated look-alikes per image (solitary calcification, vascular calcification, skin "
                        "marker), a count or a range such as 0-2 (default 0): they teach what a cluster is not")
    p.add_argument("--malignant-fraction", type=float, default=0.5,
                   help="share of clusters with suspicious morphology (default 0.5)")
    p.add_argument("--patterns", type=_pattern_weights, default=None,
                   help="draw only these BI-RADS morphologies, comma separated, each with an optional whole-number "
                        "weight: e.g. amorphous:3,fine_pleomorphic:2,punctate,round gives amorphous half the "
                        "clusters; replaces --malignant-fraction (default: all, half suspicious)")
    p.add_argument("--min-calcifications", type=positive_int, default=None,
                   help="fewest calcifications of an annotated cluster (default 3: a lone calcification is not a "
                        "cluster finding, like the unannotated solitary look-alike); 1 makes the sets of detectors "
                        "up to 0.4.0 again, where a coarse or rim cluster could be one calcification")
    p.add_argument("--min-visible", type=_count, default=None,
                   help="fewest calcifications of an annotated cluster that stand out of the breast's texture, as a "
                        "reader would see them (default 3); a fainter cluster is drawn again. 0: no such rule, which "
                        "makes the sets made before it again (with --min-calcifications 1: those up to 0.4.0)")
    p.add_argument("--bits", type=int, choices=(8, 16), default=16, help="PNG bit depth (default 16)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="processes making images in parallel; the files do not depend on it (default 1)")
    p.add_argument("--real-images", type=_indices, default=None,
                   help="which real backgrounds to use, comma separated indices 0-7 (patient 1: 0-3, patient 2: "
                        "4-7); default all. Train on one patient and test on the other to keep backgrounds unseen")
    p.add_argument("--backgrounds", type=Path, default=None,
                   help="a folder of DICOM mammograms (normal ones of your own, *.dcm) to use as the real "
                        "backgrounds instead of the mammograms package; --real-images then indexes its files "
                        "sorted by name; each is read at its stated pixel spacing, else 0.05 mm")
    p.add_argument("--acquisition", choices=("film", "digital", "mixed"),
                   default=None,
                   help="give every image the image formation of an acquisition source at its pitch: film "
                        "(digitised screen-film: grain calibrated on real film, scanner blur, dust, scratches, "
                        "stripes), digital (DR detector: quantum and electronic noise, detector blur, no grain), or "
                        "mixed (one of the two drawn per image); recorded per image in simulated.json. Default: "
                        "none, the images without an acquisition stage")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings) -> int:
    from mccad.cli import UserError
    from training.simulate import (
        MIN_CLUSTER_CALCIFICATIONS,
        MIN_VISIBLE_CALCIFICATIONS,
        SimulationError,
        make_simulated_dataset,
    )

    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    if not 0.0 <= args.malignant_fraction <= 1.0:
        raise UserError(f"--malignant-fraction must lie in [0, 1], got {args.malignant_fraction}")
    try:
        csv_path = make_simulated_dataset(args.out, args.images, args.seed, sources=sources, crop=args.crop,
                                          spacing_mm=args.spacing, clusters_per_image=args.clusters,
                                          malignant_fraction=args.malignant_fraction, patterns=args.patterns,
                                          bit_depth=args.bits,
                                          workers=args.workers, real_images=args.real_images,
                                          distractors_per_image=args.distractors, backgrounds=args.backgrounds,
                                          min_calcifications=args.min_calcifications or MIN_CLUSTER_CALCIFICATIONS,
                                          min_visible=(MIN_VISIBLE_CALCIFICATIONS if args.min_visible is None
                                                       else args.min_visible),
                                          acquisition=args.acquisition)
    except SimulationError as exc:
        raise UserError(str(exc)) from exc
    print(csv_path, flush=True)
    return 0
