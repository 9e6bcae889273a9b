"""The breast gate through training, export and evaluation: a detector run records it (``breast_gate = true`` by
default), export writes ``input_spec["breast_gate"]`` only when the run had it, ``training.evaluation.predict`` drops
the boxes centred outside the breast as the pipeline does, ``mccad evaluate --no-breast-gate`` keeps them, and runs
written before the setting existed load with its default."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from tests.training.test_trainer_budget_tiling import TINY_DETECTOR
from tests.training.tiny_images import write_tiny_samples
from training.trainers.detector import DetectorTrainConfig, train_detector

GATE = {"margin_mm": 0.0}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two one-iteration runs of a tiny whole-image detector, with the gate (the default) and without it, and an
    annotation file over four tiny images (a breast half-ellipse on black background)."""
    from training.datasets.paper_csv import PaperBox, write_paper_csv

    root = tmp_path_factory.mktemp("gate-runs")
    samples = write_tiny_samples(root / "data", 4)
    csv = write_paper_csv(root / "data" / "annotations.csv", {
        s.image_id: [PaperBox.from_corners(les.box, les.label) for les in s.lesions] for s in samples})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/conftest.py one_torch_thread
    try:
        cfg = DetectorTrainConfig(epochs=1, max_side=160, detector=TINY_DETECTOR, samples_per_epoch=1,
                                  intensity_aug=False)
        assert cfg.breast_gate and cfg.breast_gate_spec() == GATE
        train_detector(samples[:2], None, cfg, root / "gated", progress=False)
        off = dataclasses.replace(cfg, breast_gate=False)
        assert off.breast_gate_spec() is None
        train_detector(samples[:2], None, off, root / "plain", progress=False)
    finally:
        torch.set_num_threads(threads)
    return root, samples, csv


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_export_writes_the_gate_only_when_the_run_had_it(runs, tmp_path):
    from models.registry import load_manifest
    from training.export import export_run, load_run
    from training.evaluation.predict import load_model

    root, _, _ = runs
    assert torch.load(root / "gated" / "best.pt", weights_only=False)["build"]["breast_gate"] == GATE
    assert torch.load(root / "plain" / "best.pt", weights_only=False)["build"]["breast_gate"] is None
    assert load_run(root / "gated").breast_gate == GATE and load_run(root / "plain").breast_gate is None
    gated = load_manifest(export_run(root / "gated", tmp_path / "gated"))
    plain = load_manifest(export_run(root / "plain", tmp_path / "plain"))
    assert gated.input_spec["breast_gate"] == GATE
    assert "breast_gate" not in plain.input_spec  # absent: no gate, as in bundles made before it
    assert load_model(tmp_path / "gated").breast_gate == GATE and load_model(tmp_path / "plain").breast_gate is None
    assert load_model(root / "gated").breast_gate == GATE and load_model(root / "plain").breast_gate is None


