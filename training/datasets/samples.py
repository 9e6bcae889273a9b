"""One typed sample format for every annotated mammogram, whatever archive it came from.

Every reader (the paper's CSV, COCO, CBIS-DDSM, INbreast, MIAS, our SR folders) turns its records into
:class:`Sample` objects, so trainers, splitters and the evaluator never see a source format. Boxes are in the source
image's own pixel grid (x = column, y = row, continuous coordinates, ``x0, y0, x1, y1``), the convention of
``models.results``; labels, pathotype and ER status are per lesion, as the paper annotates them (sections 2.1, 3.4).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

Label = Literal["benign", "malignant"]
Pathotype = Literal["dcis", "dcis_microinvasion", "invasive"]
ERStatus = Literal["positive", "negative"]
Breast = Literal["L", "R"]

LABELS: tuple[str, ...] = ("benign", "malignant")
PATHOTYPES: tuple[str, ...] = ("dcis", "dcis_microinvasion", "invasive")
ER_STATUSES: tuple[str, ...] = ("positive", "negative")
DICOM_SUFFIXES = {".dcm", ".dicom", ""}


class DatasetError(ValueError):
    """An annotation record that cannot become a sample; the message names the file and the record."""


def normalise_label(value: object, where: str) -> str:
    """Map the spellings archives use ("MALIGNANT", "benign_without_callback", "M", 1) onto benign/malignant."""
    text = str(value).strip().lower()
    if text in {"malignant", "m", "1", "cancer", "malign"}:
        return "malignant"
    if text in {"benign", "b", "0", "benign_without_callback", "normal"}:
        return "benign"
    raise DatasetError(f"{where}: label {value!r} is neither benign nor malignant")


def normalise_pathotype(value: object, where: str) -> str | None:
    """Pathotype spellings onto the three classes of the paper's section 3.4 (None when not given)."""
    if value is None:
        return None
    text = str(value).strip().lower().replace("-", "_").replace(" ", "_")
    if text in {"", "none", "na", "n/a", "nan"}:
        return None
    if text in {"dcis", "pure_dcis"}:
        return "dcis"
    if text in {"dcis_microinvasion", "dcis_with_microinvasion", "microinvasion", "dcis_mi"}:
        return "dcis_microinvasion"
    if text in {"invasive", "idc", "ilc", "invasive_cancer"}:
        return "invasive"
    raise DatasetError(f"{where}: pathotype {value!r} is not one of {PATHOTYPES}")


def normalise_er(value: object, where: str) -> str | None:
    """ER status spellings ("ER+", "positive", 1) onto positive/negative (None when not given)."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in {"", "none", "na", "n/a", "nan"}:
        return None
    if text in {"positive", "pos", "+", "er+", "1", "true"}:
        return "positive"
    if text in {"negative", "neg", "-", "er-", "0", "false"}:
        return "negative"
    raise DatasetError(f"{where}: ER status {value!r} is neither positive nor negative")


@dataclass(frozen=True)
class Lesion:
    """One annotated lesion: its box in original pixels, its pathology label, and for malignant lesions the
    pathotype and ER status when known."""

    box: tuple[float, float, float, float]
    label: Label
    pathotype: Pathotype | None = None
    er: ERStatus | None = None
    #: the finding as its archive names it ("Calcification", "Suspicious Calcification", "Cluster"...), when it does
    category: str | None = None
    #: BI-RADS calcification morphology and distribution in the archive's own words (CBIS-DDSM: "PLEOMORPHIC",
    #: "CLUSTERED"); None where the archive gives none or writes "NA"
    calc_type: str | None = None
    distribution: str | None = None
    #: the reader's BI-RADS assessment of this finding ("0"-"6", "4a"...) and the DDSM subtlety rating (1 subtle - 5)
    assessment: str | None = None
    subtlety: int | None = None

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.box
        if not (x1 > x0 and y1 > y0):
            raise DatasetError(f"box {self.box} is empty: x1 must exceed x0 and y1 must exceed y0")
        if self.label not in LABELS:
            raise DatasetError(f"lesion label {self.label!r} is not one of {LABELS}")


@dataclass(frozen=True)
class Sample:
    """One annotated mammogram.

    ``image_id`` is the key that predictions and ground truth are joined on (the image name as the annotation file
    writes it). ``image_label`` overrides the image-level label; by default an image is malignant when any of its
    lesions is (paper section 2.5: a malignant box makes a malignant image).
    """

    image_id: str
    source: Path
    patient_id: str
    breast: Breast | None = None
    view: str | None = None
    lesions: tuple[Lesion, ...] = field(default_factory=tuple)
    image_label: Label | None = None
    #: the archive's own split of the image ("training", "test"), when it publishes one
    split: str | None = None
    #: image-level facts of the archive as (name, value) pairs: breast density, breast BI-RADS, CMMD abnormality and
    #: molecular subtype... (a tuple so that samples stay hashable and comparable)
    attributes: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        if self.image_label is not None:
            return self.image_label
        return "malignant" if any(les.label == "malignant" for les in self.lesions) else "benign"

    @property
    def target(self) -> int:
        """1 for malignant, 0 for benign (image level)."""
        return int(self.label == "malignant")

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) float64 boxes in original pixels."""
        if not self.lesions:
            return np.zeros((0, 4), dtype=np.float64)
        return np.asarray([les.box for les in self.lesions], dtype=np.float64)

    @property
    def labels(self) -> list[str]:
        return [les.label for les in self.lesions]

    @property
    def pathotypes(self) -> list[str | None]:
        return [les.pathotype for les in self.lesions]

    @property
    def ers(self) -> list[str | None]:
        return [les.er for les in self.lesions]

    @property
    def breast_key(self) -> tuple[str, str | None]:
        """Patient and side: the unit of the paper's breast level (section 2.7)."""
        return (self.patient_id, self.breast)

    @property
    def attrs(self) -> dict[str, str]:
        """``attributes`` as a dict."""
        return dict(self.attributes)

    @property
    def is_dicom(self) -> bool:
        return self.source.suffix.lower() in DICOM_SUFFIXES

    def with_lesions(self, lesions: tuple[Lesion, ...]) -> "Sample":
        return replace(self, lesions=tuple(lesions))


def breast_from_text(value: object) -> str | None:
    """'L', 'left', 'LEFT', 'R'... onto L/R; anything else is unknown (None)."""
    text = str(value or "").strip().upper()
    if text.startswith("L"):
        return "L"
    if text.startswith("R"):
        return "R"
    return None


def view_from_text(value: object) -> str | None:
    """'CC', 'MLO', 'cc', 'ML'... as the upper-case view code; None when empty."""
    text = str(value or "").strip().upper()
    return text or None
