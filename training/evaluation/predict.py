"""Run a trained model over an annotated dataset and keep what evaluation needs (``ImagePrediction`` per image).

Images are prepared as the pipeline prepares them (section 2.4 standardisation with the model's own settings);
detector boxes are mapped back to original pixels. A detector runs as the product runs it (``models.detect``: whole
image or tile by tile, then its breast gate; ``mccad evaluate --no-breast-gate`` turns the gate off) but keeps every
box (``keep_all``: a low score threshold, no cross-class suppression) so that FROC sees the whole score range;
``training.evaluation.evaluate`` applies the operating point.
The training-free spot detector (``models.spot_detector``, a manifest without weights) reads each image at its own
pixel pitch instead, unstandardised (it finds the breast itself), and gives one box per cluster.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.detect import DetectorRunner
from models.preprocess import StandardiseConfig, standardise_config_from
from models.spot_detector import SpotDetectorConfig, detect_clusters
from training.datasets.images import prepare
from training.datasets.samples import Sample
from training.evaluation.evaluate import ImagePrediction, OperatingPoint

LABEL_NAMES = {1: "benign", 2: "malignant"}


@dataclasses.dataclass
class LoadedModel:
    kind: str  # detector, sppnet or spots (patch heads are evaluated on patches, not here)
    model: torch.nn.Module | None  # None for the spot detector, whose network_config is its SpotDetectorConfig
    network_config: Any
    standardise: StandardiseConfig
    description: dict[str, Any]
    tiling: dict[str, int] | None = None  # a detector trained on crops runs tile by tile (models.tiling)
    #: the manifest's ``input_spec["breast_gate"]`` (``models.breast_gate.BreastGate``); None: no gate
    breast_gate: dict[str, float] | None = None
    #: the spot detector's operating point (its manifest's ``thresholds["score_thresh"]``); None for the others
    score_thresh: float | None = None

    @property
    def operating_point(self) -> OperatingPoint:
        if self.kind == "spots":  # one class: nothing for a cross-class suppression to do
            return OperatingPoint(float(self.score_thresh if self.score_thresh is not None else 0.0),
                                  cross_class_suppression=False)
        if self.kind != "detector":
            return OperatingPoint()
        c = self.network_config
        return OperatingPoint(c.score_thresh, c.cross_class_suppression, c.cross_class_iou)


def load_model(path: Path, device: str = "cpu") -> LoadedModel:
    """A registry folder (``manifest.json``) or a training run folder (``best.pt``)."""
    path = Path(path)
    if (path / "manifest.json").is_file():
        from models.registry import load_classifier, load_detector, load_manifest, load_spot_detector
        from models.spot_detector import ARCHITECTURE as SPOTS_ARCHITECTURE

        manifest = load_manifest(path)
        desc = {"source": str(path), "name": manifest.name, "version": manifest.version, "role": manifest.role,
                "sha256": manifest.sha256}
        if manifest.architecture == SPOTS_ARCHITECTURE:
            spots, manifest = load_spot_detector(path)
            return LoadedModel("spots", None, spots, StandardiseConfig(), desc,
                               score_thresh=float(manifest.thresholds["score_thresh"]))
        std = standardise_config_from(manifest.input_spec.get("standardise", {}))
        if manifest.architecture.startswith("fpnnet-"):
            model, cfg, _ = load_detector(path, device=device)
            return LoadedModel("detector", model, cfg, std, desc, manifest.input_spec.get("tiling"),
                               manifest.input_spec.get("breast_gate"))
        if manifest.role != "sppnet":
            raise ValueError(f"{path} is a {manifest.role} patch head; whole-image evaluation takes a detector or "
                             "an SPPNet model")
        model, cfg, _ = load_classifier(path, device=device)
        return LoadedModel("sppnet", model, cfg, std, desc)
    from training.export import load_run

    run = load_run(path)
    std = standardise_config_from(run.standardise)
    desc = {"source": str(path), "name": f"run:{path.name}", "version": f"epoch {run.checkpoint.get('epoch')}",
            "role": run.role}
    return LoadedModel(run.kind, run.model.to(device), run.network_config, std, desc, run.tiling, run.breast_gate)


def predict_spots(config: SpotDetectorConfig, sample: Sample) -> ImagePrediction:
    """The spot detector's clusters on one sample (``models.spot_detector.detect_clusters`` with ``config``, a
    ``SpotDetectorConfig``): the image at the pitch its file states (the mean of row and column spacing), else at
    ``config.assumed_spacing_mm``. Every box is labelled malignant, meaning a cluster the rule calls suspicious (the
    detector does not tell benign from malignant), so that its score is the box's P(malignant) for every level."""
    from training.datasets.images import load_pixels, pixel_spacing

    spacing = pixel_spacing(sample)
    spacing_mm = float(np.mean(spacing)) if spacing is not None else config.assumed_spacing_mm
    found = detect_clusters(load_pixels(sample), spacing_mm, config, view=sample.view, laterality=sample.breast)
    return ImagePrediction(sample.image_id, found.boxes, ["malignant"] * len(found), found.scores)


def detector_runner(loaded: LoadedModel) -> DetectorRunner:
    """The product's reading of a loaded detector (``models.detect``): its tiling, breast gate and operating point."""
    if loaded.kind != "detector" or loaded.model is None:
        raise ValueError(f"a {loaded.kind} model is not a detector")
    return DetectorRunner.from_specs(loaded.model, loaded.network_config, loaded.standardise, loaded.tiling,
                                     loaded.breast_gate)


def predict(loaded: LoadedModel, samples: Sequence[Sample], progress: bool = False) -> list[ImagePrediction]:
    """One ImagePrediction per sample (boxes in original pixels for the detector, P(malignant) for SPPNet)."""
    from models.classifier import classify

    items: Any = samples
    if progress:
        from tqdm import tqdm

        items = tqdm(samples, desc="predict", unit="img")
    if loaded.kind == "spots":
        return [predict_spots(loaded.network_config, sample) for sample in items]
    assert loaded.model is not None
    device = next(loaded.model.parameters()).device
    runner = detector_runner(loaded) if loaded.kind == "detector" else None
    out = []
    for sample in items:
        prep = prepare(sample, loaded.standardise)
        tensor = torch.from_numpy(np.ascontiguousarray(prep.pixels))[None].to(device)
        if runner is not None:
            (det,) = runner([tensor], keep_all=True)
            boxes = prep.cmap.boxes_to_original(det.boxes.astype(np.float64)) if len(det) else np.zeros((0, 4))
            malignancy = None if det.malignancy is None else det.malignancy.astype(np.float64)
            out.append(ImagePrediction(sample.image_id, boxes, [LABEL_NAMES[int(v)] for v in det.labels],
                                       det.scores.astype(np.float64), malignancy=malignancy))
        elif loaded.kind == "sppnet":
            p = float(classify(loaded.model, [tensor], loaded.network_config)[0, 1])
            out.append(ImagePrediction(sample.image_id, image_probability=p))
        else:
            raise ValueError(f"{loaded.kind} models are evaluated on lesion patches, not whole images")
    return out
