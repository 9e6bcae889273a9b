"""Experiment files: TOML in, validated config out; the TOML writer round-trips what runs save."""
from __future__ import annotations

import tomllib

import pytest

from training.trainers.config import ConfigFileError, dump_toml, load_experiment
from training.trainers.common import config_dict
from training.trainers.detector import DetectorTrainConfig


def test_experiment_file_is_validated(tmp_path):
    good = tmp_path / "exp.toml"
    good.write_text('kind = "sppnet"\n[data]\ncsv = "a.csv"\nfolds = 5\n[train]\nepochs = 3\n'
                    '[train.classifier]\nlevels = [1, 2]\n')
    exp = load_experiment(good)
    assert exp.kind == "sppnet" and exp.data.folds == 5 and exp.data.val_fraction == 0.2
    assert exp.train == {"epochs": 3, "classifier": {"levels": [1, 2]}}
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "detector"\n[data]\nfoldz = 5\n')
    with pytest.raises(ConfigFileError, match="bad.toml"):
        load_experiment(bad)
    bad.write_text('kind = "detector"\n[data\n')
    with pytest.raises(ConfigFileError, match="cannot be read"):
        load_experiment(bad)


def test_toml_writer_round_trips_a_trainer_config():
    cfg = DetectorTrainConfig(epochs=4, optimizer="adam", detector={"anchor_sizes": [8, 16, 32, 64, 128],
                                                                    "min_size": 320}, early_stop_patience=3)
    data = {"kind": "detector", "train": config_dict(cfg)}
    back = tomllib.loads(dump_toml(data))
    expected = {k: v for k, v in data["train"].items() if v is not None}  # TOML has no null
    assert back["kind"] == "detector" and back["train"] == expected
    assert DetectorTrainConfig(**back["train"]) == cfg
    assert tomllib.loads(dump_toml({"name": 'quote " and \\ slash', "x": 1.5e-07}))["name"] == 'quote " and \\ slash'


def test_train_command_refuses_an_experiment_of_another_kind(tmp_path, capsys):
    from mccad.cli import main

    exp = tmp_path / "det.toml"
    exp.write_text('kind = "detector"\n')
    assert main(["train", "sppnet", "--config", str(exp), "--data", str(tmp_path / "a.csv"),
                 "--out", str(tmp_path / "run")]) == 2
    assert "is for 'detector', not 'sppnet'" in capsys.readouterr().err
    exp.write_text('kind = "sppnet"\n')
    assert main(["train", "sppnet", "--config", str(exp), "--data", str(tmp_path / "missing.csv"),
                 "--out", str(tmp_path / "run")]) == 2
    assert "missing.csv does not exist" in capsys.readouterr().err
