"""The paper's CSV box format (Lin et al. 2025, released code ``FPNNet/read_csv.py``).

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dicom_io.errors import MccadError

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
    from dicom_io.durable import write_text_durably

    return write_text_durably(Path(path), format_paper_csv(annotations))
