"""``mccad inspect FILE...``: what the reader makes of each file, one JSON line per file.

For a hospital IT person checking what a modality or archive sends: the metadata the pipeline would use (UIDs,
laterality, view, spacing, the archive quirks worked around; never the patient's name), or the typed error and the
C-STORE status our SCP would answer with. Exit code 1 when any file failed.
"""
from __future__ import annotations

import argparse
import json

from dicom_io.errors import DicomInputError
from dicom_io.reader import read_mammogram, read_meta


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="print the MG metadata (or the input error) of DICOM files, one JSON line each")
    p.add_argument("files", nargs="+", metavar="FILE", help="DICOM files to inspect")
    p.add_argument("--decode", action="store_true", help="also decode the pixels and report their statistics")
    p.add_argument("--accept-non-mg", action="store_true", default=None, help="accept modalities other than MG")
    p.set_defaults(func=run)


def inspect_file(path: str, *, decode: bool, max_pixels: int, accept_non_mg: bool) -> dict:
    """One file's report: ``{"file", "ok": true, "meta": {...}}`` or ``{"file", "ok": false, "error", "status"}``."""
    try:
        if decode:
            image = read_mammogram(path, max_pixels=max_pixels, accept_non_mg=accept_non_mg)
            meta = image.meta
            pixels = {"min": float(image.pixels.min()), "max": float(image.pixels.max()),
                      "mean": round(float(image.pixels.mean()), 6)}
        else:
            meta = read_meta(path, max_pixels=max_pixels, accept_non_mg=accept_non_mg)
            pixels = None
    except DicomInputError as exc:
        return {"file": path, "ok": False, "error": type(exc).__name__, "status": f"0x{exc.status:04X}",
                "message": str(exc)}
    except OSError as exc:
        return {"file": path, "ok": False, "error": type(exc).__name__, "status": None,
                "message": exc.strerror or str(exc)}
    report = {"file": path, "ok": True, "meta": meta.model_dump(mode="json")}
    if pixels is not None:
        report["pixels"] = pixels
    return report


def run(args: argparse.Namespace, settings) -> int:
    accept_non_mg = settings.accept_non_mg if args.accept_non_mg is None else args.accept_non_mg
    failed = False
    for path in args.files:
        report = inspect_file(path, decode=args.decode, max_pixels=settings.max_pixels, accept_non_mg=accept_non_mg)
        failed |= not report["ok"]
        print(json.dumps(report, ensure_ascii=False), flush=True)
    return 1 if failed else 0
