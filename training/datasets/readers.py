"""One entry point for every dataset format: ``read_dataset(path, format)`` -> list of Samples."""
from __future__ import annotations

from pathlib import Path

from training.datasets.samples import DatasetError, Sample

FORMATS = ("paper_csv", "coco", "cbis_ddsm", "inbreast", "mias", "sr_folder")


def read_dataset(path: Path, fmt: str = "paper_csv", *, image_root: Path | None = None) -> list[Sample]:
    """Read an annotated dataset. ``path`` is the annotation file (CSV, COCO JSON, MIAS Info.txt) or folder
    (INbreast XML folder, SR folder); ``image_root`` overrides where images are looked for."""
    path = Path(path)
    if fmt == "paper_csv":
        from training.datasets.paper_csv import read_paper_dataset

        return read_paper_dataset(path, image_root)
    if fmt == "coco":
        from training.datasets.coco import read_coco

        return read_coco(path, image_root)
    if fmt == "cbis_ddsm":
        from training.datasets.cbis_ddsm import read_cbis_ddsm

        return read_cbis_ddsm(path, image_root)
    if fmt == "inbreast":
        from training.datasets.inbreast import read_inbreast

        return read_inbreast(path, image_root)
    if fmt == "mias":
        from training.datasets.mias import read_mias

        return read_mias(path, image_root)
    if fmt == "sr_folder":
        from training.datasets.sr_folder import read_sr_folder

        return read_sr_folder(path)
    raise DatasetError(f"unknown dataset format {fmt!r}; use one of {', '.join(FORMATS)}")
