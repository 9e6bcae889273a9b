"""The typed result of analysing one study: what the pipeline returns, what ``result.json`` holds, what the DICOM
writers encode and what their readers give back.

Coordinates are always in the source image's own pixel grid (x = column, y = row, floats, corners inclusive of the
top-left pixel edge), never in model-input coordinates.
"""
from __future__ import annotations

import math
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.descriptors import ClusterDescriptors

Label = Literal["benign", "malignant"]

NOT_FOR_CLINICAL_USE = "NOT FOR CLINICAL USE: model trained on synthetic data only"

#: A finding is called malignant when its P(malignant) exceeds this: the class whose probability is higher.
DECISION_THRESHOLD = 0.5
#: How far a stored confidence may sit from the one ``decide`` gives (float rounding in JSON and DICOM FD is exact;
#: this only absorbs values written with a different summation order).
_CONSISTENCY_TOLERANCE = 1e-9


class Decision(NamedTuple):
    """What ``decide`` returns: the label, P(malignant), the confidence of the label and whether the finding is a
    suspicious one (one that counts towards the image, breast and exam verdicts as a malignant call)."""

    label: Label
    malignancy_probability: float
    probability: float
    suspicious: bool


def decide(malignancy_probability: float, typically_benign: bool = False) -> Decision:
    """The one rule that turns a P(malignant) into a label and its confidence, for lesions, images, breasts and
    exams alike: malignant when P(malignant) > ``DECISION_THRESHOLD``, else benign; the confidence is P(malignant)
    for a malignant call and 1 - P(malignant) for a benign one, so it is never below one half. Values outside [0, 1]
    are clipped; NaN is an error (a broken model, not a benign finding).

    ``typically_benign`` says that the finding's descriptors put it in a typically benign BI-RADS type
    (``models.descriptors.TYPICALLY_BENIGN_TYPES``): it keeps its label and probability, but it is not suspicious,
    and the verdicts above it leave it out (``models.findings``). Every other malignant call is suspicious."""
    p = float(malignancy_probability)
    if math.isnan(p):
        raise ValueError("P(malignant) is NaN")
    p = min(1.0, max(0.0, p))
    if p > DECISION_THRESHOLD:
        return Decision("malignant", p, p, not typically_benign)
    return Decision("benign", p, 1.0 - p, False)


def caption(label: str, malignancy_probability: float) -> str:
    """The text every picture and viewer shows for a finding, e.g. "malignant, P(cancer) 0.87": the label and the
    probability it was decided from, so that the two can be seen to agree."""
    return f"{label}, P(cancer) {malignancy_probability:.2f}"


class _Decided(BaseModel):
    """A finding whose ``label`` and ``probability`` are the ones ``decide`` gives for its P(malignant)."""

    @model_validator(mode="after")
    def _label_follows_probability(self):
        expected = decide(self.malignancy_probability)
        if self.label != expected.label or abs(self.probability - expected.probability) > _CONSISTENCY_TOLERANCE:
            raise ValueError(f"{type(self).__name__} says {self.label} with confidence {self.probability} but "
                             f"P(malignant) {self.malignancy_probability} means {expected.label} with confidence "
                             f"{expected.probability}")
        return self

    def caption(self) -> str:
        return caption(self.label, self.malignancy_probability)


class BoxXYXY(BaseModel):
    """A rectangle in source-image pixels: (x0, y0) top-left, (x1, y1) bottom-right."""

    model_config = ConfigDict(frozen=True)

    x0: float
    y0: float
    x1: float
    y1: float

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)


