"""CBIS-DDSM calcification findings (``calc_case_description_{train,test}_set.csv``) as TCIA ships them.

Checked against the real tables (both calcification CSVs, every row), and with the ``search`` tool against
TCIA's collection pages (the description CSVs and the DICOM series offered) and, for the retriever's folder names
and the Kaggle JPEG copy's ``csv/dicom_info.csv``, against third-party loaders of both:

* Columns: ``patient_id``, ``breast density``, ``left or right breast``, ``image view``, ``abnormality id``,
  ``abnormality type``, ``calc type``, ``calc distribution``, ``assessment`` (BI-RADS 0-5), ``pathology``
  (MALIGNANT, BENIGN, BENIGN_WITHOUT_CALLBACK: counted benign), ``subtlety`` (1-5), ``image file path``,
  ``cropped image file path``, ``ROI mask file path``. Path cells may end in a line break inside their quotes (a
  real CSV parser reads them; the value is stripped). One row per finding; the findings of one image share its
  ``image file path`` and become one :class:`Sample` with one :class:`Lesion` each, carrying calc type,
  distribution (None for "NA"), assessment and subtlety.
* Paths are ``<subject folder>/<StudyInstanceUID>/<SeriesInstanceUID>/00000N.dcm``. The retriever does not write
  that: it writes ``<subject folder>/<MM-DD-YYYY>-DDSM-NA-<5 digits>/<N>.000000-<series description>-<5 digits>/
  1-1.dcm``, and the ROI series holds both the cropped image and the mask (``1-1.dcm``, ``1-2.dcm``) in no fixed
  order. A path is therefore found, in this order: as written under the image root (older downloads and copies that
  kept the UID folders); by its study and series UIDs in the DICOM headers of the tree
  (:mod:`training.datasets.dicom_index`, cached); by its series UID in a ``dicom_info.csv`` (the common PNG/JPEG
  copies: ``image_path``, ``SeriesInstanceUID``, ``SeriesDescription``, ``Rows``, ``Columns``). Of the files of the
  mask's and crop's series, the mask is the one closest in size to the full image (the crop is a small cut-out),
  a file described as "cropped images" only when nothing else is there.
* A lesion's box is the extent of its mask's foreground (above half the mask's maximum, so that JPEG copies' ringing
  does not widen it); a mask of another size than its image (it happens in CBIS-DDSM) is scaled to the image.
"""
from __future__ import annotations

import csv
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from tqdm import tqdm

from training.datasets.dicom_index import DicomEntry, DicomIndex, index_dicom_tree
from training.datasets.samples import DatasetError, Lesion, Sample, breast_from_text, normalise_label, view_from_text

IMAGE_COL, MASK_COL, CROP_COL = "image file path", "ROI mask file path", "cropped image file path"
REQUIRED = ("patient_id", "left or right breast", "image view", "abnormality id", "pathology", IMAGE_COL, MASK_COL)
TABLE_GLOB = "calc_case_description_*.csv"
CONVERTED_MAP = "dicom_info.csv"
_UID = re.compile(r"^\d+(\.\d+)+$")


def _clean(value: str | None) -> str:
    return (value or "").strip().strip('"').strip()


def _optional(value: str | None) -> str | None:
    text = _clean(value)
    return None if text.upper() in ("", "NA", "N/A", "NAN", "NONE") else text


def _int_or_none(value: str | None) -> int | None:
    text = _clean(value)
    try:
        return int(float(text))
    except ValueError:
        return None


@dataclass(frozen=True)
class CbisFinding:
    """One row of a calcification description table."""

    table: str
    row: int
    patient_id: str
    breast: str | None
    view: str | None
    abnormality_id: str
    label: str
    calc_type: str | None
    distribution: str | None
    assessment: str | None
    subtlety: int | None
    breast_density: str | None
    image_path: str
    mask_path: str
    crop_path: str
    split: str | None

    @property
    def where(self) -> str:
        return f"{self.table} row {self.row} ({self.patient_id} abnormality {self.abnormality_id})"


