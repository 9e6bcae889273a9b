"""VinDr-Mammo (Nguyen et al., Scientific Data 2023; PhysioNet ``vindr-mammo`` 1.0.0) as PhysioNet ships it.

Checked with the ``search`` tool against the PhysioNet project page and the data descriptor (Scientific Data,
medRxiv preprint) for what the set holds, and for the exact file layout, column names and value spellings against a
public description that quotes the authors' and against third-party loaders (which parse ``finding_categories``
with ``ast.literal_eval`` and filter ``split == "training"``); no real file of the set was at hand:

* ``images/<study_id>/<image_id>.dicom``: 5,000 four-view exams, one folder per exam.
* ``breast-level_annotations.csv``: one row per image: ``study_id``, ``series_id``, ``image_id``, ``laterality``
  (L/R), ``view_position`` (CC/MLO), ``height``, ``width``, ``breast_birads`` ("BI-RADS 1"...), ``breast_density``
  ("DENSITY A"...), ``split`` ("training" / "test").
* ``finding_annotations.csv``: one row per finding with the same image columns plus ``finding_categories`` (a
  Python list literal such as ``['Suspicious Calcification']`` or ``['Mass', 'Suspicious Calcification']``;
  ``['No Finding']`` on images without one), ``finding_birads`` ("BI-RADS 3"-"BI-RADS 5", empty for no finding) and
  the box ``xmin``, ``ymin``, ``xmax``, ``ymax`` in pixels of the DICOM image (empty for no finding).

A finding whose categories include "Suspicious Calcification" becomes a :class:`Lesion`, labelled from its
BI-RADS (malignant from 4 up, the usual proxy: VinDr-Mammo has no pathology) with that BI-RADS as its
``assessment``. Other findings never become lesions; with ``other_findings="exclude"`` (default) the images holding
one are left out, with ``"background"`` they are kept and those findings count as background, as the "No Finding"
images always do. VinDr-Mammo has no patient identifier: the exam (``study_id``) stands for the woman (one exam per
woman in the set). Breast BI-RADS and density go into the sample's ``attributes``; the image label follows its
calcification lesions.
"""
from __future__ import annotations

import ast
import csv
import re
from collections import OrderedDict
from pathlib import Path

from training.datasets.samples import DatasetError, Lesion, Sample, breast_from_text, view_from_text

FINDINGS, BREAST_LEVEL, IMAGES = "finding_annotations.csv", "breast-level_annotations.csv", "images"
CALCIFICATION = "suspicious calcification"
NO_FINDING = "no finding"
IMAGE_COLUMNS = ("study_id", "image_id", "laterality", "view_position", "split")
FINDING_COLUMNS = (*IMAGE_COLUMNS, "finding_categories", "finding_birads", "xmin", "ymin", "xmax", "ymax")


def birads_category(value: str | None) -> str | None:
    """'BI-RADS 4' -> '4', 'BI-RADS 4A' -> '4a'; None for an empty cell."""
    text = (value or "").strip()
    if not text or text.lower() in ("nan", "none"):
        return None
    m = re.search(r"(\d)\s*([abcABC])?\s*$", text)
    if not m:
        raise DatasetError(f"BI-RADS {value!r} is not 'BI-RADS <category>'")
    return m.group(1) + (m.group(2) or "").lower()


def categories(value: str | None, where: str) -> list[str]:
    """The ``finding_categories`` cell as a list of names."""
    text = (value or "").strip()
    if not text:
        return []
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise DatasetError(f"{where}: finding_categories {value!r} is not a list") from exc
    return [str(c).strip() for c in (parsed if isinstance(parsed, (list, tuple)) else [parsed])]


def _read_csv(path: Path, needed: tuple[str, ...]) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in needed if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path.name} is not a VinDr-Mammo table: it lacks {missing}")
        return list(reader)


def _problem(skipped: list[str] | None, message: str) -> None:
    if skipped is None:
        raise DatasetError(message)
    skipped.append(message)


