"""The mini-MIAS database's ``Info.txt`` (Suckling et al. 1994).

Each line: reference number, background tissue (F/G/D), class of abnormality (CALC, CIRC, SPIC, MISC, ARCH, ASYM,
NORM), severity (B/M), then the centre ``x y`` and the ``radius`` of a circle enclosing the abnormality, in pixels
of the 1024 x 1024 image. MIAS puts the origin of ``y`` at the bottom-left corner, so the row is
``height - y``. An abnormality may take several lines; some lines lack coordinates (the abnormality is diffuse):
the image keeps its label but gets no box. The database lists films in pairs of one woman, left (even numbers) then
right (odd numbers); all films are MLO views. By default only calcifications (CALC) are lesions; other abnormal
images are left out, since this product finds calcifications; NORM images are benign images without lesions.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from training.datasets.samples import DatasetError, Lesion, Sample

MIAS_SIDE = 1024
CLASSES = {"CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM", "NORM"}


def read_mias(path: Path, image_root: Path | None = None, *, classes: tuple[str, ...] = ("CALC",),
              keep_normal: bool = True) -> list[Sample]:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"MIAS Info.txt {path} does not exist")
    root = Path(image_root) if image_root is not None else path.parent
    records: dict[str, dict] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts or not parts[0].lower().startswith("mdb"):
            continue
        ref = parts[0].lower()
        where = f"{path.name} line {number}"
        if len(parts) < 3 or parts[2] not in CLASSES:
            raise DatasetError(f"{where}: expected 'mdbNNN tissue CLASS [severity x y radius]', got {line!r}")
        rec = records.setdefault(ref, {"class": parts[2], "lesions": [], "severity": None})
        if parts[2] == "NORM":
            continue
        if len(parts) < 4 or parts[3] not in ("B", "M"):
            raise DatasetError(f"{where}: severity must be B or M, got {line!r}")
        rec["severity"] = "malignant" if parts[3] == "M" else "benign"
        if len(parts) >= 7:
            try:
                x, y, r = float(parts[4]), float(parts[5]), float(parts[6])
            except ValueError as exc:
                raise DatasetError(f"{where}: x, y and radius must be numbers, got {line!r}") from exc
            rec["lesions"].append((x, y, r, rec["severity"]))
    samples = []
    for ref, rec in sorted(records.items()):
        if rec["class"] != "NORM" and rec["class"] not in classes:
            continue
        if rec["class"] == "NORM" and not keep_normal:
            continue
        source = root / f"{ref}.pgm"
        height = _image_height(source)
        lesions = tuple(Lesion((x - r, height - y - r, x + r, height - y + r), sev) for x, y, r, sev in rec["lesions"])
        index = int(ref[3:])
        samples.append(Sample(image_id=ref, source=source, patient_id=f"mias{(index + 1) // 2:03d}",
                              breast="L" if index % 2 == 0 else "R", view="MLO", lesions=lesions,
                              image_label=rec["severity"] or "benign"))
    return samples


def _image_height(source: Path) -> int:
    if source.is_file():
        with Image.open(source) as im:
            return int(im.size[1])
    return MIAS_SIDE