def table_split(name: str) -> str | None:
    """'training' or 'test' from the table's file name (``..._train_set.csv`` / ``..._test_set.csv``)."""
    low = name.lower()
    return "training" if "train" in low else "test" if "test" in low else None


def read_table(path: Path) -> list[CbisFinding]:
    """Every row of one CBIS-DDSM description table, validated."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path.name} is not a CBIS-DDSM description table: it lacks {missing}")
        rows = list(reader)
    split = table_split(path.name)
    out = []
    for number, row in enumerate(rows, start=2):
        where = f"{path.name} row {number}"
        out.append(CbisFinding(
            table=path.name, row=number, patient_id=_clean(row["patient_id"]),
            breast=breast_from_text(row.get("left or right breast")), view=view_from_text(row.get("image view")),
            abnormality_id=_clean(row["abnormality id"]), label=normalise_label(_clean(row["pathology"]), where),
            calc_type=_optional(row.get("calc type")), distribution=_optional(row.get("calc distribution")),
            assessment=_optional(row.get("assessment")), subtlety=_int_or_none(row.get("subtlety")),
            breast_density=_optional(row.get("breast density")), image_path=_clean(row[IMAGE_COL]),
            mask_path=_clean(row[MASK_COL]), crop_path=_clean(row.get(CROP_COL)), split=split))
    return out


def find_tables(path: Path) -> list[Path]:
    """The description tables ``path`` names: the file itself, or every ``calc_case_description_*.csv`` in the
    folder and its subfolders (the Kaggle copy keeps them in ``csv/``)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        tables = sorted(p for p in path.rglob(TABLE_GLOB) if not any(part.startswith(".") for part in p.parts))
        if tables:
            return tables
        raise DatasetError(f"{path} holds no CBIS-DDSM calcification table ({TABLE_GLOB})")
    raise DatasetError(f"CBIS-DDSM description file {path} does not exist")


def _uids(csv_path: str) -> tuple[str, str] | None:
    parts = [p for p in csv_path.replace("\\", "/").split("/") if p]
    if len(parts) >= 3 and _UID.match(parts[-3]) and _UID.match(parts[-2]):
        return parts[-3], parts[-2]
    return None


