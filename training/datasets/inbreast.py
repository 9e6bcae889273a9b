"""INbreast (Moreira et al. 2012): ``AllDICOMs/*.dcm``, ``AllXML/<file id>.xml`` ROIs, and ``INbreast.csv``.

Checked with the ``search`` tool against the structure of the real XML files as open INbreast parsers read them
(an ElementTree parser that reaches each value by its key's position, so the key order below is the files' own,
and ``plistlib`` loaders; the publisher documents no schema): each file is an Apple
property list whose top dict has ``Images``, a list of dicts with ``ImageIndex``, ``NumberOfROIs`` and ``ROIs``;
each ROI is a dict with (alphabetically) ``Area``, ``Center``, ``Dev``, ``IndexInImage``, ``Max``, ``Mean``,
``Min``, ``Name`` ("Calcification", "Cluster", "Mass", "Spiculated Region", "Distortion"...), ``NumberOfPoints``,
``Point_mm``, ``Point_px`` (strings ``"(x, y)"``, x the column, in pixels of the DICOM), ``Total`` and ``Type``.
The box is the points' extent (a single calcification is one point: it gets a box of ``point_radius`` pixels
around it). DICOM file names are ``<file id>_<patient id>_MG_<L|R>_<CC|ML>_ANON.dcm``. INbreast has no pathology
for most images: the label is the BI-RADS of ``INbreast.csv`` (``;``-separated; columns ``File Name`` and
``Bi-Rads``: 1-6 with 4a/4b/4c), malignant from category 4 up, the usual proxy in the literature; every ROI of an
image takes the image's label and BI-RADS (its ``assessment``) and keeps its ROI name as ``category``. Only
calcification ROIs (names containing "Calcification" or "Cluster") become lesions by default.
"""
from __future__ import annotations

import csv
import plistlib
import re
from pathlib import Path

from training.datasets.samples import DatasetError, Lesion, Sample

CALCIFICATION_NAMES = ("calcification", "cluster")
_NAME_RE = re.compile(r"^(\d+)_([0-9a-fA-F]+)_MG_([LR])_([A-Z]+)_", re.I)


def birads_label(value: str) -> str:
    text = str(value).strip().lower()
    m = re.match(r"(\d)", text)
    if not m:
        raise DatasetError(f"BI-RADS {value!r} is not a category")
    return "malignant" if int(m.group(1)) >= 4 else "benign"


def _points(text: str) -> tuple[float, float]:
    nums = re.findall(r"-?\d+(?:\.\d+)?", text)
    if len(nums) < 2:
        raise DatasetError(f"ROI point {text!r} is not '(x, y)'")
    return float(nums[0]), float(nums[1])


def read_roi_boxes(xml_path: Path, names: tuple[str, ...] = CALCIFICATION_NAMES,
                   point_radius: float = 4.0) -> list[tuple[float, float, float, float]]:
    """Boxes of the ROIs of one INbreast XML file whose Name contains one of ``names`` (case-insensitive)."""
    return [box for _, box in read_rois(xml_path, names, point_radius)]


def read_rois(xml_path: Path, names: tuple[str, ...] = CALCIFICATION_NAMES,
              point_radius: float = 4.0) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(ROI name, box) of the ROIs of one INbreast XML file whose Name contains one of ``names``."""
    try:
        data = plistlib.loads(Path(xml_path).read_bytes())
    except Exception as exc:
        raise DatasetError(f"INbreast XML {xml_path} cannot be read: {exc}") from exc
    boxes = []
    for image in data.get("Images", []):
        for roi in image.get("ROIs", []):
            if not any(n in str(roi.get("Name", "")).lower() for n in names):
                continue
            pts = [_points(p) for p in roi.get("Point_px", [])]
            if not pts:
                continue
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
            if x1 - x0 < 2 * point_radius:
                cx = (x0 + x1) / 2
                x0, x1 = cx - point_radius, cx + point_radius
            if y1 - y0 < 2 * point_radius:
                cy = (y0 + y1) / 2
                y0, y1 = cy - point_radius, cy + point_radius
            boxes.append((str(roi.get("Name", "")).strip(), (x0, y0, x1, y1)))
    return boxes


def read_inbreast(folder: Path, image_root: Path | None = None, *,
                  roi_names: tuple[str, ...] = CALCIFICATION_NAMES) -> list[Sample]:
    """Every DICOM of ``folder/AllDICOMs`` with a BI-RADS in ``folder/INbreast.csv`` as a Sample."""
    folder = Path(folder)
    dicoms = Path(image_root) if image_root is not None else folder / "AllDICOMs"
    table = folder / "INbreast.csv"
    if not dicoms.is_dir() or not table.is_file():
        raise DatasetError(f"{folder} is not an INbreast folder: it needs AllDICOMs/ and INbreast.csv")
    with open(table, newline="", encoding="utf-8-sig") as fh:
        sample_line = fh.readline()
        fh.seek(0)
        reader = csv.DictReader(fh, delimiter=";" if ";" in sample_line else ",")
        birads = {str(r.get("File Name", "")).strip(): str(r.get("Bi-Rads", "")).strip() for r in reader}
    samples = []
    for dcm in sorted(dicoms.glob("*.dcm")):
        m = _NAME_RE.match(dcm.name)
        if not m:
            continue
        file_id, patient, side, view = m.groups()
        if not birads.get(file_id):
            continue
        label = birads_label(birads[file_id])
        xml = folder / "AllXML" / f"{file_id}.xml"
        rois = read_rois(xml, roi_names) if xml.is_file() else []
        view = "MLO" if view.upper() in ("ML", "MLO") else view.upper()
        samples.append(Sample(image_id=file_id, source=dcm, patient_id=patient, breast=side.upper(), view=view,
                              lesions=tuple(Lesion(b, label, category=name or None, assessment=birads[file_id].lower())
                                            for name, b in rois), image_label=label,
                              attributes=(("birads", birads[file_id]),)))
    return samples
