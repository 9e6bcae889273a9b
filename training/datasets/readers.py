"""One entry point for every dataset format: ``read_dataset(path, format)`` -> list of Samples."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from training.datasets.cbis_ddsm import read_cbis_ddsm
from training.datasets.cmmd import read_cmmd
from training.datasets.coco import read_coco
from training.datasets.inbreast import read_inbreast
from training.datasets.mias import read_mias
from training.datasets.normals import read_normals_folder
from training.datasets.paper_csv import read_paper_dataset
from training.datasets.samples import DatasetError, Sample
from training.datasets.sr_folder import read_sr_folder
from training.datasets.vindr_mammo import read_vindr_mammo

FORMATS = ("paper_csv", "coco", "cbis_ddsm", "inbreast", "mias", "sr_folder", "vindr_mammo", "cmmd", "normals")
#: VinDr-Mammo's findings other than calcifications: left out with their images, or their images kept as background
OTHER_FINDINGS = ("exclude", "background")
OtherFindings = Literal["exclude", "background"]


def read_dataset(path: Path, fmt: str = "paper_csv", *, image_root: Path | None = None, split: str | None = None,
                 other_findings: OtherFindings = "exclude", skipped: list[str] | None = None,
                 progress: bool = False) -> list[Sample]:
    """Read an annotated dataset. ``path`` is the annotation file (CSV, COCO JSON, MIAS Info.txt) or folder
    (INbreast, VinDr-Mammo and CMMD downloads, a CBIS-DDSM folder of tables and DICOMs, an SR folder);
    ``image_root`` overrides where images are looked for.

    ``split`` keeps the images of that archive split only ("training", "test"; archives that publish one).
    ``skipped``: where the reader can leave a record out (CBIS-DDSM, VinDr-Mammo, CMMD), a list receives one message
    per record it could not resolve instead of an error; ``mccad datasets check`` reports them. ``progress`` shows
    bars over the slow parts (indexing DICOM headers, reading masks).
    """
    path = Path(path)
    samples = _read(path, fmt, image_root, other_findings, skipped, progress)
    if split is not None:
        splits = sorted({s.split for s in samples if s.split})
        if not splits:
            raise DatasetError(f"--split {split!r}: the {fmt} dataset at {path} publishes no split")
        if split not in splits:
            raise DatasetError(f"--split {split!r}: the {fmt} dataset at {path} has the splits {', '.join(splits)}")
        samples = [s for s in samples if s.split == split]
    return samples


def _read(path: Path, fmt: str, image_root: Path | None, other_findings: OtherFindings, skipped: list[str] | None,
          progress: bool) -> list[Sample]:
    if fmt == "paper_csv":
        return read_paper_dataset(path, image_root)
    if fmt == "coco":
        return read_coco(path, image_root)
    if fmt == "cbis_ddsm":
        return read_cbis_ddsm(path, image_root, skipped=skipped, progress=progress)
    if fmt == "inbreast":
        return read_inbreast(path, image_root)
    if fmt == "mias":
        return read_mias(path, image_root)
    if fmt == "sr_folder":
        return read_sr_folder(path)
    if fmt == "vindr_mammo":
        return read_vindr_mammo(path, image_root, other_findings=other_findings, skipped=skipped)
    if fmt == "cmmd":
        return read_cmmd(path, image_root, skipped=skipped, progress=progress)
    if fmt == "normals":
        return read_normals_folder(path)
    raise DatasetError(f"unknown dataset format {fmt!r}; use one of {', '.join(FORMATS)}")