def test_predict_drops_the_boxes_the_gate_drops_and_no_breast_gate_keeps_them(runs, tmp_path):
    from mccad.cli import main
    from models.breast_gate import BreastGate, gate_spacing_mm
    from training.datasets.images import prepare
    from training.evaluation.predict import load_model, predict

    root, samples, csv = runs
    loaded = load_model(root / "gated")
    gated = predict(loaded, samples)
    every = predict(dataclasses.replace(loaded, breast_gate=None), samples)
    dropped = 0
    for sample, g, e in zip(samples, gated, every, strict=True):
        prep = prepare(sample, loaded.standardise)
        keep = BreastGate().keep(prep.cmap.boxes_to_input(e.boxes), prep.pixels, gate_spacing_mm(loaded.standardise))
        np.testing.assert_allclose(g.boxes, e.boxes[keep].reshape(-1, 4))
        np.testing.assert_allclose(g.scores, e.scores[keep])
        assert g.labels == [e.labels[i] for i in keep]
        dropped += len(e.boxes) - len(keep)
        # what was dropped lies outside the breast of the tiny image (a half-ellipse, x / 0.8 w, y about h / 2)
        rows, cols = prep.cmap.original_shape
        for i in sorted(set(range(len(e.boxes))) - set(keep.tolist())):
            cx, cy = (e.boxes[i, 0] + e.boxes[i, 2]) / 2, (e.boxes[i, 1] + e.boxes[i, 3]) / 2
            assert (cx / (cols * 0.8)) ** 2 + ((cy - rows / 2) / (rows * 0.47)) ** 2 > 0.8
    assert dropped > 0  # the untrained detector fires on the black background too

    # mccad evaluate runs the run's gate; --no-breast-gate keeps every box, and each predictions file says which
    with_gate, without = tmp_path / "with", tmp_path / "without"
    assert main(["evaluate", "--model", str(root / "gated"), "--data", str(csv), "--out", str(with_gate),
                 "--n-boot", "10"]) == 0
    assert main(["evaluate", "--model", str(root / "gated"), "--data", str(csv), "--out", str(without),
                 "--n-boot", "10", "--no-breast-gate"]) == 0
    on = json.loads((with_gate / "predictions.json").read_text())
    off = json.loads((without / "predictions.json").read_text())
    assert on["meta"]["breast_gate"] == GATE and off["meta"]["breast_gate"] is None
    count = lambda doc: sum(len(img["boxes"]) for img in doc["images"])  # noqa: E731
    assert count(on) == sum(len(p.boxes) for p in gated) < count(off) == sum(len(p.boxes) for p in every)

    # --score-mode runs the detector with another box score than its run's, and the predictions file says which
    lesion = tmp_path / "lesion"
    assert main(["evaluate", "--model", str(root / "gated"), "--data", str(csv), "--out", str(lesion),
                 "--n-boot", "10", "--score-mode", "lesion"]) == 0
    by_lesion = json.loads((lesion / "predictions.json").read_text())
    assert on["meta"]["score_mode"] == "class" and by_lesion["meta"]["score_mode"] == "lesion"
    expected = predict(dataclasses.replace(loaded, network_config=dataclasses.replace(
        loaded.network_config, score_mode="lesion")), samples)
    for img, pred in zip(by_lesion["images"], expected, strict=True):
        assert img["scores"] == pytest.approx(pred.scores.tolist(), abs=1e-6)
    assert by_lesion["images"] != on["images"]

    # --malignant-offset likewise: the saved predictions are the model's run with that offset, and say which
    shifted = tmp_path / "shifted"
    assert main(["evaluate", "--model", str(root / "gated"), "--data", str(csv), "--out", str(shifted),
                 "--n-boot", "10", "--malignant-offset=-2"]) == 0
    by_offset = json.loads((shifted / "predictions.json").read_text())
    assert on["meta"]["malignant_logit_offset"] == 0 and by_offset["meta"]["malignant_logit_offset"] == -2
    expected = predict(dataclasses.replace(loaded, network_config=dataclasses.replace(
        loaded.network_config, malignant_logit_offset=-2.0)), samples)
    for img, pred in zip(by_offset["images"], expected, strict=True):
        assert img["scores"] == pytest.approx(pred.scores.tolist(), abs=1e-6)
    assert by_offset["images"] != on["images"]

    # the test-time flip is a way of reading whole images tile by tile: a whole-image detector refuses it
    assert main(["evaluate", "--model", str(root / "gated"), "--data", str(csv), "--out", str(tmp_path / "flip"),
                 "--n-boot", "10", "--test-time-flip", "on"]) == 2


def test_runs_made_before_the_setting_load_and_resume_with_its_default(runs, tmp_path):
    from training.export import load_run
    from training.trainers.common import _changed_keys, config_defaults, config_dict

    root, _, _ = runs
    for name, config_value, expected in (("older", None, GATE), ("older-off", False, None)):
        folder = tmp_path / name
        shutil.copytree(root / "gated", folder)
        ckpt = torch.load(folder / "best.pt", weights_only=False)
        del ckpt["build"]["breast_gate"]  # written before the build record had the key
        del ckpt["config"]["breast_gate"]
        if config_value is not None:
            ckpt["config"]["breast_gate"] = config_value
        torch.save(ckpt, folder / "best.pt")
        assert load_run(folder).breast_gate == expected
    cfg = DetectorTrainConfig(epochs=2)
    new = config_dict(cfg)
    old = {k: v for k, v in new.items() if k != "breast_gate"}
    assert _changed_keys(old, new, config_defaults(cfg)) == []
    assert _changed_keys(old, config_dict(dataclasses.replace(cfg, breast_gate=False)),
                         config_defaults(cfg)) == ["breast_gate"]
