"""The detector and SPPNet trainers learn (the loss on the training images falls) and resume exactly."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.classifier import build_classifier, fit_to_square
from models.detector import build_detector, to_three_channels
from training.datasets.images import prepare_all
from training.trainers.classifier import SPPNetTrainConfig, balanced_order, train_sppnet
from training.trainers.common import TrainingError, load_checkpoint
from training.trainers.detector import DetectorTrainConfig, train_detector

from tests.training.tiny_images import write_tiny_samples

# small inputs, few proposals and a frozen ResNet body keep a detector iteration well under a second on CPU
TINY_DETECTOR = dict(min_size=160, max_size=160, rpn_batch_size_per_image=32, box_batch_size_per_image=32,
                     trainable_backbone_layers=0, rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100,
                     rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_samples(tmp_path_factory.mktemp("tiny"), 6)


def _fixed_detector_loss(model, items) -> float:
    """Training loss with a fixed seed (same RPN/ROI sampling) and no augmentation: comparable across weights."""
    model.train()
    torch.manual_seed(123)
    with torch.no_grad():
        images = [to_three_channels(torch.from_numpy(it.pixels)[None]) for it in items]
        targets = [{"boxes": torch.from_numpy(it.boxes), "labels": torch.from_numpy(it.label_ids)} for it in items]
        return float(sum(model(images, targets).values()))


def test_detector_training_lowers_the_loss(tiny, tmp_path):
    cfg = DetectorTrainConfig(epochs=3, lr=0.005, max_side=160, detector=TINY_DETECTOR, intensity_aug=False)
    run = train_detector(tiny[:2], None, cfg, tmp_path / "run", progress=False)
    assert run.epochs_completed == 3 and run.best_checkpoint.is_file()
    items = prepare_all(tiny[:2], cfg.standardise_config())
    torch.manual_seed(cfg.seed)
    model = build_detector(cfg.detector_config())
    before = _fixed_detector_loss(model, items)
    model.load_state_dict(load_checkpoint(run.last_checkpoint)["model"])
    after = _fixed_detector_loss(model, items)
    assert after < 0.8 * before, (before, after)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {"train_loss_classifier", "train_loss_objectness", "lr"} <= set(rows[0])
    assert "epochs = 3" in (tmp_path / "run" / "config.toml").read_text()


def test_detector_resume_matches_an_uninterrupted_run(tiny, tmp_path):
    cfg2 = DetectorTrainConfig(epochs=2, max_side=160, detector=TINY_DETECTOR, seed=7)
    whole = train_detector(tiny[:1], tiny[4:5], cfg2, tmp_path / "whole", progress=False)
    cfg1 = DetectorTrainConfig(epochs=1, max_side=160, detector=TINY_DETECTOR, seed=7)
    train_detector(tiny[:1], tiny[4:5], cfg1, tmp_path / "split", progress=False)
    resumed = train_detector(tiny[:1], tiny[4:5], cfg2, tmp_path / "split", progress=False)
    assert resumed.epochs_completed == 2 and len(resumed.history) == 2
    a = load_checkpoint(whole.last_checkpoint)["model"]
    b = load_checkpoint(resumed.last_checkpoint)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert "val_auc" in resumed.history[-1] and "val_froc_sens_at_1fp" in resumed.history[-1]
    # a different configuration in the same folder is refused rather than silently mixed
    with pytest.raises(TrainingError, match="differs"):
        train_detector(tiny[:1], None, DetectorTrainConfig(epochs=3, lr=0.01, max_side=160, detector=TINY_DETECTOR,
                                                           seed=7), tmp_path / "split", progress=False)


def _fixed_sppnet_loss(model, pixels, targets, size) -> float:
    model.train()
    with torch.no_grad():
        x = torch.stack([fit_to_square(torch.from_numpy(p)[None], size) for p in pixels])
        return float(F.cross_entropy(model(x), torch.as_tensor(targets)))


def test_sppnet_training_lowers_the_loss_and_resumes(tiny, tmp_path):
    clf = {"input_size": 64}
    cfg = SPPNetTrainConfig(epochs=3, batch_size=4, max_side=160, classifier=clf, intensity_aug=False)
    run = train_sppnet(tiny[:4], tiny[4:6], cfg, tmp_path / "spp", progress=False)
    assert run.epochs_completed == 3 and np.isfinite(run.history[-1]["val_auc"])
    items = prepare_all(tiny[:4], cfg.standardise_config())
    pixels, targets = [it.pixels for it in items], [it.sample.target for it in items]
    torch.manual_seed(cfg.seed)
    model = build_classifier(cfg.classifier_config())
    before = _fixed_sppnet_loss(model, pixels, targets, 64)
    model.load_state_dict(load_checkpoint(run.last_checkpoint)["model"])
    after = _fixed_sppnet_loss(model, pixels, targets, 64)
    assert after < 0.5 * before, (before, after)

    short = SPPNetTrainConfig(epochs=2, batch_size=4, max_side=160, classifier=clf, intensity_aug=False)
    train_sppnet(tiny[:4], tiny[4:6], short, tmp_path / "spp2", progress=False)
    resumed = train_sppnet(tiny[:4], tiny[4:6], cfg, tmp_path / "spp2", progress=False)
    a = load_checkpoint(run.last_checkpoint)["model"]
    b = load_checkpoint(resumed.last_checkpoint)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]


def test_balanced_sampling_draws_each_class_equally_often():
    gen = torch.Generator().manual_seed(0)
    targets = [0] * 90 + [1] * 10
    draws = [targets[i] for _ in range(20) for i in balanced_order(targets, gen)]
    assert abs(np.mean(draws) - 0.5) < 0.05


def test_parallel_preparation_equals_serial(tiny):
    from models.preprocess import StandardiseConfig

    config = StandardiseConfig(max_side=128)
    serial = prepare_all(tiny[:3], config)
    parallel = prepare_all(tiny[:3], config, workers=2)
    for a, b in zip(serial, parallel, strict=True):
        assert a.sample == b.sample and np.array_equal(a.pixels, b.pixels) and np.array_equal(a.boxes, b.boxes)
        assert a.cmap == b.cmap and a.pixels.shape[0] == 128


def test_early_stopping_follows_the_validation_metric():
    from training.trainers.common import EarlyStopping

    stopper = EarlyStopping(patience=2)
    assert [stopper.update(v, e) for e, v in enumerate([0.5, 0.6, float("nan"), 0.6], start=1)] == [
        True, True, False, False]
    assert stopper.should_stop and stopper.best == 0.6 and stopper.best_epoch == 2
    assert not EarlyStopping(patience=None, best=0.9, bad_epochs=50).should_stop


def test_epochs_tied_on_the_monitor_are_told_apart_by_the_tie_break():
    """0.77 at 1 FP on epochs 1, 2 and 4: epoch 2 is better on the rest of its curve (tie-break 0.8 > 0.7), epoch 4 is
    not (0.75); without tie-break values the first tied epoch stays, as before."""
    from training.trainers.common import EarlyStopping

    stopper = EarlyStopping(patience=None)
    steps = [(0.77, 0.70), (0.77, 0.80), (0.70, 0.95), (0.77, 0.75), (0.77, float("nan"))]
    assert [stopper.update(v, e, t) for e, (v, t) in enumerate(steps, start=1)] == [True, True, False, False, False]
    assert stopper.best_epoch == 2 and stopper.tie == 0.8 and stopper.bad_epochs == 3
    plain = EarlyStopping(patience=None)
    assert [plain.update(v, e) for e, (v, _) in enumerate(steps, start=1)] == [True, False, False, False, False]
    assert plain.best_epoch == 1
    first_without = EarlyStopping(patience=None)  # an epoch with a tie-break value beats a tied one without
    assert first_without.update(0.5, 1) and first_without.update(0.5, 2, 0.1) and first_without.best_epoch == 2
    with pytest.raises(ValueError, match="monitor"):
        DetectorTrainConfig(epochs=1, monitor="val_loss")
    with pytest.raises(ValueError, match="unknown detector settings"):
        DetectorTrainConfig(epochs=1, detector={"min_sise": 3})
