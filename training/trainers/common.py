"""The training loop every trainer shares: seeding, epochs, mixed precision, checkpoints that resume, the metrics
log, early stopping on validation AUC.

Shaped after torchvision's detection references (a plain loop over ``train_one_epoch`` and ``evaluate``), not a
framework. Reproducibility rule: every epoch reseeds torch, numpy and ``random`` from ``(seed, epoch)`` and draws its
sample order and augmentations from a generator seeded the same way, so a run resumed from the checkpoint written at
the end of epoch *k* continues exactly as the uninterrupted run would (same order, same augmentations, same
optimiser and scheduler state).
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from training.trainers.config import dump_toml

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
METRICS_LOG = "metrics.jsonl"
RUN_CONFIG = "config.toml"
CHECKPOINT_FORMAT = 1

#: Config fields that may change between an interrupted run and its resumption without changing what was trained:
#: ``init_from`` only seeds a run's first weights (a resumed run takes the checkpoint's), ``tile_batch`` is how many
#: tiles one forward pass takes (the same boxes; it fits validation and inference to another machine's memory).
RESUMABLE_CHANGES = frozenset({"epochs", "num_workers", "threads", "early_stop_patience", "amp", "device",
                               "time_budget_min", "init_from", "tile_batch"})


class TrainingError(RuntimeError):
    """A run that cannot start or resume; the message says which folder and what to do."""


@dataclass
class TrainRun:
    """What a finished (or early-stopped) run leaves behind."""

    out_dir: Path
    kind: str
    last_checkpoint: Path
    best_checkpoint: Path
    epochs_completed: int
    best_epoch: int | None
    best_metric: float | None
    monitor: str
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final_train_loss(self) -> float:
        return float(self.history[-1]["train_loss"]) if self.history else math.nan


# ------------------------------------------------------------------------------------------------------ seeding
def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, stable 63-bit seed per (run seed, epoch)."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 17) % (2**63 - 1)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch (CPU and CUDA), numpy and ``random``; return a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def select_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' was asked for but no CUDA GPU is visible to this process")
    return torch.device(device)


# -------------------------------------------------------------------------------------------------- checkpoints
def save_atomically(obj: Any, path: Path) -> None:
    """torch.save to a temporary name, fsync, rename: a crash mid-write never leaves a truncated checkpoint."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise TrainingError(f"checkpoint {path} cannot be read ({exc}); delete it to start the run afresh") from exc


def config_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as a plain JSON-like dict (what ``config.toml`` and checkpoints hold; tuples become
    lists so that a config read back from TOML compares equal)."""
    return json.loads(json.dumps(asdict(cfg)))


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a dataclass config, ignoring keys it does not know (older runs)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def _changed_keys(old: dict[str, Any], new: dict[str, Any], defaults: dict[str, Any] | None = None) -> list[str]:
    """Settings that differ between a checkpoint's config and the new one. A setting the checkpoint lacks (a run
    made before that setting existed) counts as its default, so newer code resumes older runs."""
    defaults = defaults or {}
    keys = set(old) | set(new)
    return sorted(k for k in keys if k not in RESUMABLE_CHANGES and old.get(k, defaults.get(k)) != new.get(k))


def config_defaults(cfg: Any) -> dict[str, Any]:
    """The default of every field of a trainer's dataclass config that has one (as ``config_dict`` writes it)."""
    out: dict[str, Any] = {}
    for f in fields(cfg):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return json.loads(json.dumps(out, default=str))


# ------------------------------------------------------------------------------------------------ early stopping
@dataclass
class EarlyStopping:
    """Stop when the monitored validation metric (higher is better) has not improved for ``patience`` epochs.

    ``tie`` is the best epoch's tie-break value: an epoch that equals the best monitored value and beats it there is
    better (a FROC sensitivity on a few dozen validation images takes few distinct values, so epochs often tie on
    it; without a tie-break the first of them stood, whatever the rest of its curve)."""

    patience: int | None
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    tie: float | None = None

    def update(self, value: float | None, epoch: int, tie: float | None = None) -> bool:
        """Record an epoch's value (and tie-break value); True when it is the best so far (a NaN or missing value
        never is)."""
        if value is None or not math.isfinite(value):
            self.bad_epochs += 1
            return False
        tie = tie if tie is not None and math.isfinite(tie) else None
        ties_better = (self.best is not None and value == self.best and tie is not None
                       and (self.tie is None or tie > self.tie))
        if self.best is None or value > self.best or ties_better:
            self.best, self.best_epoch, self.bad_epochs, self.tie = float(value), epoch, 0, tie
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.best is not None and self.bad_epochs >= self.patience