def read_converted_map(path: Path, roots: Sequence[Path]) -> DicomIndex:
    """A ``dicom_info.csv`` of a converted copy as an index whose entries point at the copy's image files.

    ``image_path`` is resolved under each of ``roots`` with its leading folders dropped one by one (the Kaggle copy
    writes ``CBIS-DDSM/jpeg/<series uid>/1-1.jpg`` beside a ``jpeg/`` folder); rows whose file is not there are left
    out."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        needed = ("image_path", "SeriesInstanceUID")
        if any(c not in (reader.fieldnames or []) for c in needed):
            raise DatasetError(f"{path} is not a converted copy's map: it lacks {needed}")
        rows = list(reader)
    base = roots[0]
    entries = []
    for row in rows:
        parts = [p for p in _clean(row["image_path"]).replace("\\", "/").split("/") if p]
        found = None
        for root in roots:
            for k in range(len(parts)):
                candidate = root.joinpath(*parts[k:])
                if candidate.is_file():
                    found = candidate
                    break
            if found:
                break
        if found is None:
            continue
        try:
            rel = found.relative_to(base).as_posix()
        except ValueError:
            rel = str(found)
        entries.append(DicomEntry(path=rel, patient_id=_clean(row.get("PatientID")),
                                  study_uid=_clean(row.get("StudyInstanceUID")),
                                  series_uid=_clean(row["SeriesInstanceUID"]),
                                  series_description=_clean(row.get("SeriesDescription")),
                                  rows=_int_or_none(row.get("Rows")) or 0,
                                  columns=_int_or_none(row.get("Columns")) or 0))
    return DicomIndex(root=base, entries=entries)


class CbisLocator:
    """Finds the files a table's paths name in a download tree, whatever its folder names (see the module doc)."""

    def __init__(self, root: Path, *, cache: Path | bool | None = True, progress: bool = False) -> None:
        self.root = Path(root)
        self.cache = cache
        self.progress = progress
        self.unreadable: list[str] = []
        self._indexes: list[DicomIndex] | None = None

    def missing(self, what: str, csv_path: str) -> str:
        """The message for a file not found: says so, and how many files of the tree could not be read as DICOM
        (a truncated download shows up as a file not found)."""
        text = f"{what} {csv_path} is not under {self.root}"
        if self.unreadable:
            text += (f" ({len(self.unreadable)} files there are not readable DICOM, e.g. "
                     f"{self.unreadable[0]})")
        return text

    def indexes(self) -> list[DicomIndex]:
        """The tree's DICOM index and any converted copy's map, built on first need."""
        if self._indexes is None:
            maps = sorted(p for p in self.root.rglob(CONVERTED_MAP) if not any(x.startswith(".") for x in p.parts))
            found = [read_converted_map(m, [self.root, m.parent, m.parent.parent]) for m in maps]
            tree = index_dicom_tree(self.root, cache=self.cache, progress=self.progress)
            self.unreadable = tree.unreadable
            self._indexes = [tree, *found]
        return self._indexes

    def _series(self, csv_path: str) -> list[tuple[DicomIndex, DicomEntry]]:
        uids = _uids(csv_path)
        if uids is None:
            return []
        out: list[tuple[DicomIndex, DicomEntry]] = []
        for index in self.indexes():
            out.extend((index, e) for e in index.series(*uids))
            if out:
                break
        return out

    def image(self, csv_path: str) -> tuple[Path, tuple[int, int] | None] | None:
        """The full mammogram a table path names, with its (rows, columns) when the index knows them."""
        direct = self.root / csv_path
        if direct.is_file():
            return direct, None
        found = self._series(csv_path)
        if not found:
            return None
        full = [(i, e) for i, e in found if "full" in e.series_description.lower()] or found
        index, entry = max(full, key=lambda ie: ie[1].pixels)
        return index.path(entry), ((entry.rows, entry.columns) if entry.pixels else None)

    def mask(self, mask_path: str, crop_path: str, image_shape: tuple[int, int] | None) -> Path | None:
        """The ROI mask a table path names. Where the table's paths exist as written, of the mask's and the crop's
        file the one closest in size to the full image (some rows name the crop as the mask); else, of the files of
        the mask's and the crop's series, the one closest in size to the full image (the largest when its size is
        unknown)."""
        direct = [self.root / p for p in (mask_path, crop_path) if p and (self.root / p).is_file()]
        if direct:
            if len(direct) == 1 or image_shape is None:
                return direct[0]
            target = float(image_shape[0] * image_shape[1])
            sizes = [(_image_shape(p), p) for p in direct]
            known = [(s[0] * s[1], p) for s, p in sizes if s is not None and s[0] * s[1] > 0]
            if not known:
                return direct[0]
            return min(known, key=lambda sp: abs(np.log(sp[0] / target)))[1]
        found = {(id(i), e.path): (i, e) for path in (mask_path, crop_path) if path for i, e in self._series(path)}
        candidates = list(found.values())
        if not candidates:
            return None
        not_crops = [(i, e) for i, e in candidates if "crop" not in e.series_description.lower()]
        candidates = not_crops or candidates
        masks = [(i, e) for i, e in candidates if "mask" in e.series_description.lower()
                 and len({x.series_description for _, x in candidates}) > 1]
        candidates = masks or candidates
        if image_shape is not None and all(e.pixels for _, e in candidates):
            target = float(image_shape[0] * image_shape[1])
            index, entry = min(candidates, key=lambda ie: abs(np.log(ie[1].pixels / target)))
        else:
            index, entry = max(candidates, key=lambda ie: ie[1].pixels)
        return index.path(entry)


def _read_array(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".dcm", ".dicom", ""):
        return np.asarray(pydicom.dcmread(path).pixel_array)
    with Image.open(path) as im:
        return np.asarray(im.convert("L") if im.mode not in ("L", "I", "I;16") else im)


