"""The paper's CSV box format as :class:`Sample` objects (the parsing itself lives in ``training.paper_csv``).

The CSV holds image names and boxes only. Patient, side and view come from, in order:

1. a ``lesions.json`` beside the CSV (what ``mccad synth`` writes; it also carries pathotype and ER per lesion,
   paper section 3.4), matched by image name and, within an image, by box order;
2. the DICOM header of the image (PatientID, ImageLaterality / Laterality, ViewPosition), read without pixels;
3. the image name: ``<patient>/<side><view>.<ext>`` or names containing ``_L_``/``_R_`` and ``CC``/``MLO``.

Patient-level splitting (the paper's section 2.1 "split by patient") depends on (1) or (2) being right: a name-only
dataset gets the folder (or the file stem) as its patient.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from training.datasets.samples import (
    DatasetError,
    Lesion,
    Sample,
    breast_from_text,
    normalise_er,
    normalise_pathotype,
    view_from_text,
)

SIDECAR = "lesions.json"
_VIEW_RE = re.compile(r"(?<![A-Z])(L|R)?[_-]?(CC|MLO|ML|LM|XCCL)(?![A-Z])")


def _from_name(name: str) -> tuple[str, str | None, str | None]:
    path = Path(name)
    patient = path.parts[0] if len(path.parts) > 1 else path.stem
    stem = path.stem.upper()
    side = view = None
    m = _VIEW_RE.search(stem)
    if m:
        side, view = m.group(1), m.group(2)
    if side is None:
        if re.search(r"(^|[_\-])L([_\-]|$)|LEFT", stem):
            side = "L"
        elif re.search(r"(^|[_\-])R([_\-]|$)|RIGHT", stem):
            side = "R"
    return patient, side, view


def _from_dicom(path: Path) -> tuple[str | None, str | None, str | None]:
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return None, None, None
    side = breast_from_text(getattr(ds, "ImageLaterality", "") or getattr(ds, "Laterality", ""))
    return (str(getattr(ds, "PatientID", "")) or None, side, view_from_text(getattr(ds, "ViewPosition", "")))


def _sidecar(csv_path: Path) -> dict[str, dict]:
    path = csv_path.parent / SIDECAR
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {rec["image"]: rec for rec in data.get("images", [])}


def read_paper_dataset(csv_path: Path, image_root: Path | None = None) -> list[Sample]:
    """Every row of a paper-format CSV as a Sample; image names resolve against ``image_root`` (default: the CSV's
    folder). Raises DatasetError on a box the CSV gets wrong (empty width or height)."""
    from training.paper_csv import read_paper_csv

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"annotation file {csv_path} does not exist")
    root = Path(image_root) if image_root is not None else csv_path.parent
    sidecar = _sidecar(csv_path)
    samples: list[Sample] = []
    for name, boxes in read_paper_csv(csv_path).items():
        where = f"{csv_path.name} image {name!r}"
        source = root / name
        record = sidecar.get(name)
        extra = (record or {}).get("lesions", [])
        if record is not None:
            patient, side, view = str(record["patient_id"]), breast_from_text(record.get("laterality")), \
                view_from_text(record.get("view"))
        else:
            patient, side, view = _from_name(name)
            if source.suffix.lower() in (".dcm", ".dicom") and source.is_file():
                d_patient, d_side, d_view = _from_dicom(source)
                patient, side, view = d_patient or patient, d_side or side, d_view or view
        lesions = []
        for k, box in enumerate(boxes):
            info = extra[k] if k < len(extra) else {}
            er = info.get("er_positive", info.get("er"))
            er = None if er is None else ("positive" if er is True else "negative" if er is False else er)
            try:
                lesions.append(Lesion(box.corners(), box.label,
                                      pathotype=normalise_pathotype(info.get("pathotype"), where),
                                      er=normalise_er(er, where)))
            except DatasetError as exc:
                raise DatasetError(f"{where} box {k + 1}: {exc}") from exc
        samples.append(Sample(image_id=name, source=source, patient_id=patient, breast=side, view=view,
                              lesions=tuple(lesions)))
    return samples
