"""`mccad train detector` on `mccad synth` data, then `mccad evaluate` on the run, then `mccad export`, and the
exported folder loads through the model registry with the standardisation the run trained with."""
from __future__ import annotations

import json

import pytest

from mccad.cli import main
from models.registry import load_detector
from training.simulate.synth import write_synthetic_dataset


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


def test_train_evaluate_export(tmp_path, capsys):
    csv = write_synthetic_dataset(tmp_path / "synth", 1, seed=3, rows=192, cols=128)
    exp = tmp_path / "exp.toml"
    exp.write_text('kind = "detector"\n[data]\nval_fraction = 0.0\n[train]\nepochs = 1\nmax_side = 192\n'
                   '[train.detector]\nmin_size = 192\nmax_size = 192\nrpn_batch_size_per_image = 32\n'
                   'box_batch_size_per_image = 32\ntrainable_backbone_layers = 0\nrpn_pre_nms_top_n_test = 300\n'
                   'rpn_post_nms_top_n_test = 100\n')
    run = tmp_path / "run"
    assert main(["train", "detector", "--data", str(csv), "--out", str(run), "--config", str(exp),
                 "--no-progress"]) == 0
    assert (run / "best.pt").is_file() and (run / "experiment.toml").is_file()
    assert json.loads((run / "split.json").read_text())["val"] == []

    report = tmp_path / "report"
    assert main(["evaluate", "--model", str(run), "--data", str(csv), "--out", str(report), "--n-boot", "10"]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["levels"]["image"]["n"] == 4 and metrics["levels"]["breast"]["n"] == 2
    assert "froc" in metrics and (report / "report.html").is_file() and (report / "predictions.json").is_file()

    model_dir = tmp_path / "model"
    assert main(["export", str(run), "--out", str(model_dir), "--synthetic-only", "--metrics",
                 str(report / "metrics.json"), "--training-data", "1 synthetic patient"]) == 0
    model, config, manifest = load_detector(model_dir)
    assert manifest.synthetic_only and manifest.input_spec["standardise"]["max_side"] == 192
    assert config.min_size == 192 and manifest.metrics["evaluation"]["image"]["n"] == 4
    card = (model_dir / "MODEL_CARD.md").read_text()
    assert "NOT FOR CLINICAL USE" in card and "FROC sensitivity" in card


def test_kfold_training_and_table3(tmp_path, capsys):
    from tests.training.tiny_images import write_tiny_samples
    from training.datasets.paper_csv import PaperBox, write_paper_csv

    samples = write_tiny_samples(tmp_path, 8)
    csv = write_paper_csv(tmp_path / "annotations.csv", {
        s.image_id: [PaperBox.from_corners(les.box, les.label) for les in s.lesions] for s in samples})
    exp = tmp_path / "spp.toml"
    exp.write_text('kind = "sppnet"\n[data]\nval_fraction = 0.0\n[train]\nepochs = 1\nbatch_size = 4\n'
                   'max_side = 160\n[train.classifier]\ninput_size = 64\n')
    run = tmp_path / "cv"
    assert main(["train", "sppnet", "--data", str(csv), "--out", str(run), "--config", str(exp), "--folds", "2",
                 "--no-progress"]) == 0
    folds = json.loads((run / "folds.json").read_text())
    assert sorted(folds) == ["fold1", "fold2"] and sorted(folds["fold1"] + folds["fold2"]) == sorted(
        s.image_id for s in samples)
    assert main(["evaluate", "--kfold", str(run), "--data", str(csv), "--out", str(tmp_path / "rep"),
                 "--n-boot", "10"]) == 0
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["levels"]["image"]["n"] == 8 and "lesion" not in metrics["levels"]
    assert len(metrics["kfold"]["image"]["folds"]) == 2 and "sd" in metrics["kfold"]["image"]
    assert "Table 3 layout" in (tmp_path / "rep" / "report.html").read_text()
