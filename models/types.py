"""The image container that crosses from the DICOM reader into the models.

It lives in ``models`` because ``models`` may import none of our other packages, while ``dicom_io`` may import
``models`` (result and input types only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Laterality = Literal["L", "R"]
View = Literal["CC", "MLO", "ML", "LM", "XCCL", "LMO", "SIO", "OTHER"]
PresentationIntent = Literal["FOR PRESENTATION", "FOR PROCESSING"]


class ImageMeta(BaseModel):
    """What the pipeline and the DICOM writers need to know about one mammogram, without the pixels.

    ``quirks`` names every archive oddity the reader had to work around (for example
    ``"laterality-from-0020,0060"``), so that a reviewer can see what was inferred rather than read.
    """

    model_config = ConfigDict(frozen=True)

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str = ""
    exam_key: str = Field(description="groups images of one examination (one patient's screening visit)")
    laterality: Laterality | None = None
    view: View | None = None
    rows: int
    columns: int
    pixel_spacing_mm: tuple[float, float] | None = None
    manufacturer: str | None = None
    presentation_intent: PresentationIntent | None = None
    frame_of_reference_uid: str | None = None
    modality: str = "MG"
    source_path: str | None = None
    quirks: tuple[str, ...] = ()


@dataclass
class MammogramImage:
    """A decoded mammogram: ``pixels`` is float32 in [0, 1], shape (rows, columns), bright = dense."""

    pixels: np.ndarray
    meta: ImageMeta

    def __post_init__(self) -> None:
        if self.pixels.ndim != 2:
            raise ValueError(f"a mammogram is one 2-D frame, got shape {self.pixels.shape}")
        if self.pixels.dtype != np.float32:
            raise ValueError(f"pixels must be float32, got {self.pixels.dtype}")
