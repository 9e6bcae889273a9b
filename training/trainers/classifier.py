"""Training SPPNet, the whole-image baseline (paper section 2.5: ResNet18 + spatial pyramid pooling, image-level
labels), and the shared classifier loop that the patch heads reuse (``training.trainers.patches``).

Inputs are prepared as the pipeline prepares them: section 2.4 standardisation, then ``models.classifier.fit_to_square``
to ``ClassifierConfig.input_size`` (aspect kept, zero padded), grey in [0, 1]; SPPNet normalises inside itself.
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
import torch.nn.functional as F

from models.classifier import ClassifierConfig, build_classifier, classify, fit_to_square
from models.preprocess import StandardiseConfig
from training.datasets.images import prepare_all
from training.datasets.samples import Sample
from training.evaluation.metrics import binary_auc
from training.trainers.augment import augment
from training.trainers.common import LoopSpec, TrainingError, TrainRun, fit, select_device
from training.trainers.detector import make_optimizer

log = logging.getLogger(__name__)

KIND = "sppnet"


@dataclass
class SPPNetTrainConfig:
    """One SPPNet experiment (saved as the run's ``config.toml``).

    Adam at 1e-4 by default (the paper's section 2.6 names Adam): the spatial pyramid feeds 512 x 21 max-pooled
    features into one linear layer, and SGD at the detector's 0.005 makes its logits diverge from scratch.
    """

    epochs: int
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    step_size: int = 10
    gamma: float = 0.3
    optimizer: Literal["sgd", "adam"] = "adam"
    batch_size: int = 8
    hflip: bool = True
    intensity_aug: bool = True
    balanced_sampling: bool = False
    seed: int = 0
    max_side: int | None = 640
    column_tolerance: float = 0.01
    classifier: dict[str, Any] = field(default_factory=dict)
    backbone_weights: str | None = None
    num_workers: int = 0  # processes decoding images when the run starts (0: in this process)
    threads: int | None = None  # torch CPU threads (None: torch's default)
    amp: bool = True
    early_stop_patience: int | None = None
    time_budget_min: float | None = None  # stop after the epoch that reaches this much training time
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.classifier = dict(self.classifier)
        ClassifierConfig.from_dict(self.classifier)

    def classifier_config(self) -> ClassifierConfig:
        return ClassifierConfig.from_dict(self.classifier)

    def standardise_config(self) -> StandardiseConfig:
        return StandardiseConfig(column_tolerance=self.column_tolerance, max_side=self.max_side or None)


def balanced_order(targets: Sequence[int], gen: torch.Generator) -> list[int]:
    """As many draws as items, with replacement, each class equally likely (class-balanced sampling)."""
    t = torch.as_tensor(list(targets), dtype=torch.int64)
    counts = torch.bincount(t, minlength=2).clamp(min=1).double()
    weights = (1.0 / counts)[t]
    return torch.multinomial(weights, len(t), replacement=True, generator=gen).tolist()


def train_classifier_items(kind: str, pixels: Sequence[np.ndarray], targets: Sequence[int],
                           val_pixels: Sequence[np.ndarray], val_targets: Sequence[int], cfg: Any,
                           clf_cfg: ClassifierConfig, size: int, out_dir: Path, *, resume: bool, progress: bool,
                           build_info: dict[str, Any]) -> TrainRun:
    """The loop shared by SPPNet and the patch heads: cross-entropy on (pixels, 0/1 target) pairs."""
    if not pixels:
        raise TrainingError(f"the {kind} training set is empty")
    if len(set(int(t) for t in targets)) < 2:
        log.warning("%s: the training set holds one class only; the model cannot learn to separate classes", kind)
    device = select_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_classifier(clf_cfg, backbone_weights=cfg.backbone_weights).to(device)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    target_list = [int(t) for t in targets]

    def order(epoch: int, gen: torch.Generator) -> list[int]:
        if cfg.balanced_sampling:
            return balanced_order(target_list, gen)
        return torch.randperm(len(target_list), generator=gen).tolist()

    def batch_loss(indices: Sequence[int], gen: torch.Generator) -> dict[str, torch.Tensor]:
        batch = []
        for i in indices:
            img, _ = augment(pixels[i], np.zeros((0, 4), np.float32), gen, hflip=cfg.hflip,
                             intensity=cfg.intensity_aug)
            batch.append(fit_to_square(img, size))
        x = torch.stack(batch).to(device)
        y = torch.as_tensor([target_list[i] for i in indices], dtype=torch.int64, device=device)
        return {"loss_classifier": F.cross_entropy(model(x), y)}

    validate = None
    if len(val_pixels):
        val_tensors = [torch.from_numpy(np.ascontiguousarray(p))[None] for p in val_pixels]

        def validate(m: torch.nn.Module) -> dict[str, float]:
            probs = classify(m, val_tensors, clf_cfg, size=size)[:, 1]
            m.train()
            yt = np.asarray(val_targets, dtype=np.int64)
            return {"val_auc": binary_auc(yt, probs), "val_accuracy": float(np.mean((probs > 0.5) == (yt == 1))),
                    "val_images": float(len(yt))}

    spec = LoopSpec(kind=kind, model=model, optimizer=optimizer, scheduler=scheduler, batch_size=cfg.batch_size,
                    order=order, batch_loss=batch_loss, validate=validate, monitor="val_auc",
                    build_info={"classifier_config": clf_cfg.to_dict(), "input_side": size, **build_info})
    return fit(spec, cfg, out_dir, resume=resume, progress=progress, device=device)


def train_sppnet(train: Sequence[Sample], val: Sequence[Sample] | None, cfg: SPPNetTrainConfig, out_dir: Path,
                 resume: bool = True, progress: bool = True) -> TrainRun:
    """Train the image-level SPPNet on benign/malignant image labels; files as ``train_detector`` writes them."""
    clf_cfg = cfg.classifier_config()
    std_cfg = cfg.standardise_config()
    items = prepare_all(train, std_cfg, progress=progress, workers=cfg.num_workers)
    val_items = prepare_all(val, std_cfg, progress=progress, workers=cfg.num_workers) if val else []
    return train_classifier_items(
        KIND, [it.pixels for it in items], [it.sample.target for it in items],
        [it.pixels for it in val_items], [it.sample.target for it in val_items], cfg, clf_cfg, clf_cfg.input_size,
        out_dir, resume=resume, progress=progress,
        build_info={"standardise": dataclasses.asdict(std_cfg), "train_images": len(items),
                    "val_images": len(val_items)})