# ---------------------------------------------------------------------------------------------------- the loop
@dataclass
class LoopSpec:
    """What a trainer hands to :func:`fit`.

    ``order(epoch, gen)`` returns the item indices of one epoch (shuffled, or class-balanced for imbalanced heads);
    ``batch_loss(indices, gen)`` returns the loss dict of one batch with the model in train mode (augmentations
    drawn from ``gen``); ``validate(model)`` returns validation metrics (model in eval mode, no grad).
    """

    kind: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    batch_size: int
    order: Callable[[int, torch.Generator], Sequence[int]]
    batch_loss: Callable[[Sequence[int], torch.Generator], dict[str, torch.Tensor]]
    validate: Callable[[nn.Module], dict[str, float]] | None = None
    monitor: str = "val_auc"
    #: the validation metric that decides between epochs tied on ``monitor`` (None: the first of them stays)
    tie_break: str | None = None
    build_info: dict[str, Any] = field(default_factory=dict)


def _write_run_config(out_dir: Path, kind: str, cfg: dict[str, Any]) -> None:
    text = dump_toml({"kind": kind, "train": cfg})
    (out_dir / RUN_CONFIG).write_text(text)


def _read_log(path: Path, upto_epoch: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if int(r.get("epoch", 0)) <= upto_epoch]


def _resume(spec: LoopSpec, cfg: Any, cfg_dict: dict[str, Any], out_dir: Path, scaler: torch.amp.GradScaler,
            use_amp: bool) -> tuple[EarlyStopping, int, list[dict[str, Any]]]:
    """Load ``out_dir``'s ``last.pt`` into the model, optimizer, scheduler and scaler; (the early-stopping state,
    the next epoch, the logged epochs so far). Raises TrainingError when the checkpoint is of another kind or
    configuration."""
    state = load_checkpoint(out_dir / LAST_CHECKPOINT)
    changed = _changed_keys(state.get("config", {}), cfg_dict, config_defaults(cfg))
    if state.get("kind") != spec.kind or changed:
        raise TrainingError(
            f"{out_dir} holds a {state.get('kind')} run whose configuration differs in {changed or ['kind']}; "
            f"choose a new output folder, or start afresh there without resuming")
    spec.model.load_state_dict(state["model"])
    spec.optimizer.load_state_dict(state["optimizer"])
    if spec.scheduler is not None and state.get("scheduler") is not None:
        spec.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler") and use_amp:
        scaler.load_state_dict(state["scaler"])
    start_epoch = int(state["epoch"]) + 1
    log.info("resuming %s run in %s after epoch %d", spec.kind, out_dir, start_epoch - 1)
    return (EarlyStopping(cfg.early_stop_patience, **state["early_stopping"]), start_epoch,
            _read_log(out_dir / METRICS_LOG, start_epoch - 1))


def train_one_epoch(spec: LoopSpec, cfg: Any, epoch: int, device: torch.device, scaler: torch.amp.GradScaler, *,
                    use_amp: bool, progress: bool) -> dict[str, Any]:
    """One pass over the epoch's batches (``spec.order`` under the epoch's seed), one optimizer step per batch, then
    one scheduler step; the epoch's record: ``epoch``, ``lr`` (the rate the epoch ran at), ``iterations``,
    ``train_loss`` and ``train_<part>`` per loss part, each the mean over batches. Raises TrainingError on a
    non-finite loss."""
    gen = seed_everything(epoch_seed(cfg.seed, epoch))
    order = list(spec.order(epoch, gen))
    batches = [order[i:i + spec.batch_size] for i in range(0, len(order), spec.batch_size)]
    spec.model.train()
    sums: dict[str, float] = {}
    iterator: Any = batches
    if progress:
        iterator = tqdm(batches, desc=f"{spec.kind} epoch {epoch}/{cfg.epochs}", unit="batch", leave=False)
    for batch in iterator:
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            losses = spec.batch_loss(batch, gen)
            total = sum(losses.values())
        if not torch.isfinite(total):
            raise TrainingError(f"{spec.kind} loss became {float(total)} in epoch {epoch}; lower the learning "
                                f"rate (lr={cfg.lr}) or check the annotations of this batch")
        spec.optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(spec.optimizer)
        scaler.update()
        sums["loss"] = sums.get("loss", 0.0) + float(total.detach())
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach())
        if progress:
            iterator.set_postfix(loss=f"{float(total):.4f}")
    lr = float(spec.optimizer.param_groups[0]["lr"])
    if spec.scheduler is not None:
        spec.scheduler.step()
    record: dict[str, Any] = {"epoch": epoch, "lr": lr, "iterations": len(batches),
                              "train_loss": sums.get("loss", 0.0) / max(len(batches), 1)}
    record.update({f"train_{k}": v / max(len(batches), 1) for k, v in sums.items() if k != "loss"})
    return record


