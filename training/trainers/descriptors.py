"""Training the descriptor head (``models.descriptor_head``): BI-RADS calcification type and distribution of a cluster.

The data is drawn by the simulator itself (``training.simulate.cluster_crops``), so this trainer takes no annotation
file. Three crop sets, each cached in the run folder:

* ``train``: ``train_crops`` crops (seed ``seed``) on the real sample mammograms ``train_real_images`` and phantoms;
* ``val``: ``val_crops`` crops (seed ``val_seed``) on the same real backgrounds, other phantoms: chooses the epoch
  (the highest mean of type and distribution accuracy, ``val_mean_accuracy``);
* ``test``: ``test_crops`` crops (seed ``test_seed``) on the other real mammograms ``test_real_images`` and phantoms
  of their own seed, measured once, on the kept epoch, into ``test_metrics.json``
  (``training.evaluation.descriptors``).

Loss: the sum of the type and distribution cross-entropies. Augmentation: the eight flips and quarter turns of a crop
(a cluster's look does not depend on its orientation). The run folder also receives the model folder ``descriptors/``
(weights, manifest with the test figures) ready to be copied into a bundle.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from models.descriptor_head import DescriptorHeadConfig, build_descriptor_net
from models.registry import ModelManifest, save_model
from training.evaluation.descriptors import crop_set_probabilities, descriptor_metrics
from training.simulate.cluster_crops import CropSet, CropSetSpec, cached_crop_set
from training.trainers.common import LoopSpec, TrainingError, TrainRun, fit, load_checkpoint, select_device

log = logging.getLogger(__name__)

KIND = "descriptors"
TEST_METRICS = "test_metrics.json"
PART = "descriptors"


@dataclass
class DescriptorTrainConfig:
    """One descriptor-head experiment (saved as the run's ``config.toml``)."""

    epochs: int
    train_crops: int = 2000
    val_crops: int = 250
    test_crops: int = 500
    seed: int = 0
    val_seed: int = 1
    test_seed: int = 2
    spacings: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.14, 0.2])
    train_real_images: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    test_real_images: list[int] = field(default_factory=lambda: [4, 5, 6, 7])
    phantom_fraction: float = 0.4
    phantoms: int = 2
    jitter: float = 0.15
    min_visible: int = 3
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    head: dict[str, Any] = field(default_factory=dict)
    workers: int = 1  # processes drawing crops (the crops are the same whatever their number)
    threads: int | None = None
    amp: bool = False
    early_stop_patience: int | None = None
    time_budget_min: float | None = None
    device: str = "auto"
    version: str = "0.1.0"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.train_crops < 1 or self.val_crops < 1 or self.test_crops < 0:
            raise ValueError("train_crops and val_crops must be at least 1, test_crops at least 0")
        if set(self.train_real_images) & set(self.test_real_images):
            raise ValueError(f"train_real_images {self.train_real_images} and test_real_images "
                             f"{self.test_real_images} share backgrounds: the test would not be held out")
        self.head = dict(self.head)
        self.head_config()

    def head_config(self) -> DescriptorHeadConfig:
        return DescriptorHeadConfig.from_dict(self.head)

    def crop_spec(self, which: str) -> CropSetSpec:
        """The ``CropSetSpec`` of the ``train``, ``val`` or ``test`` set."""
        n, seed, real = {"train": (self.train_crops, self.seed, self.train_real_images),
                         "val": (self.val_crops, self.val_seed, self.train_real_images),
                         "test": (self.test_crops, self.test_seed, self.test_real_images)}[which]
        return CropSetSpec(n=n, seed=seed, spacings=tuple(self.spacings), real_images=tuple(real),
                           phantom_fraction=self.phantom_fraction, phantoms=self.phantoms, jitter=self.jitter,
                           min_visible=self.min_visible, head=self.head_config())


#: the eight symmetries of a square: (quarter turns, flip)
_SYMMETRIES = [(k, flip) for k in range(4) for flip in (False, True)]


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    out = torch.empty_like(x)
    picks = torch.randint(len(_SYMMETRIES), (x.shape[0],), generator=gen).tolist()
    for i, pick in enumerate(picks):
        k, flip = _SYMMETRIES[pick]
        view = torch.rot90(x[i], k, dims=(1, 2))
        out[i] = torch.flip(view, dims=(2,)) if flip else view
    return out


def crop_sets(cfg: DescriptorTrainConfig, out_dir: Path, progress: bool) -> dict[str, CropSet]:
    """The run's crop sets (drawn, or read back from ``out_dir``)."""
    sets = {}
    for which in ("train", "val", "test"):
        spec = cfg.crop_spec(which)
        if spec.n:
            sets[which] = cached_crop_set(spec, out_dir / f"crops-{which}.npz", workers=cfg.workers,
                                          progress=progress)
            log.info("descriptors: %d %s crops", len(sets[which]), which)
    return sets


