"""A detector run on standardised images the way the product runs it: the one path of the pipeline, of evaluation
and of validation during training.

Steps, for each standardised image (chest wall on the left, values in [0, 1]):

1. detection: the whole image through ``models.detector.detect`` (the paper's mode: torchvision resizes it to the
   config's ``min_size`` / ``max_size``), or tile by tile at native resolution for a crops-trained detector
   (``models.tiling.TilingSpec.detect``);
2. the breast gate, when the detector has one (``models.breast_gate``): boxes centred outside the breast are dropped;
3. the operating point: the score threshold and the released code's cross-class suppression
   (``models.fusion.suppress_cross_class``), after the gate, so that a box outside the breast cannot suppress one
   inside it.

Evaluation asks for every box instead (``keep_all``): the score threshold lowered to ``EVALUATION_SCORE_FLOOR`` and
no cross-class suppression, so that FROC sees the whole score range; :func:`at_operating_point` then keeps what the
product shows. That is the only difference between the two readings: both detect, tile and gate alike, so the boxes
are the same.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from models.breast_gate import BreastGate, gate_spacing_mm
from models.detector import Detections, DetectorConfig, detect
from models.fusion import suppress_cross_class
from models.preprocess import StandardiseConfig, standardise_config_from
from models.tiling import TilingSpec

#: the score threshold of a ``keep_all`` reading (or the detector's own, when lower)
EVALUATION_SCORE_FLOOR = 0.01


def kept_at_operating_point(boxes: np.ndarray, labels: Sequence[int | str] | np.ndarray,
                            scores: Sequence[float] | np.ndarray, score_thresh: float,
                            cross_class_suppression: bool, cross_class_iou: float) -> np.ndarray:
    """Indices (ascending) of the boxes the product shows at an operating point.

    Args:
        boxes: ``(N, 4)`` boxes ``x0, y0, x1, y1``, any pixel grid.
        labels: per box, a class id (1 benign, 2 malignant) or name.
        scores: per box, its score.
        score_thresh: boxes scoring below it are dropped.
        cross_class_suppression: whether a benign box overlapping a malignant one is dropped (after the threshold).
        cross_class_iou: the IoU above which it is.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    keep = np.flatnonzero(scores >= score_thresh)
    if cross_class_suppression and len(keep):
        kept_labels = [labels[i] for i in keep]
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        keep = keep[suppress_cross_class(boxes[keep], kept_labels, scores[keep], iou=cross_class_iou)]
    return keep


def at_operating_point(detections: Detections, config: DetectorConfig) -> Detections:
    """The boxes of a ``keep_all`` reading that the product shows at ``config``'s operating point (its
    ``score_thresh``, ``cross_class_suppression`` and ``cross_class_iou``), in their order."""
    return detections.take(kept_at_operating_point(detections.boxes, detections.labels, detections.scores,
                                                   config.score_thresh, config.cross_class_suppression,
                                                   config.cross_class_iou))


