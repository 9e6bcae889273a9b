"""A site's unannotated normal studies: a folder of DICOM mammograms, each image a sample with no lesion.

Normal images are what a hospital has in quantity and what a CAD's false positives are counted on. The folder may
be laid out in any way (one folder per woman, per study, or flat): every DICOM file under it, at any depth and
through symbolic links, is read.
Each image's woman is its header's PatientID (the unit every split keeps together), its side ImageLaterality
(else Laterality), its view ViewPosition; its ``image_id`` is its path relative to the folder, so two women's
``mdb001.dcm`` never collide. Files that are not DICOM (a README, a licence) are skipped; a DICOM without pixel
data or without PatientID is an error that names the file, since a normal without a woman cannot be split
honestly.

:func:`split_women` divides such a folder into named parts by woman with a seeded permutation, so that a part used
to adapt a model never shares a woman with the part that judges it.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pydicom

from dicom_io.reader import is_dicom_file
from training.datasets.samples import DatasetError, Sample, breast_from_text, view_from_text


def read_normals_folder(folder: Path | str) -> list[Sample]:
    """Every DICOM image under ``folder`` as a normal sample (no lesions, image label benign), sorted by path.

    Raises ``DatasetError`` when the folder is missing, holds no DICOM file, or a DICOM file has no PatientID or no
    pixel data (the message names the file).
    """
    root = Path(folder)
    if not root.is_dir():
        raise DatasetError(f"normals folder {str(root)!r} does not exist or is not a folder")
    samples = []
    files = (Path(top) / name for top, _, names in os.walk(root, followlinks=True) for name in names)
    for path in sorted(p for p in files if p.is_file()):
        if not is_dicom_file(path):
            continue
        ds = pydicom.dcmread(path, defer_size=1024)  # one read: large values (the pixels) stay on disk
        where = str(path.relative_to(root))
        if "PixelData" not in ds and "FloatPixelData" not in ds:
            raise DatasetError(f"{where}: DICOM file without pixel data (not an image)")
        patient = str(ds.get("PatientID", "") or "").strip()
        if not patient:
            raise DatasetError(f"{where}: no PatientID; normals are split by woman, so each image must name hers")
        side = breast_from_text(ds.get("ImageLaterality", "") or ds.get("Laterality", ""))
        samples.append(Sample(image_id=where, source=path, patient_id=patient, breast=side,  # type: ignore[arg-type]
                              view=view_from_text(ds.get("ViewPosition", "")), lesions=(), image_label="benign"))
    if not samples:
        raise DatasetError(f"normals folder {str(root)!r} holds no DICOM file")
    return samples


def split_women(samples: Sequence[Sample], fractions: Mapping[str, float], seed: int) -> dict[str, list[Sample]]:
    """Divide ``samples`` into the named parts of ``fractions`` by woman (``patient_id``).

    Women are sorted by id, permuted by ``numpy.random.default_rng(seed)``, and cut in the order the parts are
    given, each part getting ``round(fraction * women)`` women (the last part takes the rest). Fractions must be
    positive and sum to 1; every part must get at least one woman. The same samples and seed always give the same
    parts, whatever order the samples come in.
    """
    if not fractions or any(f <= 0 for f in fractions.values()):
        raise DatasetError(f"split fractions must be positive, got {dict(fractions)}")
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise DatasetError(f"split fractions must sum to 1, got {dict(fractions)} (sum {sum(fractions.values()):g})")
    women = sorted({s.patient_id for s in samples})
    order = [women[i] for i in np.random.default_rng(seed).permutation(len(women))]
    names = list(fractions)
    parts: dict[str, list[str]] = {}
    start = 0
    for k, name in enumerate(names):
        count = len(order) - start if k == len(names) - 1 else int(round(fractions[name] * len(order)))
        parts[name] = order[start:start + count]
        start += count
    empty = [name for name, ids in parts.items() if not ids]
    if empty:
        raise DatasetError(f"{len(women)} women cannot fill the parts {names}: {empty} would be empty")
    owner = {pid: name for name, ids in parts.items() for pid in ids}
    out: dict[str, list[Sample]] = {name: [] for name in names}
    for sample in sorted(samples, key=lambda s: s.image_id):
        out[owner[sample.patient_id]].append(sample)
    return out