def _calcification(row: dict[str, str], names: list[str], where: str) -> Lesion:
    """The lesion of a calcification finding: its box, malignant from BI-RADS 4 up, the BI-RADS as assessment."""
    birads = birads_category(row["finding_birads"])
    if birads is None:
        raise DatasetError(f"{where}: a calcification finding without finding_birads")
    try:
        box = tuple(float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
    except ValueError as exc:
        raise DatasetError(f"{where}: the box xmin, ymin, xmax, ymax is not four numbers") from exc
    label = "malignant" if int(birads[0]) >= 4 else "benign"
    return Lesion(box, label, category=", ".join(names), assessment=birads)  # type: ignore[arg-type]


def _findings_of(image_id: str, rows: list[tuple[int, dict[str, str]]]) -> tuple[list[Lesion], bool]:
    """(the calcification lesions, whether another finding is there) of one image's finding rows, each given with
    its row number in the table. Raises DatasetError naming the first row the table gets wrong."""
    lesions: list[Lesion] = []
    other = False
    for number, row in rows:
        where = f"{FINDINGS} row {number} (image {image_id})"
        try:
            names = categories(row["finding_categories"], where)
            lowered = [n.lower() for n in names]
            if not names or lowered == [NO_FINDING]:
                continue
            if CALCIFICATION not in lowered:
                other = True
                continue
            lesions.append(_calcification(row, names, where))
        except DatasetError as exc:
            raise DatasetError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from exc
    return lesions, other


def _image_rows(folder: Path, findings: list[dict[str, str]]) -> OrderedDict[str, dict[str, str]]:
    """Each image's row, by image id: from the breast-level table where there is one (it lists every image), then
    from the finding table for images it lacks."""
    images: OrderedDict[str, dict[str, str]] = OrderedDict()
    breast_level = folder / BREAST_LEVEL
    if breast_level.is_file():
        for row in _read_csv(breast_level, IMAGE_COLUMNS):
            images.setdefault(row["image_id"].strip(), row)
    for row in findings:
        images.setdefault(row["image_id"].strip(), row)
    return images


def read_vindr_mammo(folder: Path, image_root: Path | None = None, *, other_findings: str = "exclude",
                     skipped: list[str] | None = None) -> list[Sample]:
    """Every image of a VinDr-Mammo download as a Sample (see the module doc for what becomes a lesion).

    ``folder`` holds the two tables and ``images/``; ``image_root`` overrides the ``images`` folder. An image whose
    DICOM is missing, or a box the table gets wrong, raises DatasetError unless ``skipped`` is a list (then the
    message goes there and the image is left out).
    """
    if other_findings not in ("exclude", "background"):
        raise DatasetError(f"other_findings must be 'exclude' or 'background', not {other_findings!r}")
    folder = Path(folder)
    table = folder / FINDINGS
    if not table.is_file():
        raise DatasetError(f"{folder} is not a VinDr-Mammo download: it lacks {FINDINGS}")
    images_dir = Path(image_root) if image_root is not None else folder / IMAGES
    findings = _read_csv(table, FINDING_COLUMNS)
    by_image: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for number, row in enumerate(findings, start=2):
        by_image.setdefault(row["image_id"].strip(), []).append((number, row))
    samples = []
    for image_id, info in _image_rows(folder, findings).items():
        study = info["study_id"].strip()
        source = images_dir / study / f"{image_id}.dicom"
        try:
            lesions, other = _findings_of(image_id, by_image.get(image_id, []))
        except DatasetError as exc:
            _problem(skipped, str(exc))
            continue
        if other and other_findings == "exclude":
            continue
        if not source.is_file():
            _problem(skipped, f"image {image_id} of exam {study}: {source} does not exist")
            continue
        attributes = tuple((k, info[k].strip()) for k in ("breast_birads", "breast_density")
                           if (info.get(k) or "").strip())
        samples.append(Sample(image_id=image_id, source=source, patient_id=study,
                              breast=breast_from_text(info["laterality"]), view=view_from_text(info["view_position"]),
                              lesions=tuple(lesions), split=(info.get("split") or "").strip() or None,
                              attributes=attributes))
    return samples
