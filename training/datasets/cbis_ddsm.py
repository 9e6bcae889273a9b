"""CBIS-DDSM calcification case descriptions (``calc_case_description_{train,test}_set.csv``) with ROI masks.

One CSV row per abnormality: ``patient_id``, ``left or right breast``, ``image view``, ``abnormality id``,
``pathology`` (MALIGNANT, BENIGN, BENIGN_WITHOUT_CALLBACK), ``image file path``, ``ROI mask file path``... The box
of a lesion is the bounding box of its ROI mask's non-zero pixels (CBIS-DDSM gives masks, not boxes); when the mask
and the image differ in size (it happens in CBIS-DDSM), the box is scaled to the image. Paths resolve against
``image_root`` (default: the CSV's folder); masks may be DICOM (as distributed) or PNG/JPEG (converted copies).
Rows of one image file become one sample; BENIGN_WITHOUT_CALLBACK counts as benign.
"""
from __future__ import annotations

import csv
from collections import OrderedDict
from pathlib import Path

import numpy as np

from training.datasets.samples import DatasetError, Lesion, Sample, breast_from_text, normalise_label, view_from_text

IMAGE_COL, MASK_COL = "image file path", "ROI mask file path"


def _clean(value: str | None) -> str:
    return (value or "").strip().strip('"').strip()


def _read_array(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".dcm", ".dicom", ""):
        import pydicom

        return np.asarray(pydicom.dcmread(path).pixel_array)
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L") if im.mode not in ("L", "I", "I;16") else im)


def _image_shape(path: Path) -> tuple[int, int] | None:
    if not path.is_file():
        return None
    if path.suffix.lower() in (".dcm", ".dicom", ""):
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.Rows), int(ds.Columns)
    from PIL import Image

    with Image.open(path) as im:
        return int(im.size[1]), int(im.size[0])


def mask_box(mask: np.ndarray, where: str) -> tuple[float, float, float, float]:
    """x0, y0, x1, y1 (continuous pixel edges) around the non-zero pixels of a mask."""
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m.max(axis=2)
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        raise DatasetError(f"{where}: the ROI mask is empty")
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def read_cbis_ddsm(path: Path, image_root: Path | None = None) -> list[Sample]:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"CBIS-DDSM description file {path} does not exist")
    root = Path(image_root) if image_root is not None else path.parent
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and (IMAGE_COL not in rows[0] or MASK_COL not in rows[0]):
        raise DatasetError(f"{path.name} is not a CBIS-DDSM description: it lacks {IMAGE_COL!r} / {MASK_COL!r}")
    grouped: OrderedDict[str, list[dict]] = OrderedDict()
    for row in rows:
        grouped.setdefault(_clean(row[IMAGE_COL]), []).append(row)
    samples = []
    for image_path, group in grouped.items():
        source = root / image_path
        shape = _image_shape(source)
        lesions = []
        for row in group:
            where = f"{path.name} {row.get('patient_id')} abnormality {row.get('abnormality id')}"
            mask_path = root / _clean(row[MASK_COL])
            if not mask_path.is_file():
                raise DatasetError(f"{where}: ROI mask {mask_path} does not exist")
            mask = _read_array(mask_path)
            x0, y0, x1, y1 = mask_box(mask, where)
            if shape is not None and tuple(mask.shape[:2]) != shape:
                sy, sx = shape[0] / mask.shape[0], shape[1] / mask.shape[1]
                x0, x1, y0, y1 = x0 * sx, x1 * sx, y0 * sy, y1 * sy
            lesions.append(Lesion((x0, y0, x1, y1), normalise_label(_clean(row["pathology"]), where)))
        first = group[0]
        samples.append(Sample(image_id=image_path, source=source, patient_id=_clean(first["patient_id"]),
                              breast=breast_from_text(first.get("left or right breast")),
                              view=view_from_text(first.get("image view")), lesions=tuple(lesions)))
    return samples