class LesionResult(_Decided):
    """One detected calcification cluster (a detector box after thresholds and suppression).

    Where the bundle has a descriptor head, the cluster has ``descriptors`` and its reported P(malignant) is the one
    its descriptors give through the CBIS-DDSM mapping (``models.descriptors.MalignancyMapping``), with its 95 %
    interval; the detector's own reading is kept in ``network_malignancy_probability``. Without a descriptor head
    the reported P(malignant) is the detector's and those three fields are None."""

    lesion_id: int = Field(description="1-based, unique within the study")
    box: BoxXYXY
    label: Label = Field(description="decide(malignancy_probability).label")
    probability: float = Field(ge=0.0, le=1.0, description="confidence of the label: decide(...).probability")
    malignancy_probability: float = Field(
        ge=0.0, le=1.0, description="P(malignant): the box score if malignant, else 1 - its benign score (class "
                                    "scores); the box head's P(malignant) / (P(benign) + P(malignant)) (lesion scores)")
    score: float = Field(ge=0.0, le=1.0, description="the detector's score that kept and ranked the box (its class "
                                                     "score, or P(lesion) under lesion scores): certainty of finding")
    invasive_incl_microinvasion_probability: float | None = Field(
        default=None, description="P(invasive incl. microinvasion) vs pure DCIS; malignant lesions only")
    invasive_excl_microinvasion_probability: float | None = Field(
        default=None, description="P(invasive excl. microinvasion) vs DCIS with or without microinvasion")
    er_positive_probability: float | None = Field(default=None, description="P(ER positive); malignant only")
    descriptors: ClusterDescriptors | None = Field(
        default=None, description="BI-RADS calcification type and distribution (probabilities and most likely)")
    malignancy_interval: tuple[float, float] | None = Field(
        default=None, description="95 % interval of malignancy_probability when it comes from the descriptors")
    network_malignancy_probability: float | None = Field(
        default=None, ge=0.0, le=1.0, description="the detector's own P(malignant) (as malignancy_probability "
                                                   "describes it) when the reported one comes from the descriptors")
    suspicious: bool | None = Field(
        default=None, description="decide(malignancy_probability, typically benign descriptors).suspicious: a "
                                  "malignant call whose type is not typically benign; filled when not given")

    @property
    def typically_benign(self) -> bool:
        """True when the descriptors' most likely type is typically benign (never without descriptors)."""
        return self.descriptors is not None and self.descriptors.typically_benign

    @model_validator(mode="after")
    def _suspicious_follows_decision(self):
        expected = decide(self.malignancy_probability, self.typically_benign).suspicious
        if self.suspicious is None:
            self.suspicious = expected
        elif self.suspicious != expected:
            raise ValueError(f"lesion {self.lesion_id} says suspicious={self.suspicious} but its P(malignant) and "
                             f"descriptors mean {expected}")
        if (self.malignancy_interval is None) != (self.descriptors is None):
            raise ValueError("malignancy_interval comes with descriptors and only with them")
        return self

    def caption(self) -> str:
        """The label and probability, then with descriptors the interval and the terms: "malignant, P(cancer) 0.55
        (0.47-0.63): fine pleomorphic, grouped"; a typically benign type says so."""
        text = caption(self.label, self.malignancy_probability)
        if self.descriptors is None or self.malignancy_interval is None:
            return text
        low, high = self.malignancy_interval
        note = " (typically benign)" if self.typically_benign else ""
        return f"{text} ({low:.2f}-{high:.2f}): {self.descriptors.caption()}{note}"


class ImageResult(_Decided):
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
    malignancy_probability: float = Field(ge=0.0, le=1.0, description="the highest P(malignant) of its lesions "
                                          "that are not typically benign, 0 without any (models.findings)")
    probability: float = Field(ge=0.0, le=1.0, description="confidence of the label")
    sppnet_malignancy_probability: float | None = None
    heatmap: str | None = Field(default=None, description="file name of the heatmap PNG, relative to the result")


class BreastResult(_Decided):
    laterality: Literal["L", "R"] | None
    label: Label
    malignancy_probability: float = Field(ge=0.0, le=1.0)
    probability: float = Field(ge=0.0, le=1.0, description="confidence of the label (paper section 2.7)")
    decided_by: str | None = Field(default=None, description="SOP Instance UID of the image that decided")
    image_uids: list[str] = []


class ExamResult(_Decided):
    label: Label
    malignancy_probability: float = Field(ge=0.0, le=1.0)
    probability: float = Field(ge=0.0, le=1.0)


class ModelInfo(BaseModel):
    role: str = Field(description="detector, sppnet, pathotype_incl, pathotype_excl, er, descriptors (the "
                                  "descriptor head) or descriptor_mapping (descriptors -> P(malignant))")
    name: str
    version: str
    sha256: str
    synthetic_only: bool = False
    runtime: str | None = Field(default=None, description="the detector's: eager (PyTorch) or onnxruntime (its "
                                "backbone in ONNX Runtime, checked against PyTorch at load); None for other roles")


class StudyResult(BaseModel):
    """Everything mccad concluded about one study; JSON-serialisable and the content of every output object."""

    schema_version: int = 3
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
        models = sorted(self.models, key=lambda m: m.role)
        return ";".join(f"{m.role}={m.name}@{m.version}:{m.sha256[:12]}" for m in models)
