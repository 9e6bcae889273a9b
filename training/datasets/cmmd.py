"""The Chinese Mammography Database (CMMD; Cui et al., TCIA 2021, doi 10.7937/tcia.eqde-4b16) as TCIA ships it.

Checked with the ``search`` tool against TCIA's collection description as quoted by its users and against
third-party loaders (pandas readers of ``CMMD_clinicaldata_revision.xlsx`` by column name, pydicom readers of the
retriever's tree that take the side from ImageLaterality and the view from ViewCodeSequence); no real file of the
set was at hand:

* The clinical table ``CMMD_clinicaldata_revision.xlsx`` (also read as a CSV export, comma- or semicolon-
  separated): one row per affected breast, columns ``ID1`` (the subject, "D1-0001", "D2-0001"), ``LeftRight``
  (L/R), ``Age``, ``number``, ``abnormality`` ("calcification", "mass", "both"), ``classification`` ("Benign" /
  "Malignant", biopsy-confirmed) and ``subtype`` (molecular subtype of the D2 cancers: "Luminal A", "Luminal B",
  "HER2-enriched", "triple negative"; empty elsewhere).
* The images: the NBIA Data Retriever's tree ``CMMD/<ID1>/<date>-NA-<digits>/1.000000-NA-<digits>/1-N.dcm``, two or
  four views per subject, each file's breast in ImageLaterality and its view in ViewCodeSequence (SNOMED CT
  399162004 CC, 399368009 MLO; there is no ViewPosition). The tree is indexed by header
  (:mod:`training.datasets.dicom_index`, cached), so any folder names do.

CMMD has no boxes: each image of a breast in the table becomes a lesion-free :class:`Sample` whose
``image_label`` is the breast's classification (image- and breast-level training: SPPNet, the breast gate),
with abnormality, subtype and age in its ``attributes``. Images of a breast the table does not list (the other side
of a four-view subject) carry no label and are left out.
"""
from __future__ import annotations

import csv
from pathlib import Path

from training.datasets.dicom_index import index_dicom_tree
from training.datasets.samples import DatasetError, Sample, breast_from_text, normalise_label

TABLE_GLOB = "CMMD_clinicaldata*"
COLUMNS = ("ID1", "LeftRight", "classification")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def read_clinical_table(path: Path) -> list[dict[str, str]]:
    """The rows of the clinical table (XLSX, or a CSV export) as dicts of stripped strings."""
    path = Path(path)
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        try:
            import openpyxl
        except ImportError as exc:  # pragma: no cover - a dependency of the project
            raise DatasetError(f"{path.name}: reading .xlsx needs openpyxl (or save the table as CSV)") from exc
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        sheet = book.worksheets[0]
        rows = [[_cell(v) for v in row] for row in sheet.iter_rows(values_only=True)]
        book.close()
    else:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            first = fh.readline()
            fh.seek(0)
            rows = [[c.strip() for c in r] for r in csv.reader(fh, delimiter=";" if first.count(";") > first.count(",")
                                                                  else ",")]
    rows = [r for r in rows if any(r)]
    if not rows:
        raise DatasetError(f"{path.name} is empty")
    header = rows[0]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DatasetError(f"{path.name} is not CMMD's clinical table: it lacks {missing}")
    # short rows are padded; cells past the header (a spreadsheet's trailing cells) are dropped
    return [dict(zip(header, r + [""] * (len(header) - len(r)), strict=False)) for r in rows[1:]]


def find_table(folder: Path) -> Path:
    """The clinical table in ``folder`` or its subfolders (the XLSX preferred over a CSV export)."""
    found = sorted(Path(folder).rglob(TABLE_GLOB), key=lambda p: (p.suffix.lower() != ".xlsx", len(p.parts), p))
    found = [p for p in found if p.suffix.lower() in (".xlsx", ".xlsm", ".csv")]
    if not found:
        raise DatasetError(f"{folder} holds no CMMD clinical table ({TABLE_GLOB}.xlsx or .csv)")
    return found[0]


def _problem(skipped: list[str] | None, message: str) -> None:
    if skipped is None:
        raise DatasetError(message)
    skipped.append(message)


def read_cmmd(folder: Path, image_root: Path | None = None, *, skipped: list[str] | None = None,
              cache: Path | bool | None = True, progress: bool = False) -> list[Sample]:
    """Every image of a breast listed in the clinical table, labelled by its classification.

    ``folder`` holds the table and the DICOM tree (or is the table itself); ``image_root`` overrides where the tree
    is (default: ``folder``). A breast of the table without any image raises DatasetError unless ``skipped`` is a
    list (then the message goes there).
    """
    folder = Path(folder)
    table = folder if folder.is_file() else find_table(folder)
    root = Path(image_root) if image_root is not None else (folder.parent if folder.is_file() else folder)
    rows = read_clinical_table(table)
    index = index_dicom_tree(root, cache=cache, progress=progress)
    breasts: dict[tuple[str, str], dict[str, str]] = {}
    for number, row in enumerate(rows, start=2):
        where = f"{table.name} row {number}"
        subject, side = row["ID1"].strip(), breast_from_text(row["LeftRight"])
        if not subject or side is None:
            raise DatasetError(f"{where}: ID1 {row['ID1']!r} / LeftRight {row['LeftRight']!r} do not name a breast")
        row = dict(row, label=normalise_label(row["classification"], where), where=where)
        breasts[(subject, side)] = row
    samples = []
    for (subject, side), row in breasts.items():
        entries = [e for e in index.patient(subject) if e.laterality == side]
        if not entries:
            hint = (f" ({len(index.unreadable)} files there are not readable DICOM, e.g. {index.unreadable[0]})"
                    if index.unreadable else "")
            _problem(skipped, f"{row['where']}: no DICOM of {subject} {side} under {root}{hint}")
            continue
        attributes = tuple((name, row[key]) for name, key in (("abnormality", "abnormality"), ("subtype", "subtype"),
                                                              ("age", "Age")) if row.get(key))
        for e in entries:
            samples.append(Sample(image_id=e.path, source=index.path(e), patient_id=subject, breast=side,
                                  view=e.view or None, image_label=row["label"], attributes=attributes))
    return samples
