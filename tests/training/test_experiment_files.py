"""Every experiment file under ``training/experiments`` is one a user can train with: it parses, its ``[train]`` table
builds its trainer's configuration (unknown or out-of-range settings fail here, not minutes into a GPU lease), and a
warm start it names (``init_from``) is a folder of this repository."""
from __future__ import annotations

from pathlib import Path

import pytest

from training.trainers.config import load_experiment
from training.trainers.run import trainer_for

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted((ROOT / "training" / "experiments").glob("*.toml"))


def test_the_experiments_folder_is_found():
    assert len(EXPERIMENTS) >= 10
    assert ROOT / "training" / "experiments" / "sim-detector-lite0-gpu-min3-ft.toml" in EXPERIMENTS


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_builds_its_trainer_config(path):
    exp = load_experiment(path)
    cfg_cls, _ = trainer_for(exp.kind)
    cfg = cfg_cls(**exp.train)
    init_from = getattr(cfg, "init_from", None)
    if init_from:
        assert (ROOT / init_from).is_dir(), f"{path.name}: init_from {init_from} is not a folder of the repository"
