"""Training FPNNet, the Faster R-CNN detector (paper sections 2.5-2.6; torchvision detection references' loop).

Defaults are the released code's: SGD, lr 0.005, momentum 0.9, weight decay 5e-4, StepLR every 10 epochs by 0.3,
batch size 1, horizontal flips. Adam (the paper's text) is an option. Images are standardised once per run with the
``max_side`` that export writes into the manifest, so inference sees what training saw.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from models.breast_gate import BreastGate, gate_spacing_mm
from models.detect import DetectorRunner, at_operating_point
from models.detector import Detections, DetectorConfig, build_detector, to_three_channels
from models.fusion import image_verdict
from models.preprocess import StandardiseConfig
from models.registry import MANIFEST, load_detector, load_manifest
from models.tiling import TilingSpec
from training.datasets.images import PreparedImage, prepare_all
from training.datasets.samples import Sample
from training.evaluation.froc import FrocImage, froc
from training.trainers.augment import augment
from training.trainers.common import (BEST_CHECKPOINT, LoopSpec, TrainingError, TrainRun, fit, load_checkpoint,
                                      select_device)

log = logging.getLogger(__name__)

KIND = "detector"
#: with ``monitor = "val_froc_sens_at_1fp"``, epochs tied there are told apart by the mean FROC sensitivity over
#: 0.25-4 FP per image (the GPU recipe's 40 validation images tied 0.4.0's epochs 3 and 5 at 0.77, the CPU
#: fine-tune's 24 tied epochs 1-3, and the first of them was kept)
FROC_TIE_BREAK = "val_froc_mean_sens"


@dataclass
class DetectorTrainConfig:
    """One detector experiment (saved as the run's ``config.toml``)."""

    epochs: int
    lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 5e-4
    step_size: int = 10
    gamma: float = 0.3
    optimizer: Literal["sgd", "adam"] = "sgd"
    batch_size: int = 1
    hflip: bool = True
    intensity_aug: bool = True
    seed: int = 0
    max_side: int | None = 640  # 0 or None: no cap (TOML has no null)
    column_tolerance: float = 0.01
    spacing_mm: float | None = None  # resample every image to this pixel spacing first (crops at native resolution)
    # tiled inference for models trained on crops: written into the manifest, used by the pipeline and
    # by evaluation on whole images; None keeps the paper's whole-image mode; the others default to TilingSpec's
    tile: int | None = None
    tile_overlap: int = TilingSpec.overlap
    tile_batch: int = TilingSpec.batch
    # drop boxes centred outside the breast (models.breast_gate, margin 0): written into the manifest, used by the
    # pipeline and by evaluation on whole images (`mccad evaluate --no-breast-gate` measures without it)
    breast_gate: bool = True
    detector: dict[str, Any] = field(default_factory=dict)
    backbone_weights: str | None = None
    # warm start: a detector folder (manifest.json, e.g. the shipped models/weights/default/detector) or a training
    # run folder (best.pt) of the same architecture; its weights replace the initial ones (fine-tuning on own data)
    init_from: str | None = None
    num_workers: int = 0  # processes decoding images when the run starts (0: in this process)
    threads: int | None = None  # torch CPU threads (None: torch's default)
    amp: bool = True
    early_stop_patience: int | None = None
    time_budget_min: float | None = None  # stop after the epoch that reaches this much training time
    samples_per_epoch: int | None = None  # at most this many images per epoch (short epochs on large crop sets)
    monitor: Literal["val_auc", "val_froc_sens_at_1fp"] = "val_auc"  # what best.pt and early stopping follow
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.monitor not in ("val_auc", "val_froc_sens_at_1fp"):
            raise ValueError(f"monitor must be 'val_auc' or 'val_froc_sens_at_1fp', got {self.monitor!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.detector = dict(self.detector)
        DetectorConfig.from_dict(self.detector)  # fail now on a typo, not after an epoch
        if self.tile is not None and not 0 <= self.tile_overlap < self.tile:
            raise ValueError(f"need 0 <= tile_overlap < tile, got {self.tile_overlap} and {self.tile}")
        if self.tile_batch < 1:  # else the run trains and only its tiled evaluation / inference fails
            raise ValueError(f"tile_batch must be at least 1, got {self.tile_batch}")
        if self.samples_per_epoch is not None and self.samples_per_epoch < 1:  # a negative slice drops images
            raise ValueError(f"samples_per_epoch must be at least 1, got {self.samples_per_epoch}")
        if self.time_budget_min is not None and self.time_budget_min <= 0:  # 0 meant no budget, < 0 no epoch
            raise ValueError(f"time_budget_min must be positive, got {self.time_budget_min}")
        self.standardise_config()  # likewise for the spacing

    def detector_config(self) -> DetectorConfig:
        return DetectorConfig.from_dict(self.detector)

    def standardise_config(self) -> StandardiseConfig:
        return StandardiseConfig(column_tolerance=self.column_tolerance, max_side=self.max_side or None,
                                 spacing_mm=self.spacing_mm)

    def tiling(self) -> dict[str, int] | None:
        """The manifest's ``input_spec["tiling"]`` (``models.tiling.TilingSpec``), or None for whole images."""
        if self.tile is None:
            return None
        return {"tile": self.tile, "overlap": self.tile_overlap, "batch": self.tile_batch}

    def breast_gate_spec(self) -> dict[str, float] | None:
        """The manifest's ``input_spec["breast_gate"]`` (``models.breast_gate.BreastGate``, margin 0), or None."""
        return breast_gate_spec(self.breast_gate)


def breast_gate_spec(enabled: bool) -> dict[str, float] | None:
    """What a detector run with ``breast_gate = enabled`` records and exports: the default gate (margin 0) or
    None. One rule for the trainer and for export reading a run made before the record existed."""
    return BreastGate().to_spec() if enabled else None


def _initial_state(source: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The weights ``init_from`` names, and where they came from in words (for the log)."""
    if not source.exists():
        raise TrainingError(f"init_from {source} does not exist")
    if (source / MANIFEST).is_file():
        try:
            manifest = load_manifest(source)
            network = load_detector(source)[0] if manifest.role == KIND else None
        except Exception as exc:  # noqa: BLE001 - any unreadable folder is the same user error
            raise TrainingError(f"init_from {source} is not a readable detector folder: {exc}") from exc
        if network is None:
            raise TrainingError(f"init_from {source} holds a {manifest.role} model, not a detector")
        return network.state_dict(), f"{manifest.name} {manifest.version}"
    if (source / BEST_CHECKPOINT).is_file():
        checkpoint = load_checkpoint(source / BEST_CHECKPOINT)
        if checkpoint.get("kind") != KIND:
            raise TrainingError(f"init_from {source} holds a {checkpoint.get('kind')} model, not a detector")
        return checkpoint["model"], f"run {source.name}, epoch {checkpoint.get('epoch')}"
    raise TrainingError(f"init_from {source} is neither a detector folder ({MANIFEST}) nor a finished run "
                        f"({BEST_CHECKPOINT})")


def load_initial_weights(model: torch.nn.Module, source: Path) -> None:
    """Copy a trained detector's weights into ``model`` (``init_from``): from a model folder (``manifest.json``) or
    a finished training run (``best.pt``). Shapes must match exactly: a warm start that silently skipped a mismatched
    head would train a different model than the config says."""
    state, origin = _initial_state(source)
    # BatchNorm's batch counters are not weights (exported bundles leave them out): they may be missing
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    mismatched = sorted(k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape))
    if mismatched or set(state) - set(own):
        raise TrainingError(f"init_from {source} has another architecture than this experiment's detector "
                            f"(first differing weights: {(mismatched or sorted(set(state) - set(own)))[:3]})")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
    log.info("detector weights initialised from %s (%s)", source, origin)


def make_optimizer(params: list[torch.nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def detector_targets(item: PreparedImage, boxes: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    return {"boxes": torch.as_tensor(boxes, dtype=torch.float32, device=device).reshape(-1, 4),
            "labels": torch.as_tensor(item.label_ids, dtype=torch.int64, device=device)}


def is_whole_image(pixels: np.ndarray, tiling: TilingSpec | None) -> bool:
    """Whether a standardised validation image is run tile by tile: a crops-trained model (``tiling``) on an image
    larger than one tile."""
    return tiling is not None and max(pixels.shape[-2:]) > tiling.tile


def validation_detections(runner: DetectorRunner, pixels: np.ndarray, device: torch.device) -> Detections:
    """Every detection (``keep_all``: low threshold, no cross-class suppression) of one standardised image, made as
    ``training.evaluation.predict`` makes them for the exported model (``runner``: tile by tile and gated) when it is
    a whole image, else in the model's own whole-input mode, ungated (a training-sized crop)."""
    tensor = torch.from_numpy(np.ascontiguousarray(pixels))[None].to(device)
    if not is_whole_image(pixels, runner.tiling):
        runner = dataclasses.replace(runner, tiling=None, breast_gate=None)
    return runner([tensor], keep_all=True)[0]


def validate_detector(model: torch.nn.Module, items: Sequence[PreparedImage], config: DetectorConfig,
                      device: torch.device, tiling: TilingSpec | None = None, gate: BreastGate | None = None,
                      spacing_mm: float = 0.1) -> dict[str, float]:
    """Image-level AUC by the paper's rule (section 2.6), lesion FROC sensitivity at 0.5, 1 and 2 FP per image and
    the lowest score threshold with at most 1 FP per image (NaN when even the highest makes more).

    Detection keeps every box (``models.detect.DetectorRunner`` with ``keep_all``) so that FROC sees the whole score
    range; the image verdict then uses the boxes the product shows (``models.detect.at_operating_point``).

    With ``tiling``, a validation image larger than a tile is a whole mammogram: it is detected tile by tile and
    passed through the breast gate (``gate``), exactly as the pipeline and ``mccad evaluate`` run the exported model.
    That is the number the shipped model is judged by: crops, each holding a cluster or a look-alike, saturate near
    0.95 at 1 FP per crop while whole images (about 15 normal tiles per tile with a cluster) stay far lower, so
    ``best.pt`` chosen on crops says little about whole images. Crops (no larger than a tile) run as before.
    """
    from training.evaluation.metrics import binary_auc

    runner = DetectorRunner(model, config, tiling, gate, spacing_mm)
    y_true, y_score, froc_images = [], [], []
    whole = 0
    for item in items:
        whole += is_whole_image(item.pixels, tiling)
        det = validation_detections(runner, item.pixels, device)
        shown = at_operating_point(det, config)
        verdict = image_verdict([int(v) for v in shown.labels], [float(s) for s in shown.scores])
        y_true.append(item.sample.target)
        y_score.append(verdict.malignancy_probability)
        froc_images.append(FrocImage(gt_boxes=item.boxes, pred_boxes=det.boxes, pred_scores=det.scores))
    model.train()
    curve = froc(froc_images)
    return {"val_auc": binary_auc(y_true, y_score), "val_froc_sens_at_1fp": curve.at_rates[1.0],
            "val_froc_sens_at_0.5fp": curve.at_rates[0.5], "val_froc_sens_at_2fp": curve.at_rates[2.0],
            # the whole curve (0.25-4 FP per image): what decides between epochs tied at 1 FP (FROC_TIE_BREAK)
            "val_froc_mean_sens": float(np.mean(list(curve.at_rates.values()))),
            # the operating point this epoch would have on images like these (mccad export --score-thresh)
            "val_threshold_at_1fp": _or_nan(curve.threshold_at(1.0)),
            "val_images": float(len(items)), "val_whole_images": float(whole)}


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def train_detector(train: Sequence[Sample], val: Sequence[Sample] | None, cfg: DetectorTrainConfig, out_dir: Path,
                   resume: bool = True, progress: bool = True) -> TrainRun:
    """Train FPNNet on ``train`` (boxes with benign/malignant labels), validating on ``val`` each epoch.

    Writes ``out_dir/last.pt`` (resumable), ``best.pt`` (best validation AUC, or the last epoch without validation),
    ``config.toml`` and ``metrics.jsonl``. Returns the run summary.
    """
    if not train:
        raise TrainingError("the detector training set is empty")
    device = select_device(cfg.device)
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed only
    det_cfg = cfg.detector_config()
    model = build_detector(det_cfg, backbone_weights=cfg.backbone_weights).to(device)
    if cfg.init_from:
        load_initial_weights(model, Path(cfg.init_from))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    std_cfg = cfg.standardise_config()
    items = prepare_all(train, std_cfg, progress=progress, workers=cfg.num_workers)
    val_items = prepare_all(val, std_cfg, progress=progress, workers=cfg.num_workers) if val else []
    if not any(len(it.boxes) for it in items):
        raise TrainingError("no training image has a usable box: the detector has nothing to learn from")

    def order(epoch: int, gen: torch.Generator) -> list[int]:
        return torch.randperm(len(items), generator=gen).tolist()[:cfg.samples_per_epoch or len(items)]

    def batch_loss(indices: Sequence[int], gen: torch.Generator) -> dict[str, torch.Tensor]:
        images, targets = [], []
        for i in indices:
            item = items[i]
            img, boxes = augment(item.pixels, item.boxes, gen, hflip=cfg.hflip, intensity=cfg.intensity_aug)
            images.append(to_three_channels(img.to(device)))
            targets.append(detector_targets(item, boxes, device))
        return model(images, targets)

    validate = None
    if val_items:
        tiling = TilingSpec(**cfg.tiling()) if cfg.tiling() else None
        gate = BreastGate.from_spec(cfg.breast_gate_spec())

        def validate(m: torch.nn.Module) -> dict[str, float]:
            return validate_detector(m, val_items, det_cfg, device, tiling=tiling, gate=gate,
                                     spacing_mm=gate_spacing_mm(std_cfg))

    spec = LoopSpec(kind=KIND, model=model, optimizer=optimizer, scheduler=scheduler, batch_size=cfg.batch_size,
                    order=order, batch_loss=batch_loss, validate=validate, monitor=cfg.monitor,
                    tie_break=FROC_TIE_BREAK if cfg.monitor == "val_froc_sens_at_1fp" else None,
                    build_info={"detector_config": det_cfg.to_dict(),
                                "standardise": dataclasses.asdict(std_cfg), "tiling": cfg.tiling(),
                                "breast_gate": cfg.breast_gate_spec(),
                                "train_images": len(items), "val_images": len(val_items)})
    return fit(spec, cfg, out_dir, resume=resume, progress=progress, device=device)
