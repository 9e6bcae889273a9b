"""``mccad train descriptors``: simulated cluster crops, a trained head, its held-out figures and its model folder."""
from __future__ import annotations

import json

import numpy as np

from mccad.cli import main
from models.descriptors import CALCIFICATION_TYPES, DISTRIBUTIONS
from models.registry import load_descriptor_head
from training.simulate.cluster_crops import CropSet, make_crop
from training.trainers.descriptors import DescriptorTrainConfig

TINY = """kind = "descriptors"
[train]
epochs = 1
train_crops = 6
val_crops = 3
test_crops = 3
spacings = [0.2]
phantom_fraction = 1.0
phantoms = 1
batch_size = 4
device = "cpu"
[train.head]
widths = [4, 4, 4, 4, 4]
hidden = 8
"""


def test_train_descriptors_from_a_tiny_experiment(tmp_path, capsys):
    exp = tmp_path / "tiny.toml"
    exp.write_text(TINY)
    run = tmp_path / "run"
    assert main(["train", "descriptors", "--config", str(exp), "--out", str(run), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary[0]["epochs"] == 1
    figures = json.loads((run / "test_metrics.json").read_text())
    test = figures["test"]
    assert test["overall"]["n"] == 3 and set(test["per_pitch"]) == {"0.2"} and set(test["per_source"]) == {"phantom"}
    assert np.asarray(test["type_confusion"]).shape == (len(CALCIFICATION_TYPES),) * 2
    assert np.asarray(test["distribution_confusion"]).sum() == 3
    head = load_descriptor_head(run / "descriptors")
    assert head.manifest.classes == [*CALCIFICATION_TYPES, *DISTRIBUTIONS]
    assert head.manifest.metrics["test"]["n"] == 3
    # the crops are drawn from (seed, index) alone: the cached training set is crop for crop what a new draw gives
    cfg = DescriptorTrainConfig(**_train_table(exp))
    cached = CropSet.load(run / "crops-train.npz")
    again = make_crop(cfg.crop_spec("train"), 0)
    assert again is not None
    assert np.array_equal(again[0].astype(np.float16), cached.pixels[0]) and again[2] == cached.pattern[0]


def _train_table(path) -> dict:
    import tomllib

    return tomllib.loads(path.read_text())["train"]
