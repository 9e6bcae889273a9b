"""One experiment from its config: read the data, split by patient, train one model or k folds.

This is what ``mccad train`` calls; it is also the one command a GPU host runs (see ``training/README.md``).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.trainers.config import ExperimentConfig
from training.datasets.samples import Sample
from training.trainers.common import TrainRun

log = logging.getLogger(__name__)

FOLDS_FILE = "folds.json"


def trainer_for(kind: str) -> tuple[type, Any]:
    """The dataclass config and the train function of a model kind."""
    if kind == "detector":
        from training.trainers.detector import DetectorTrainConfig, train_detector

        return DetectorTrainConfig, train_detector
    if kind == "sppnet":
        from training.trainers.classifier import SPPNetTrainConfig, train_sppnet

        return SPPNetTrainConfig, train_sppnet
    if kind == "patches":
        from training.trainers.patches import PatchTrainConfig, train_patch_head

        return PatchTrainConfig, train_patch_head
    if kind == "descriptors":
        from training.trainers.descriptors import DescriptorTrainConfig, train_descriptor_head

        return DescriptorTrainConfig, train_descriptor_head
    raise ValueError(f"unknown model kind {kind!r}; expected detector, sppnet, patches or descriptors")


#: kinds whose trainer draws its own data from the simulator (``training.simulate``): no annotation file is read
SIMULATING_KINDS = frozenset({"descriptors"})


def read_samples(exp: ExperimentConfig, progress: bool = False) -> list[Sample]:
    """The experiment's dataset as samples, through the reader its ``data.format`` names (with its ``split`` and
    ``other_findings``)."""
    from training.datasets import readers

    if exp.kind in SIMULATING_KINDS:
        return []
    if exp.data.csv is None:
        raise ValueError("the experiment names no data file (data.csv or --data)")
    return readers.read_dataset(exp.data.csv, exp.data.format, image_root=exp.data.image_root, split=exp.data.split,
                                other_findings=exp.data.other_findings, progress=progress)


def read_validation_samples(exp: ExperimentConfig) -> list[Sample]:
    """The experiment's separate validation set (``data.val_csv``), read like its training set (same format and
    image root) and limited to ``data.val_split``; the training data itself is refused as its own validation set
    unless ``val_split`` names another split than ``split`` (VinDr-Mammo's or CBIS-DDSM's test split of the same
    download)."""
    from training.datasets import readers

    d = exp.data
    if d.val_csv is not None and d.csv is not None and Path(d.val_csv).resolve() == Path(d.csv).resolve() \
            and (d.val_split is None or d.val_split == d.split):
        raise ValueError(f"the validation data {d.val_csv} is the training data: name another archive split for "
                         "validation (data.val_split, --val-split), e.g. test")
    return readers.read_dataset(d.val_csv, d.format, image_root=d.image_root, split=d.val_split,
                                other_findings=d.other_findings)


def run_experiment(exp: ExperimentConfig, samples: Sequence[Sample], out_dir: Path, *, resume: bool = True,
                   progress: bool = True) -> list[TrainRun]:
    """Train one model (``folds`` 0 or 1: a patient-level validation hold-out of ``val_fraction``) or ``folds``
    models, fold ``i`` in ``out_dir/fold<i>`` with its test patients listed in ``out_dir/folds.json``."""
    from training.trainers.config import dump_toml
    from training.datasets.splits import kfold_by_patient, split_by_patient

    cfg_cls, train_fn = trainer_for(exp.kind)
    cfg = cfg_cls(**exp.train)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "experiment.toml").write_text(dump_toml(json.loads(exp.model_dump_json())))
    if exp.kind in SIMULATING_KINDS:
        return [train_fn(cfg, out_dir, resume=resume, progress=progress)]
    if exp.data.folds > 1 and exp.data.val_csv is not None:
        raise ValueError("data.val_csv (--val-data) and k-fold cross-validation exclude each other: the folds make "
                         "their own validation hold-outs; drop one of them")
    if exp.data.folds <= 1 and exp.data.val_csv is not None:
        train, val = list(samples), read_validation_samples(exp)
        _write_split(out_dir / "split.json", {"train": train, "val": val})
        log.info("%s: %d training images, %d validation images from %s", exp.kind, len(train), len(val),
                 exp.data.val_csv)
        return [train_fn(train, val or None, cfg, out_dir, resume=resume, progress=progress)]
    if exp.data.folds <= 1:
        train, val = split_by_patient(samples, exp.data.val_fraction, seed=exp.data.seed)
        _write_split(out_dir / "split.json", {"train": train, "val": val})
        log.info("%s: %d training, %d validation images", exp.kind, len(train), len(val))
        return [train_fn(train, val or None, cfg, out_dir, resume=resume, progress=progress)]
    runs = []
    folds = kfold_by_patient(samples, exp.data.folds, seed=exp.data.seed)
    _write_split(out_dir / FOLDS_FILE, {f"fold{i}": test for i, (_, test) in enumerate(folds, start=1)})
    for i, (train_all, test) in enumerate(folds, start=1):
        train, val = split_by_patient(train_all, exp.data.val_fraction, seed=exp.data.seed + i)
        log.info("%s fold %d/%d: %d train, %d val, %d test images", exp.kind, i, len(folds), len(train), len(val),
                 len(test))
        runs.append(train_fn(train, val or None, cfg, out_dir / f"fold{i}", resume=resume, progress=progress))
    return runs


def _write_split(path: Path, parts: dict[str, Sequence[Sample]]) -> None:
    path.write_text(json.dumps({name: sorted({s.image_id for s in part}) for name, part in parts.items()}, indent=1))