def _save_checkpoints(spec: LoopSpec, cfg_dict: dict[str, Any], record: dict[str, Any], stopper: EarlyStopping,
                      scaler: torch.amp.GradScaler, use_amp: bool, out_dir: Path, *, best: bool) -> None:
    """Write the epoch's ``last.pt`` (everything a resume needs) and, when ``best``, its ``best.pt`` (weights,
    configuration and metrics)."""
    weights = {k: v.detach().cpu() for k, v in spec.model.state_dict().items()}
    epoch = record["epoch"]
    if best:
        save_atomically({"format": CHECKPOINT_FORMAT, "kind": spec.kind, "epoch": epoch, "model": weights,
                         "config": cfg_dict, "metrics": record, "build": spec.build_info}, out_dir / BEST_CHECKPOINT)
    save_atomically({
        "format": CHECKPOINT_FORMAT, "kind": spec.kind, "epoch": epoch, "model": weights,
        "optimizer": spec.optimizer.state_dict(),
        "scheduler": spec.scheduler.state_dict() if spec.scheduler is not None else None,
        "scaler": scaler.state_dict() if use_amp else None,
        "early_stopping": {"best": stopper.best, "best_epoch": stopper.best_epoch,
                           "bad_epochs": stopper.bad_epochs, "tie": stopper.tie},
        "config": cfg_dict, "metrics": record, "build": spec.build_info,
    }, out_dir / LAST_CHECKPOINT)


def _report_epoch(spec: LoopSpec, cfg: Any, record: dict[str, Any], log_path: Path, progress: bool) -> None:
    """Append the epoch's record to the metrics log, log it, and print it when ``progress``."""
    with open(log_path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
    epoch = record["epoch"]
    log.info("%s epoch %d: %s", spec.kind, epoch, {k: (round(v, 4) if isinstance(v, float) else v)
                                                   for k, v in record.items()})
    if progress:
        print(f"{spec.kind} epoch {epoch}/{cfg.epochs} " + " ".join(
            f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float) and k != "seconds")
            + f" ({record['seconds']:.1f}s)", flush=True)


def fit(spec: LoopSpec, cfg: Any, out_dir: Path, *, resume: bool = True, progress: bool = True,
        device: torch.device | None = None) -> TrainRun:
    """Train ``spec.model`` for ``cfg.epochs`` epochs, checkpointing each epoch into ``out_dir``.

    ``cfg`` is the trainer's dataclass config (needs ``epochs``, ``seed``, ``amp``, ``early_stop_patience``). With
    ``resume`` and a ``last.pt`` from the same config (``epochs`` and ``early_stop_patience`` may differ, so a run
    can be extended), training continues after the last completed epoch.

    An optional ``cfg.time_budget_min`` ends the run after the first epoch at which the epochs' summed wall time
    (resumed runs included) reaches it: comparing two backbones "on the same budget" means the same minutes on the
    same machine, and a CPU recipe is stated in hours.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = device or select_device()
    if getattr(cfg, "threads", None):
        torch.set_num_threads(int(cfg.threads))
    model = spec.model
    cfg_dict = config_dict(cfg)
    use_amp = bool(cfg.amp) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    stopper = EarlyStopping(cfg.early_stop_patience)
    start_epoch = 1
    history: list[dict[str, Any]] = []
    last_path, best_path, log_path = out_dir / LAST_CHECKPOINT, out_dir / BEST_CHECKPOINT, out_dir / METRICS_LOG

    if resume and last_path.is_file():
        stopper, start_epoch, history = _resume(spec, cfg, cfg_dict, out_dir, scaler, use_amp)
    else:
        for stale in (last_path, best_path, log_path):
            stale.unlink(missing_ok=True)
    _write_run_config(out_dir, spec.kind, cfg_dict)
    log_path.write_text("".join(json.dumps(r) + "\n" for r in history))

    model.to(device)
    stopped_early = stopper.should_stop
    budget_s = 60.0 * float(getattr(cfg, "time_budget_min", None) or math.inf)
    for epoch in range(start_epoch, int(cfg.epochs) + 1):
        if stopped_early:
            break
        if sum(float(r.get("seconds", 0.0)) for r in history) >= budget_s:
            log.info("%s: time budget of %.1f min spent after epoch %d", spec.kind, budget_s / 60, epoch - 1)
            stopped_early = True
            break
        t0 = time.perf_counter()
        record = train_one_epoch(spec, cfg, epoch, device, scaler, use_amp=use_amp, progress=progress)
        if spec.validate is not None:
            model.eval()
            with torch.no_grad():
                record.update(spec.validate(model))
        monitored = record.get(spec.monitor)
        improved = stopper.update(monitored, epoch, record.get(spec.tie_break) if spec.tie_break else None)
        record["seconds"] = round(time.perf_counter() - t0, 3)
        history.append(record)
        usable = monitored is not None and math.isfinite(monitored)
        if not usable and stopper.best is None:
            stopper.best_epoch = epoch  # no usable validation metric: the latest epoch is the best we can say
        _save_checkpoints(spec, cfg_dict, record, stopper, scaler, use_amp, out_dir,
                          best=improved or (not usable and stopper.best is None))
        _report_epoch(spec, cfg, record, log_path, progress)
        stopped_early = stopper.should_stop
        if stopped_early:
            log.info("%s: early stop after epoch %d (no %s gain for %d epochs)", spec.kind, epoch, spec.monitor,
                     stopper.patience)

    completed = history[-1]["epoch"] if history else 0
    return TrainRun(out_dir=out_dir, kind=spec.kind, last_checkpoint=last_path, best_checkpoint=best_path,
                    epochs_completed=int(completed), best_epoch=stopper.best_epoch, best_metric=stopper.best,
                    monitor=spec.monitor, stopped_early=stopped_early, history=history)
