"""COCO object-detection JSON (``images``, ``annotations`` with ``bbox = [x, y, width, height]``, ``categories``).

Category names map onto benign / malignant (``benign``, ``malignant``, ``calcification_malignant``... any name that
contains one of the two words). Optional per-image keys ``patient_id``, ``laterality``, ``view`` and per-annotation
keys ``pathotype``, ``er`` are read when present; otherwise patient, side and view come from the file name as for
the paper's CSV.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from training.datasets.paper_csv import _from_name
from training.datasets.samples import (
    DatasetError,
    Lesion,
    Sample,
    breast_from_text,
    normalise_er,
    normalise_pathotype,
    view_from_text,
)


def _category_label(name: str, where: str) -> str:
    text = name.lower()
    if "malignant" in text:
        return "malignant"
    if "benign" in text:
        return "benign"
    raise DatasetError(f"{where}: category {name!r} is neither benign nor malignant")


def read_coco(path: Path, image_root: Path | None = None) -> list[Sample]:
    """Every image of a COCO file as a Sample (images without annotations are benign samples without lesions)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"COCO file {path} cannot be read: {exc}") from exc
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DatasetError(f"COCO file {path} has no {key!r} list")
    root = Path(image_root) if image_root is not None else path.parent
    categories = {c["id"]: _category_label(c["name"], f"{path.name} category {c['id']}") for c in data["categories"]}
    by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append(ann)
    samples = []
    for img in data["images"]:
        name = img["file_name"]
        where = f"{path.name} image {name!r}"
        patient, side, view = _from_name(name)
        lesions = []
        for ann in by_image.get(img["id"], []):
            if ann["category_id"] not in categories:
                raise DatasetError(f"{where}: annotation {ann.get('id')} names unknown category {ann['category_id']}")
            x, y, w, h = (float(v) for v in ann["bbox"])
            lesions.append(Lesion((x, y, x + w, y + h), categories[ann["category_id"]],
                                  pathotype=normalise_pathotype(ann.get("pathotype"), where),
                                  er=normalise_er(ann.get("er"), where)))
        samples.append(Sample(image_id=name, source=root / name, patient_id=str(img.get("patient_id") or patient),
                              breast=breast_from_text(img.get("laterality")) or side,
                              view=view_from_text(img.get("view")) or view, lesions=tuple(lesions)))
    return samples


def write_coco(path: Path, samples: list[Sample]) -> Path:
    """The inverse of :func:`read_coco` (image names as the samples' ``image_id``), for exchange with other tools."""
    cats = [{"id": 1, "name": "benign"}, {"id": 2, "name": "malignant"}]
    images, anns = [], []
    for i, s in enumerate(samples, start=1):
        images.append({"id": i, "file_name": s.image_id, "patient_id": s.patient_id, "laterality": s.breast,
                       "view": s.view})
        for les in s.lesions:
            x0, y0, x1, y1 = les.box
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1 + (les.label == "malignant"),
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
                         "pathotype": les.pathotype, "er": les.er})
    Path(path).write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return Path(path)