def train_descriptor_head(cfg: DescriptorTrainConfig, out_dir: Path, resume: bool = True,
                          progress: bool = True) -> TrainRun:
    """Draw (or reuse) the crops, train, keep the best validation epoch, measure it on the test crops and write the
    model folder ``out_dir/descriptors``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    head_cfg = cfg.head_config()
    sets = crop_sets(cfg, out_dir, progress)
    train, val = sets["train"], sets["val"]
    if len(train) == 0 or len(val) == 0:
        raise TrainingError("no simulated cluster found a place in its background: the crop sets are empty")
    device = select_device(cfg.device)
    torch.manual_seed(cfg.seed)
    net = build_descriptor_net(head_cfg).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    pixels, context = torch.from_numpy(train.pixels), torch.from_numpy(train.context_mm)
    types, distributions = torch.from_numpy(train.pattern), torch.from_numpy(train.distribution)

    def order(epoch: int, gen: torch.Generator) -> list[int]:
        return torch.randperm(len(train), generator=gen).tolist()

    def batch_loss(indices: Sequence[int], gen: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(list(indices))
        x = _augment(pixels[idx].float(), gen).to(device)
        type_logits, distribution_logits = net(x, context[idx].to(device))
        return {"loss_type": F.cross_entropy(type_logits, types[idx].to(device)),
                "loss_distribution": F.cross_entropy(distribution_logits, distributions[idx].to(device))}

    def validate(model: torch.nn.Module) -> dict[str, float]:
        t, d = crop_set_probabilities(model, val)
        summary = descriptor_metrics(t, d, val, head_cfg.patterns, head_cfg.distributions)["overall"]
        model.train()
        return {"val_type_accuracy": summary["type_accuracy"],
                "val_distribution_accuracy": summary["distribution_accuracy"],
                "val_mean_accuracy": (summary["type_accuracy"] + summary["distribution_accuracy"]) / 2,
                "val_suspicious_auc": summary["suspicious_auc"], "val_crops": float(summary["n"])}

    spec = LoopSpec(kind=KIND, model=net, optimizer=optimizer, scheduler=scheduler, batch_size=cfg.batch_size,
                    order=order, batch_loss=batch_loss, validate=validate, monitor="val_mean_accuracy",
                    tie_break="val_suspicious_auc",
                    build_info={"head_config": head_cfg.to_dict(), "train_crops": len(train),
                                "val_crops": len(val)})
    run = fit(spec, cfg, out_dir, resume=resume, progress=progress, device=device)
    best = load_checkpoint(run.best_checkpoint)
    net.load_state_dict(best["model"])
    net.eval()
    evaluation: dict[str, Any] = {"epoch": int(best["epoch"]), "validation": best["metrics"]}
    if "test" in sets and len(sets["test"]):
        t, d = crop_set_probabilities(net, sets["test"])
        evaluation["test"] = descriptor_metrics(t, d, sets["test"], head_cfg.patterns, head_cfg.distributions)
    (out_dir / TEST_METRICS).write_text(json.dumps(evaluation, indent=1))
    write_descriptor_part(net.cpu(), cfg, evaluation, out_dir / PART)
    return run


def write_descriptor_part(net: torch.nn.Module, cfg: DescriptorTrainConfig, evaluation: dict[str, Any],
                          folder: Path) -> Path:
    """The model folder of a trained head (``models.registry.load_descriptor_head`` reads it back)."""
    head_cfg = net.mccad_config
    overall = evaluation.get("test", {}).get("overall", {})
    manifest = ModelManifest(
        name="mccad-sim-descriptors-cnn", version=cfg.version, architecture=head_cfg.architecture,
        role="descriptors", classes=[*head_cfg.patterns, *head_cfg.distributions],
        input_spec={"descriptors": head_cfg.to_dict()},
        training_data=(f"{cfg.train_crops} simulated cluster crops (training.simulate.cluster_crops, seed {cfg.seed}) "
                       f"on the mammograms package's images {cfg.train_real_images} and synthetic phantoms, pitch "
                       f"{cfg.spacings} mm; epoch chosen on {cfg.val_crops} crops of seed {cfg.val_seed}; test: "
                       f"{cfg.test_crops} crops of seed {cfg.test_seed} on images {cfg.test_real_images}"),
        synthetic_only=True,
        metrics={"epoch": evaluation.get("epoch"), "test": {k: overall[k] for k in overall}})
    save_model(folder, net, manifest)
    return folder
