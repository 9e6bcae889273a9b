"""An index of the DICOM headers of a download tree, read once and cached beside the tree.

Archives name their files by UIDs in their tables while their download tools lay the files out under descriptive
folder names (TCIA's NBIA Data Retriever writes ``<subject>/<date>-<study description>-<5 digits>/<series number>-
<series description>-<5 digits>/1-1.dcm``), so a reader cannot find a file by its table's path: it finds it by the
UIDs in its header. :func:`index_dicom_tree` walks the tree, reads each file's header without pixels, and keeps the
few attributes the readers match on (:class:`DicomEntry`).

Reading 10,000 headers takes minutes on a network disk, so the index is cached as JSON: beside the tree
(``.mccad-dicom-index.json``) when the tree is writable, else under ``$XDG_CACHE_HOME/mccad`` (default
``~/.cache/mccad``). A cached entry is reused while its file keeps its size and modification time; new or changed
files are read again, deleted ones dropped. Files that are not DICOM (no ``DICM`` preamble or an unreadable header)
are listed in ``DicomIndex.unreadable`` rather than raising: a download holds ``LICENSE`` files and broken transfers.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from tqdm import tqdm

log = logging.getLogger(__name__)

CACHE_NAME = ".mccad-dicom-index.json"
CACHE_VERSION = 1
#: files never taken for DICOM whatever their content (tables, notes and converted copies beside the DICOMs)
NON_DICOM_SUFFIXES = {".csv", ".xlsx", ".xls", ".txt", ".json", ".xml", ".png", ".jpg", ".jpeg", ".tif", ".tiff",
                      ".pgm", ".md", ".pdf", ".zip", ".tcia", ".html"}
#: SNOMED CT codes of the mammography views in ViewCodeSequence (DICOM CID 4014), for files without ViewPosition
VIEW_CODES = {"399162004": "CC", "399368009": "MLO", "399260004": "ML", "399352003": "LM", "399099002": "XCCL",
              "399192003": "XCCM", "399101009": "CV", "399196006": "FB", "399188001": "SIO", "399265009": "AT"}
_TAGS = ["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SeriesDescription", "Rows",
         "Columns", "ImageLaterality", "Laterality", "ViewPosition", "ViewCodeSequence"]


class DicomIndexError(ValueError):
    """The tree to index does not exist."""


@dataclass(frozen=True)
class DicomEntry:
    """The header attributes of one DICOM file the readers match on; ``path`` is relative to the tree's root."""

    path: str
    patient_id: str = ""
    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    series_description: str = ""
    rows: int = 0
    columns: int = 0
    laterality: str = ""
    view: str = ""

    @property
    def pixels(self) -> int:
        return self.rows * self.columns


@dataclass
class DicomIndex:
    """The DICOM files of a tree by series and by patient, and the files that could not be read as DICOM."""

    root: Path
    entries: list[DicomEntry]
    unreadable: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._series: dict[tuple[str, str], list[DicomEntry]] = defaultdict(list)
        self._by_series: dict[str, list[DicomEntry]] = defaultdict(list)
        self._patients: dict[str, list[DicomEntry]] = defaultdict(list)
        for e in self.entries:
            self._series[(e.study_uid, e.series_uid)].append(e)
            self._by_series[e.series_uid].append(e)
            self._patients[e.patient_id].append(e)

    def series(self, study_uid: str, series_uid: str) -> list[DicomEntry]:
        """The files of one series (by its study and series UIDs; by the series UID alone when the study UID of the
        table does not match the header's), in path order."""
        found = self._series.get((study_uid, series_uid)) or self._by_series.get(series_uid) or []
        return sorted(found, key=lambda e: e.path)

    def patient(self, patient_id: str) -> list[DicomEntry]:
        """The files whose PatientID is ``patient_id``, in path order."""
        return sorted(self._patients.get(patient_id, []), key=lambda e: e.path)

    def path(self, entry: DicomEntry) -> Path:
        return self.root / entry.path


