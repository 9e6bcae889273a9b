"""Training the patch heads: SPPNet on malignant lesion patches for pathotype and ER status (paper section 3.4).

Tasks (class 1 is the first-named class of each, as the paper states them):

- ``pathotype_incl``: invasive including microinvasion (1) vs pure DCIS (0) (Table 4, first grouping);
- ``pathotype_excl``: invasive excluding microinvasion (1) vs DCIS with or without microinvasion (0) ("Class 1" and
  "Class 2" of section 3.4);
- ``er``: ER positive (1) vs ER negative (0).

Patches are cut from the standardised image around the ground-truth boxes of malignant lesions with the pipeline's
own ``crop_patch`` (square, 25% margin, ``patch_size``), so the heads see at training what the pipeline feeds them.
The classes are heavily imbalanced in the paper (2764 invasive vs 231 DCIS), so class-balanced sampling is on by
default.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from models.classifier import ClassifierConfig
from models.pipeline import crop_patch
from models.preprocess import StandardiseConfig
from training.datasets.images import PreparedImage, prepare_all
from training.datasets.samples import Lesion, Sample
from training.trainers.classifier import train_classifier_items
from training.trainers.common import TrainingError, TrainRun

log = logging.getLogger(__name__)

KIND = "patches"
TASKS = ("pathotype_incl", "pathotype_excl", "er")


def patch_target(lesion: Lesion, task: str) -> int | None:
    """The 0/1 target of a lesion for a task, or None when the lesion does not take part (benign, or unknown)."""
    if lesion.label != "malignant":
        return None
    if task == "pathotype_incl":
        return None if lesion.pathotype is None else int(lesion.pathotype in ("invasive", "dcis_microinvasion"))
    if task == "pathotype_excl":
        return None if lesion.pathotype is None else int(lesion.pathotype == "invasive")
    if task == "er":
        return None if lesion.er is None else int(lesion.er == "positive")
    raise ValueError(f"unknown patch task {task!r}; expected one of {TASKS}")


@dataclass
class PatchTrainConfig:
    """One patch-head experiment (saved as the run's ``config.toml``)."""

    epochs: int
    task: Literal["pathotype_incl", "pathotype_excl", "er"] = "pathotype_incl"
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    step_size: int = 10
    gamma: float = 0.3
    optimizer: Literal["sgd", "adam"] = "adam"
    batch_size: int = 16
    hflip: bool = True
    intensity_aug: bool = True
    balanced_sampling: bool = True
    seed: int = 0
    max_side: int | None = 640
    column_tolerance: float = 0.01
    patch_margin: float = 0.25
    classifier: dict[str, Any] = field(default_factory=dict)
    backbone_weights: str | None = None
    num_workers: int = 0  # processes decoding images when the run starts (0: in this process)
    threads: int | None = None  # torch CPU threads (None: torch's default)
    amp: bool = True
    early_stop_patience: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        self.classifier = dict(self.classifier)
        self.classifier_config()

    def classifier_config(self) -> ClassifierConfig:
        """Patches are classified at their own size: ``input_size`` is the patch size unless set explicitly."""
        spec = dict(self.classifier)
        if "input_size" not in spec:
            spec["input_size"] = spec.get("patch_size", ClassifierConfig().patch_size)
        return ClassifierConfig.from_dict(spec)

    def standardise_config(self) -> StandardiseConfig:
        return StandardiseConfig(column_tolerance=self.column_tolerance, max_side=self.max_side)


def lesion_patches(items: Sequence[PreparedImage], task: str, size: int,
                   margin: float = 0.25) -> tuple[list[np.ndarray], list[int]]:
    """The patches and 0/1 targets of every malignant lesion with a known class for ``task``."""
    patches, targets = [], []
    for item in items:
        for box, index in zip(item.boxes, item.lesion_index, strict=True):
            target = patch_target(item.sample.lesions[int(index)], task)
            if target is None:
                continue
            patches.append(crop_patch(item.pixels, box, size, margin=margin).astype(np.float32))
            targets.append(target)
    return patches, targets


def train_patch_head(train: Sequence[Sample], val: Sequence[Sample] | None, cfg: PatchTrainConfig, out_dir: Path,
                     resume: bool = True, progress: bool = True) -> TrainRun:
    """Train one patch head (``cfg.task``); files as ``train_detector`` writes them."""
    clf_cfg = cfg.classifier_config()
    std_cfg = cfg.standardise_config()
    items = prepare_all(train, std_cfg, progress=progress, workers=cfg.num_workers)
    val_items = prepare_all(val, std_cfg, progress=progress, workers=cfg.num_workers) if val else []
    patches, targets = lesion_patches(items, cfg.task, clf_cfg.patch_size, cfg.patch_margin)
    val_patches, val_targets = lesion_patches(val_items, cfg.task, clf_cfg.patch_size, cfg.patch_margin)
    if not patches:
        raise TrainingError(f"no malignant lesion in the training set has a known {cfg.task} class: the "
                            "annotations need pathotype / ER per malignant lesion (e.g. lesions.json)")
    log.info("%s: %d training patches (%d positive), %d validation patches", cfg.task, len(patches), sum(targets),
             len(val_patches))
    return train_classifier_items(
        KIND, patches, targets, val_patches, val_targets, cfg, clf_cfg, clf_cfg.input_size, out_dir,
        resume=resume, progress=progress,
        build_info={"standardise": dataclasses.asdict(std_cfg), "task": cfg.task, "train_patches": len(patches),
                    "val_patches": len(val_patches), "patch_margin": cfg.patch_margin})