@dataclass(frozen=True)
class DetectorRunner:
    """Runs a detector on standardised images as the product does (module docstring).

    Args:
        model: the FPNNet (``models.detector.build_detector``), or its ONNX Runtime twin
            (``models.onnx_runtime.detection_model``); its thresholds are set from ``config`` on every call.
        config: the network's post-processing and operating point (``DetectorConfig``: ``score_thresh``,
            ``nms_thresh``, ``detections_per_img``, ``cross_class_suppression``, ``cross_class_iou``, ``score_mode``).
        tiling: how a crops-trained detector reads a whole image tile by tile; None: the whole image at once.
        breast_gate: the gate applied after detection; None: no gate.
        spacing_mm: the pixel spacing the gate is given for a standardised image
            (``models.breast_gate.gate_spacing_mm``).

    Example::

        runner = DetectorRunner.from_manifest(model, config, manifest)
        shown = runner([image])[0]                  # what the product reports
        every = runner([image], keep_all=True)[0]   # what FROC needs; at_operating_point(every, config) == shown
    """

    model: torch.nn.Module
    config: DetectorConfig
    tiling: TilingSpec | None = None
    breast_gate: BreastGate | None = None
    spacing_mm: float = gate_spacing_mm(StandardiseConfig())

    @classmethod
    def from_specs(cls, model: torch.nn.Module, config: DetectorConfig, standardise: StandardiseConfig,
                   tiling: Mapping[str, Any] | None = None,
                   breast_gate: Mapping[str, Any] | None = None) -> "DetectorRunner":
        """A runner from a detector's recorded settings (a manifest's ``input_spec`` or a training run's build
        record): its standardisation (which sets the gate's spacing), its ``tiling`` (``TilingSpec`` fields; None:
        whole images) and its ``breast_gate`` (``BreastGate`` fields; None: no gate)."""
        return cls(model, config, TilingSpec(**tiling) if tiling else None,
                   BreastGate.from_spec(None if breast_gate is None else dict(breast_gate)),
                   gate_spacing_mm(standardise))

    @classmethod
    def from_manifest(cls, model: torch.nn.Module, config: DetectorConfig, manifest: Any) -> "DetectorRunner":
        """A runner for a detector folder's model, as ``models.registry.load_detector`` returns it with its config
        and manifest (``input_spec``: ``standardise``, ``tiling``, ``breast_gate``)."""
        spec = manifest.input_spec
        return cls.from_specs(model, config, standardise_config_from(spec.get("standardise", {})),
                              spec.get("tiling"), spec.get("breast_gate"))

    def detection_config(self, keep_all: bool = False) -> DetectorConfig:
        """The config the network runs with: the runner's, without the cross-class suppression when it must wait
        for the gate; with ``keep_all``, at a score threshold of at most ``EVALUATION_SCORE_FLOOR`` and with no
        cross-class suppression at all."""
        if keep_all:
            return replace(self.config, score_thresh=min(EVALUATION_SCORE_FLOOR, self.config.score_thresh),
                           cross_class_suppression=False)
        if self.breast_gate is None:
            return self.config
        return replace(self.config, cross_class_suppression=False)

    def __call__(self, images: Sequence[torch.Tensor], *, keep_all: bool = False,
                 timings: MutableMapping[str, float] | None = None) -> list[Detections]:
        """Detections of standardised images.

        Args:
            images: per image, a ``(1, H, W)`` tensor in [0, 1] (the standardised image, on any device).
            keep_all: every box down to ``EVALUATION_SCORE_FLOOR``, no cross-class suppression (evaluation);
                False: the boxes the product reports.
            timings: when given, the seconds spent detecting and gating are added to its ``"detect"`` and
                ``"breast_gate"`` entries.

        Returns:
            One ``Detections`` per image, boxes in the standardised image's pixels, by falling score within a class.
        """
        if not images:
            return []
        started = time.perf_counter()
        config = self.detection_config(keep_all)
        if self.tiling is None:
            detections = detect(self.model, list(images), config)
        else:
            detections = [self.tiling.detect(self.model, image, config) for image in images]
        if timings is not None:
            timings["detect"] = timings.get("detect", 0.0) + time.perf_counter() - started
        if self.breast_gate is None:
            return detections
        started = time.perf_counter()
        detections = [self.gate(det, image, keep_all) for det, image in zip(detections, images, strict=True)]
        if timings is not None:
            timings["breast_gate"] = timings.get("breast_gate", 0.0) + time.perf_counter() - started
        return detections

    def gate(self, detections: Detections, image: torch.Tensor, keep_all: bool = False) -> Detections:
        """The breast gate on ``detections`` of ``image`` (a ``(1, H, W)`` standardised image), then, unless
        ``keep_all``, the operating point: the cross-class suppression runs after the gate, so that a malignant box
        outside the breast cannot suppress a benign one inside it. Without a gate, ``detections`` as they are (the
        network applied the operating point)."""
        if self.breast_gate is None:
            return detections
        kept = self.breast_gate.apply(detections, image[0].detach().cpu().numpy(), self.spacing_mm)
        return kept if keep_all else at_operating_point(kept, self.config)