def _text(ds, name: str) -> str:
    value = ds.get(name)
    return "" if value is None else str(value).strip()


def _view(ds) -> str:
    view = _text(ds, "ViewPosition").upper()
    if view:
        return view
    seq = ds.get("ViewCodeSequence")
    if seq:
        code = str(getattr(seq[0], "CodeValue", "") or "").strip()
        return VIEW_CODES.get(code, "")
    return ""


def read_entry(root: Path, path: Path) -> DicomEntry | None:
    """The header attributes of one file, or None when it is not a readable DICOM file."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError):
        return None
    if "SOPInstanceUID" not in ds and "SeriesInstanceUID" not in ds:
        return None

    def number(name: str) -> int:
        try:
            return int(ds.get(name) or 0)
        except (TypeError, ValueError):
            return 0

    laterality = (_text(ds, "ImageLaterality") or _text(ds, "Laterality")).upper()[:1]
    return DicomEntry(path=path.relative_to(root).as_posix(), patient_id=_text(ds, "PatientID"),
                      study_uid=_text(ds, "StudyInstanceUID"), series_uid=_text(ds, "SeriesInstanceUID"),
                      sop_uid=_text(ds, "SOPInstanceUID"), series_description=_text(ds, "SeriesDescription"),
                      rows=number("Rows"), columns=number("Columns"), laterality=laterality, view=_view(ds))


def _candidate_files(root: Path) -> Iterable[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or Path(name).suffix.lower() in NON_DICOM_SUFFIXES:
                continue
            yield Path(folder) / name


def default_cache_path(root: Path) -> Path:
    """Beside the tree when it is writable, else in the user's cache folder under a name made from the tree's path."""
    root = Path(root).resolve()
    if os.access(root, os.W_OK):
        return root / CACHE_NAME
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mccad"
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:16]
    return base / f"dicom-index-{digest}.json"


def _load_cache(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    return data.get("files", {})


def index_dicom_tree(root: Path, *, cache: Path | None | bool = True, progress: bool = False) -> DicomIndex:
    """Index every DICOM file under ``root``.

    ``cache``: True (default) uses :func:`default_cache_path`; a path uses that file; False or None reads every
    header and writes nothing. ``progress`` shows a bar over the headers that have to be read.
    """
    root = Path(root)
    if not root.is_dir():
        raise DicomIndexError(f"{root} is not a folder")
    cache_path = default_cache_path(root) if cache is True else (Path(cache) if cache else None)
    cached = _load_cache(cache_path) if cache_path is not None and cache_path.is_file() else {}
    files = list(_candidate_files(root))
    records: dict[str, dict] = {}
    to_read: list[tuple[str, Path, list[int]]] = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            st = path.stat()
        except OSError:
            continue
        stamp = [st.st_size, st.st_mtime_ns]
        hit = cached.get(rel)
        if hit is not None and hit.get("stamp") == stamp:
            records[rel] = hit
        else:
            to_read.append((rel, path, stamp))
    items: Iterable[tuple[str, Path, list[int]]] = to_read
    if progress and to_read:
        items = tqdm(to_read, desc="DICOM headers", unit="file")
    for rel, path, stamp in items:
        entry = read_entry(root, path)
        records[rel] = {"stamp": stamp, "entry": None if entry is None else asdict(entry)}
    if cache_path is not None and (to_read or set(cached) != set(records)):
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"version": CACHE_VERSION, "root": str(root.resolve()), "files": records}))
            tmp.replace(cache_path)
        except OSError as exc:
            log.warning("the DICOM index of %s could not be cached at %s: %s", root, cache_path, exc)
    entries = [DicomEntry(**rec["entry"]) for rec in records.values() if rec.get("entry")]
    unreadable = sorted(rel for rel, rec in records.items() if not rec.get("entry"))
    log.info("indexed %d DICOM files under %s (%d headers read, %d unreadable)", len(entries), root, len(to_read),
             len(unreadable))
    return DicomIndex(root=root, entries=entries, unreadable=unreadable)
