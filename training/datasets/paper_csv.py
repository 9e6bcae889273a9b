"""The paper's CSV box format (Lin et al. 2025, released code ``FPNNet/read_csv.py``), read as rows of boxes
(:func:`read_paper_csv`) or as :class:`Sample` objects (:func:`read_paper_dataset`).

The paper does not describe the file; the released reader does. Our reading of it:

* the first row is a header and is skipped (the released reader drops ``rows[0]`` whatever it holds);
* every other row is one image: cell 0 is the image name (the file name the dataset opens), each following cell is
  one box written as a dictionary literal ``{"x": .., "y": .., "width": .., "height": .., "label": ..}``; empty
  cells are ignored, so an image without lesions is a row with its name only;
* ``x, y`` is the top-left corner in pixels, the box spans ``[x, x + width] x [y, y + height]``
  (the released code computes ``xmax = x + width``, ``ymax = y + height``);
* ``label`` is the string ``"0"`` for benign and ``"1"`` for malignant (``class_ids = {"0": 1, "1": 2}`` there, and
  the paper's Fig. 3 reads "'0' means benign", "'1' means malignant").

The released code parses the cells with ``eval``; we parse them with ``ast.literal_eval`` (dictionary literals only,
no code runs) and write them as JSON objects, which both parsers read. Numbers are written at full float precision
so that a write-read round trip is exact. Image names are paths relative to the CSV's folder.
"""
from __future__ import annotations

import ast
import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dicom_io.durable import write_text_durably
from dicom_io.errors import MccadError
from training.datasets.samples import (
    DatasetError,
    Lesion,
    Sample,
    breast_from_text,
    normalise_er,
    normalise_pathotype,
    view_from_text,
)

Label = Literal["benign", "malignant"]
LABEL_TO_CODE: dict[str, str] = {"benign": "0", "malignant": "1"}
CODE_TO_LABEL: dict[str, Label] = {"0": "benign", "1": "malignant"}
HEADER = ("image_name", "boxes")


class PaperCSVError(MccadError):
    """A row or cell of an annotation CSV that does not follow the paper's box format."""


@dataclass(frozen=True)
class PaperBox:
    """One annotated box: top-left corner, size in pixels, and the pathology label."""

    x: float
    y: float
    width: float
    height: float
    label: Label

    @classmethod
    def from_corners(cls, box: Sequence[float], label: Label) -> "PaperBox":
        x0, y0, x1, y1 = (float(v) for v in box)
        return cls(x0, y0, x1 - x0, y1 - y0, label)

    def corners(self) -> tuple[float, float, float, float]:
        """x0, y0, x1, y1 as the released reader computes them."""
        return (self.x, self.y, self.x + self.width, self.y + self.height)

    def to_cell(self) -> str:
        return json.dumps(
            {"x": _number(self.x), "y": _number(self.y), "width": _number(self.width), "height": _number(self.height),
             "label": LABEL_TO_CODE[self.label]}
        )


def _number(value: float) -> int | float:
    """Whole numbers as integers (as the paper's annotators wrote them), others at full precision."""
    value = float(value)
    return int(value) if value.is_integer() else value


def parse_box_cell(cell: str, where: str = "") -> PaperBox:
    try:
        parsed = ast.literal_eval(cell.strip())
    except (ValueError, SyntaxError) as exc:
        raise PaperCSVError(f"{where}: box cell {cell[:60]!r} is not a dictionary literal") from exc
    if not isinstance(parsed, Mapping):
        raise PaperCSVError(f"{where}: box cell {cell[:60]!r} is not a dictionary")
    missing = [k for k in ("x", "y", "width", "height", "label") if k not in parsed]
    if missing:
        raise PaperCSVError(f"{where}: box cell lacks {', '.join(missing)}")
    code = str(parsed["label"]).strip()
    if code not in CODE_TO_LABEL:
        raise PaperCSVError(f"{where}: label {parsed['label']!r} is neither '0' (benign) nor '1' (malignant)")
    try:
        x, y, w, h = (float(parsed[k]) for k in ("x", "y", "width", "height"))
    except (TypeError, ValueError) as exc:
        raise PaperCSVError(f"{where}: box coordinates must be numbers") from exc
    if w < 0 or h < 0:
        raise PaperCSVError(f"{where}: box width and height must not be negative")
    return PaperBox(x, y, w, h, CODE_TO_LABEL[code])


def parse_paper_csv(text: str, source: str = "annotations") -> dict[str, list[PaperBox]]:
    """Image name -> boxes, in file order. Duplicate image rows are an error (the released code kept the last)."""
    rows = list(csv.reader(io.StringIO(text)))
    annotations: dict[str, list[PaperBox]] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not row or not row[0].strip():
            continue
        name = row[0].strip()
        if name in annotations:
            raise PaperCSVError(f"{source} line {number}: image {name!r} appears twice")
        annotations[name] = [
            parse_box_cell(cell, f"{source} line {number}") for cell in row[1:] if cell.strip()
        ]
    return annotations


def read_paper_csv(path: Path) -> dict[str, list[PaperBox]]:
    path = Path(path)
    return parse_paper_csv(path.read_text(encoding="utf-8"), source=str(path.name))


def format_paper_csv(annotations: Mapping[str, Sequence[PaperBox]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    for name, boxes in annotations.items():
        writer.writerow([name, *(box.to_cell() for box in boxes)])
    return buffer.getvalue()


def write_paper_csv(path: Path, annotations: Mapping[str, Sequence[PaperBox]]) -> Path:
    """Write the annotations durably (every image gets a row, with or without boxes); returns ``path``."""
    return write_text_durably(Path(path), format_paper_csv(annotations))


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
