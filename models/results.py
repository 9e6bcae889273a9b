"""The typed result of analysing one study: what the pipeline returns, what ``result.json`` holds, what the DICOM
writers encode and what their readers give back.

Coordinates are always in the source image's own pixel grid (x = column, y = row, floats, corners inclusive of the
top-left pixel edge), never in model-input coordinates.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Label = Literal["benign", "malignant"]

NOT_FOR_CLINICAL_USE = "NOT FOR CLINICAL USE: model trained on synthetic data only"


class BoxXYXY(BaseModel):
    """A rectangle in source-image pixels: (x0, y0) top-left, (x1, y1) bottom-right."""

    model_config = ConfigDict(frozen=True)

    x0: float
    y0: float
    x1: float
    y1: float

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)


class LesionResult(BaseModel):
    """One detected calcification lesion (a detector box after thresholds and suppression)."""

    lesion_id: int = Field(description="1-based, unique within the study")
    box: BoxXYXY
    label: Label
    probability: float = Field(ge=0.0, le=1.0, description="detector score of the predicted class")
    malignancy_probability: float = Field(
        ge=0.0, le=1.0, description="P(malignant): the box score if malignant, else 1 - its benign score (class "
                                    "scores); the box head's P(malignant) / (P(benign) + P(malignant)) (lesion scores)")
    invasive_incl_microinvasion_probability: float | None = Field(
        default=None, description="P(invasive incl. microinvasion) vs pure DCIS; malignant lesions only")
    invasive_excl_microinvasion_probability: float | None = Field(
        default=None, description="P(invasive excl. microinvasion) vs DCIS with or without microinvasion")
    er_positive_probability: float | None = Field(default=None, description="P(ER positive); malignant only")


class ImageResult(BaseModel):
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: str | None = None
    laterality: Literal["L", "R"] | None = None
    view: str | None = None
    rows: int
    columns: int
    lesions: list[LesionResult] = []
    label: Label
    malignancy_probability: float = Field(ge=0.0, le=1.0, description="FPNNet image-level rule (paper 2.6)")
    probability: float = Field(ge=0.0, le=1.0, description="confidence of the predicted label")
    sppnet_malignancy_probability: float | None = None
    heatmap: str | None = Field(default=None, description="file name of the heatmap PNG, relative to the result")


class BreastResult(BaseModel):
    laterality: Literal["L", "R"] | None
    label: Label
    malignancy_probability: float = Field(ge=0.0, le=1.0)
    probability: float = Field(ge=0.0, le=1.0, description="confidence of the label (paper section 2.7)")
    decided_by: str | None = Field(default=None, description="SOP Instance UID of the image that decided")
    image_uids: list[str] = []


class ExamResult(BaseModel):
    label: Label
    malignancy_probability: float = Field(ge=0.0, le=1.0)
    probability: float = Field(ge=0.0, le=1.0)


class ModelInfo(BaseModel):
    role: str = Field(description="detector, sppnet, pathotype_incl, pathotype_excl or er")
    name: str
    version: str
    sha256: str
    synthetic_only: bool = False
    runtime: str | None = Field(default=None, description="the detector's: eager (PyTorch) or onnxruntime (its "
                                "backbone in ONNX Runtime, checked against PyTorch at load); None for other roles")


class StudyResult(BaseModel):
    """Everything mccad concluded about one study; JSON-serialisable and the content of every output object."""

    schema_version: int = 1
    study_instance_uid: str
    exam_key: str | None = None
    images: list[ImageResult]
    breasts: list[BreastResult]
    exam: ExamResult
    models: list[ModelInfo]
    timings_s: dict[str, float] = {}
    warnings: list[str] = []

    def model_version_tag(self) -> str:
        """A stable string naming every model that produced this result; part of derived output UIDs."""
        return ";".join(f"{m.role}={m.name}@{m.version}:{m.sha256[:12]}" for m in sorted(self.models, key=lambda m: m.role))