def _image_shape(path: Path) -> tuple[int, int] | None:
    if not path.is_file():
        return None
    if path.suffix.lower() in (".dcm", ".dicom", ""):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.Rows), int(ds.Columns)
    with Image.open(path) as im:
        return int(im.size[1]), int(im.size[0])


def mask_box(mask: np.ndarray, where: str) -> tuple[float, float, float, float]:
    """x0, y0, x1, y1 (continuous pixel edges) around the foreground of a mask: pixels above half its maximum."""
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m.max(axis=2)
    top = float(m.max()) if m.size else 0.0
    if top <= 0:
        raise DatasetError(f"{where}: the ROI mask is empty")
    fg = m > top / 2.0
    rows = np.flatnonzero(fg.any(axis=1))
    cols = np.flatnonzero(fg.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def _problem(skipped: list[str] | None, message: str) -> None:
    if skipped is None:
        raise DatasetError(message)
    skipped.append(message)


def read_cbis_ddsm(path: Path, image_root: Path | None = None, *, skipped: list[str] | None = None,
                   cache: Path | bool | None = True, progress: bool = False) -> list[Sample]:
    """The calcification findings of one table (``path`` a CSV) or of every table in a folder, as Samples.

    ``image_root`` is the download tree (default: the folder given, or the CSV's folder). A finding whose image or
    mask is not in the tree raises DatasetError, unless ``skipped`` is a list: then its message is appended there
    and the finding's image is left out (a finding without its box would teach the detector that its
    calcifications are background). ``cache`` and ``progress`` go to the
    DICOM index (:func:`training.datasets.dicom_index.index_dicom_tree`).
    """
    path = Path(path)
    tables = find_tables(path)
    root = Path(image_root) if image_root is not None else (path if path.is_dir() else path.parent)
    findings = [f for table in tables for f in read_table(table)]
    grouped: OrderedDict[str, list[CbisFinding]] = OrderedDict()
    for f in findings:
        grouped.setdefault(f.image_path, []).append(f)
    locator = CbisLocator(root, cache=cache, progress=progress)
    items: Iterable[tuple[str, list[CbisFinding]]] = grouped.items()
    if progress:
        items = tqdm(list(grouped.items()), desc="CBIS-DDSM masks", unit="img")
    samples = []
    for image_path, group in items:
        first = group[0]
        located = locator.image(image_path)
        if located is None:
            _problem(skipped, f"{first.where}: {locator.missing('image', image_path)}")
            continue
        source, shape = located
        shape = shape or _image_shape(source)
        lesions: list[Lesion] = []
        complete = True
        for f in group:
            mask_file = locator.mask(f.mask_path, f.crop_path, shape)
            if mask_file is None:
                _problem(skipped, f"{f.where}: {locator.missing('ROI mask', f.mask_path)}")
                complete = False
                continue
            try:
                mask = _read_array(mask_file)
                x0, y0, x1, y1 = mask_box(mask, f.where)
            except DatasetError as exc:
                _problem(skipped, str(exc))
                complete = False
                continue
            except Exception as exc:  # a truncated download: pydicom / PIL errors of every kind
                _problem(skipped, f"{f.where}: ROI mask {mask_file} cannot be read: {exc}")
                complete = False
                continue
            if shape is not None and tuple(mask.shape[:2]) != tuple(shape):
                sy, sx = shape[0] / mask.shape[0], shape[1] / mask.shape[1]
                x0, x1, y0, y1 = x0 * sx, x1 * sx, y0 * sy, y1 * sy
            lesions.append(Lesion((x0, y0, x1, y1), f.label, category="calcification", calc_type=f.calc_type,
                                  distribution=f.distribution, assessment=f.assessment, subtlety=f.subtlety))
        if not complete:
            continue  # an image with a finding left unboxed would teach its calcifications as background
        attributes = (("breast_density", first.breast_density),) if first.breast_density else ()
        samples.append(Sample(image_id=image_path, source=source, patient_id=first.patient_id, breast=first.breast,
                              view=first.view, lesions=tuple(lesions), split=first.split, attributes=attributes))
    return samples
