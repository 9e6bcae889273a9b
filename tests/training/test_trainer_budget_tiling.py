"""Training options: a wall-time budget, short epochs (``samples_per_epoch``), a separate validation file
(``data.val_csv`` / ``--val-data``), and a crops-trained detector (``spacing_mm``, ``tile*``, a Lite backbone) whose
export carries the tiling and spacing that evaluation then uses on whole images."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from training.trainers.detector import DetectorTrainConfig, train_detector

from tests.training.tiny_images import write_tiny_samples

# small inputs, few proposals and a frozen ResNet body keep a detector iteration well under a second on CPU
TINY_DETECTOR = dict(min_size=160, max_size=160, rpn_batch_size_per_image=32, box_batch_size_per_image=32,
                     trainable_backbone_layers=0, rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100,
                     rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100, fpn_channels=64, box_head_size=128)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_samples(tmp_path_factory.mktemp("tiny"), 5)


def _rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_time_budget_ends_the_run_after_the_epoch_that_reaches_it(tiny, tmp_path):
    cfg = DetectorTrainConfig(epochs=3, max_side=160, detector=TINY_DETECTOR, samples_per_epoch=1,
                              time_budget_min=1e-6)  # 60 microseconds: any epoch reaches it
    run = train_detector(tiny[:2], None, cfg, tmp_path / "run", progress=False)
    assert run.epochs_completed == 1 and run.stopped_early
    assert [r["epoch"] for r in _rows(tmp_path / "run")] == [1]
    assert _rows(tmp_path / "run")[0]["seconds"] >= 6e-5
    # the budget may change when a run is resumed: without one it goes on to its epochs
    longer = dataclasses.replace(cfg, epochs=2, time_budget_min=None)
    resumed = train_detector(tiny[:2], None, longer, tmp_path / "run", progress=False)
    assert resumed.epochs_completed == 2 and not resumed.stopped_early
    # resumed epochs count towards the budget: one already spent trains nothing more
    spent = train_detector(tiny[:2], None, dataclasses.replace(cfg, epochs=4), tmp_path / "run", progress=False)
    assert spent.epochs_completed == 2 and spent.stopped_early
    assert [r["epoch"] for r in _rows(tmp_path / "run")] == [1, 2]


def test_samples_per_epoch_sets_the_iterations_of_an_epoch(tiny, tmp_path):
    cfg = DetectorTrainConfig(epochs=2, batch_size=2, max_side=160, detector=TINY_DETECTOR, samples_per_epoch=3,
                              intensity_aug=False)
    run = train_detector(tiny[:5], None, cfg, tmp_path / "run", progress=False)
    assert run.epochs_completed == 2
    assert [r["iterations"] for r in _rows(tmp_path / "run")] == [math.ceil(3 / 2)] * 2  # all 5 would take 3


def _csv(folder, prefix: str, samples):
    from training.datasets.paper_csv import PaperBox, write_paper_csv

    return write_paper_csv(folder / f"{prefix}.csv", {
        f"{prefix}/{s.image_id}": [PaperBox.from_corners(les.box, les.label) for les in s.lesions] for s in samples})


def _train_val_experiment(tmp_path, n_val: int, data_section) -> tuple:
    """Two tiny training images, ``n_val`` validation ones, and a one-epoch experiment whose [data] table is
    ``data_section(val_csv)``."""
    train = write_tiny_samples(tmp_path / "train", 2, seed=1)
    val = write_tiny_samples(tmp_path / "val", n_val, seed=2)
    train_csv, val_csv = _csv(tmp_path, "train", train), _csv(tmp_path, "val", val)
    detector = "".join(f"{k} = {v}\n" for k, v in TINY_DETECTOR.items())
    exp = tmp_path / "exp.toml"
    exp.write_text(f'kind = "detector"\n[data]\n{data_section(val_csv)}[train]\nepochs = 1\nmax_side = 160\n'
                   f'samples_per_epoch = 1\n[train.detector]\n{detector}')
    return train_csv, val_csv, exp


def test_validation_comes_from_the_val_csv(tmp_path, capsys):
    from mccad.cli import main

    # val_fraction would hold out half of the training patients if val_csv were ignored
    train_csv, _, exp = _train_val_experiment(tmp_path, 3, lambda v: f'val_fraction = 0.5\nval_csv = "{v}"\n')
    run = tmp_path / "run"
    assert main(["train", "detector", "--data", str(train_csv), "--out", str(run), "--config", str(exp),
                 "--no-progress"]) == 0
    split = json.loads((run / "split.json").read_text())
    assert split == {"train": ["train/img000.png", "train/img001.png"],
                     "val": ["val/img000.png", "val/img001.png", "val/img002.png"]}
    (row,) = _rows(run)
    assert row["val_images"] == 3.0 and "val_auc" in row and "val_froc_sens_at_1fp" in row
    capsys.readouterr()
    # --val-data overrides the experiment's file
    assert main(["train", "detector", "--data", str(train_csv), "--val-data", str(tmp_path / "elsewhere.csv"),
                 "--out", str(tmp_path / "run2"), "--config", str(exp), "--no-progress"]) == 2
    assert "elsewhere.csv" in capsys.readouterr().err
    # k-fold makes its own hold-outs: a separate validation file with --folds is refused, not silently ignored
    assert main(["train", "detector", "--data", str(train_csv), "--folds", "2", "--out", str(tmp_path / "run3"),
                 "--config", str(exp), "--no-progress"]) == 2
    assert "val_csv" in capsys.readouterr().err


def test_val_data_option_of_mccad_train(tmp_path, capsys):
    from mccad.cli import main

    train_csv, val_csv, exp = _train_val_experiment(tmp_path, 1, lambda v: "val_fraction = 0.0\n")
    run = tmp_path / "run"
    assert main(["train", "detector", "--data", str(train_csv), "--val-data", str(val_csv), "--out", str(run),
                 "--config", str(exp), "--no-progress"]) == 0
    assert json.loads((run / "split.json").read_text())["val"] == ["val/img000.png"]
    assert _rows(run)[0]["val_images"] == 1.0
    assert str(val_csv) in (run / "experiment.toml").read_text()


# ------------------------------------------------------------------------------------ crops, tiles and a Lite backbone
LITE_DETECTOR = dict(backbone="efficientnet_lite0", fpn_channels=16, box_head_size=32, min_size=64, max_size=64,
                     rpn_batch_size_per_image=32, box_batch_size_per_image=32, rpn_pre_nms_top_n_train=100,
                     rpn_post_nms_top_n_train=50, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
                     detections_per_img=30)
TILING = {"tile": 64, "overlap": 16, "batch": 2}


def native_resolution_samples(folder, n: int, seed: int) -> list:
    """Tiny samples (160 x 112 px) that state 0.05 mm pixels, as a native-resolution file would."""
    samples = write_tiny_samples(folder, n, seed=seed)
    for sample in samples:
        with Image.open(sample.source) as im:
            im.load()
        im.save(sample.source, dpi=(508, 508))
    return samples


def crops_config() -> DetectorTrainConfig:
    """A one-iteration crops-trained Lite detector at 0.1 mm with ``TILING``."""
    return DetectorTrainConfig(epochs=1, max_side=0, spacing_mm=0.1, tile=TILING["tile"],
                               tile_overlap=TILING["overlap"], tile_batch=TILING["batch"], detector=LITE_DETECTOR,
                               samples_per_epoch=1, intensity_aug=False)


def test_crops_trained_lite_detector_exports_tiling_and_spacing_and_predicts_tile_by_tile(tmp_path):
    pytest.importorskip("timm", reason="the EfficientNet-Lite backbone needs timm")
    from models.breast_gate import BreastGate
    from models.detector import detect
    from models.registry import load_detector, load_manifest
    from models.tiling import detect_tiled
    from training.datasets.images import prepare
    from training.export import export_run
    from models.detect import EVALUATION_SCORE_FLOOR
    from training.evaluation.predict import load_model, predict

    samples = native_resolution_samples(tmp_path / "img", 3, seed=4)
    cfg = crops_config()
    assert cfg.standardise_config().spacing_mm == 0.1 and cfg.standardise_config().max_side is None
    run = train_detector(samples[:2], None, cfg, tmp_path / "run", progress=False)
    assert run.epochs_completed == 1

    out = export_run(tmp_path / "run", tmp_path / "model", synthetic_only=True, dtype="float32")
    manifest = load_manifest(out)
    assert manifest.architecture == "fpnnet-efficientnet_lite0"
    assert manifest.input_spec["tiling"] == TILING
    assert manifest.input_spec["standardise"]["spacing_mm"] == 0.1
    assert manifest.input_spec["standardise"]["max_side"] is None
    assert manifest.input_spec["detector"]["backbone"] == "efficientnet_lite0"
    _, det_cfg, _ = load_detector(out)
    assert det_cfg.fpn_channels == 16 and det_cfg.box_head_size == 32

    loaded = load_model(out)
    assert loaded.kind == "detector" and loaded.tiling == TILING and loaded.standardise.spacing_mm == 0.1
    sample = samples[2]
    (pred,) = predict(loaded, [sample])

    # what evaluation must have done: the image at 0.1 mm (larger than a tile), tile by tile, boxes mapped back
    prep = prepare(sample, loaded.standardise)
    assert prep.cmap.scale_xy == (0.5, 0.5) and prep.pixels.shape[0] > TILING["tile"]
    tensor = torch.from_numpy(np.ascontiguousarray(prep.pixels))[None]
    wide = dataclasses.replace(loaded.network_config, score_thresh=EVALUATION_SCORE_FLOOR,
                               cross_class_suppression=False)
    tiled = detect_tiled(loaded.model, tensor, wide, tile=TILING["tile"], overlap=TILING["overlap"],
                         batch=TILING["batch"])
    # then the breast gate the run recorded (on by default): boxes centred outside the breast are dropped
    assert loaded.breast_gate == manifest.input_spec["breast_gate"] == {"margin_mm": 0.0}
    tiled = BreastGate().apply(tiled, prep.pixels, 0.1)
    assert len(tiled) > 0 and len(pred.boxes) == len(tiled)
    expected = prep.cmap.boxes_to_original(tiled.boxes.astype(np.float64))
    np.testing.assert_allclose(pred.boxes, expected, atol=1e-3)
    np.testing.assert_allclose(pred.scores, tiled.scores, atol=1e-5)
    rows, cols = 160, 112
    assert (pred.boxes >= -1e-3).all() and (pred.boxes[:, [0, 2]] <= cols + 1e-3).all()
    assert (pred.boxes[:, [1, 3]] <= rows + 1e-3).all()
    assert pred.boxes[:, 3].max() > prep.pixels.shape[0]  # beyond the input's rows: original pixels
    # whole-image mode (the model's own 64 px resize) would have answered differently
    whole = detect(loaded.model, [tensor], wide)[0]
    whole_boxes = prep.cmap.boxes_to_original(whole.boxes.astype(np.float64))
    assert whole_boxes.shape != pred.boxes.shape or not np.allclose(whole_boxes, pred.boxes, atol=1e-3)

    # a CPU deployment of a GPU run: fewer tiles per pass, written into the manifest, the same boxes
    cpu = export_run(tmp_path / "run", tmp_path / "cpu", {"tiling.batch": "1"}, dtype="float32")
    assert load_manifest(cpu).input_spec["tiling"] == dict(TILING, batch=1)
    assert load_manifest(out).input_spec["tiling"] == TILING  # the run itself is left as it was
    (one_by_one,) = predict(load_model(cpu), [sample])
    np.testing.assert_allclose(one_by_one.boxes, pred.boxes, atol=1e-3)
    with pytest.raises(ValueError, match="tiling.batch=0: batch must be at least 1"):
        export_run(tmp_path / "run", tmp_path / "bad", {"tiling.batch": "0"}, dtype="float32")

    # the run folder itself evaluates the same way
    from_run = load_model(tmp_path / "run")
    assert from_run.tiling == TILING and from_run.standardise.spacing_mm == 0.1
    (again,) = predict(from_run, [sample])
    np.testing.assert_allclose(again.boxes, pred.boxes, atol=1e-3)


def test_evaluate_reads_a_tiled_detector_with_the_test_time_flip_when_asked(tmp_path):
    pytest.importorskip("timm", reason="the EfficientNet-Lite backbone needs timm")
    from mccad.cli import main
    from training.evaluation.predict import load_model, predict

    samples = native_resolution_samples(tmp_path / "img", 3, seed=4)
    train_detector(samples[:2], None, crops_config(), tmp_path / "run", progress=False)
    from training.datasets.paper_csv import PaperBox, write_paper_csv

    csv = write_paper_csv(tmp_path / "img" / "eval.csv", {
        s.image_id: [PaperBox.from_corners(les.box, les.label) for les in s.lesions] for s in samples[2:]})
    reports = {flag: tmp_path / f"flip-{flag}" for flag in ("on", "off")}
    for flag, out in reports.items():
        assert main(["evaluate", "--model", str(tmp_path / "run"), "--data", str(csv), "--out", str(out),
                     "--n-boot", "10", "--false-positives", "0", "--test-time-flip", flag]) == 0
    on, off = (json.loads((reports[f] / "predictions.json").read_text()) for f in ("on", "off"))
    assert on["meta"]["test_time_flip"] is True and off["meta"]["test_time_flip"] is False
    loaded = load_model(tmp_path / "run")
    (flipped,) = predict(dataclasses.replace(loaded, tiling={**TILING, "hflip": True}), samples[2:])
    (plain,) = predict(loaded, samples[2:])
    assert on["images"][0]["scores"] == pytest.approx(flipped.scores.tolist(), abs=1e-6)
    assert off["images"][0]["scores"] == pytest.approx(plain.scores.tolist(), abs=1e-6)
    assert on["images"][0]["scores"] != pytest.approx(off["images"][0]["scores"], abs=1e-6)

    # export writes it with the operating point chosen under it; the run's own was validated without it
    from models.registry import load_manifest
    from training.export import export_run

    export_run(tmp_path / "run", tmp_path / "flip", {"thresholds.score_thresh": 0.4, "tiling.hflip": True},
               dtype="float32")
    assert load_manifest(tmp_path / "flip").input_spec["tiling"] == {**TILING, "hflip": True}
    assert load_model(tmp_path / "flip").tiling == {**TILING, "hflip": True}
    with pytest.raises(ValueError, match="tiling.hflip = False, not True"):
        export_run(tmp_path / "run", tmp_path / "bad", {"thresholds.score_thresh": "auto", "tiling.hflip": "on"},
                   dtype="float32")
    # so is the tile geometry: other tiles move the scores the run's operating point was measured on
    export_run(tmp_path / "run", tmp_path / "large",
               {"thresholds.score_thresh": 0.4, "tiling.tile": TILING["tile"] * 2}, dtype="float32")
    assert load_model(tmp_path / "large").tiling == {**TILING, "tile": TILING["tile"] * 2}
    with pytest.raises(ValueError, match="tiling.tile = 64, not 128"):
        export_run(tmp_path / "run", tmp_path / "bad", {"thresholds.score_thresh": "auto", "tiling.tile": 128},
                   dtype="float32")


def test_whole_validation_images_are_measured_as_the_exported_model_runs(tmp_path):
    """A crops-trained run validated on whole images (larger than a tile) scores them tile by tile behind the breast
    gate, as ``training.evaluation.predict`` runs the exported model: the same boxes and scores, not the model's own
    resize of the whole image to its training input size; crops still run whole."""
    pytest.importorskip("timm", reason="the EfficientNet-Lite backbone needs timm")
    from models.breast_gate import BreastGate
    from models.detector import detect
    from models.tiling import TilingSpec
    from training.datasets.images import prepare
    from models.detect import EVALUATION_SCORE_FLOOR
    from training.evaluation.predict import detector_runner, load_model, predict
    from training.trainers.detector import is_whole_image, validation_detections

    samples = native_resolution_samples(tmp_path / "img", 4, seed=6)  # 80 x 56 px at 0.1 mm: larger than a tile
    train_detector(samples[:2], samples[2:], crops_config(), tmp_path / "run", progress=False)
    (row,) = _rows(tmp_path / "run")
    assert row["val_images"] == 2.0 and row["val_whole_images"] == 2.0
    assert {"val_froc_sens_at_0.5fp", "val_froc_sens_at_1fp", "val_froc_sens_at_2fp"} <= set(row)
    # the operating point of this epoch on these images: what `mccad evaluate` reports for the exported model
    from training.evaluation.evaluate import froc_metrics

    (pred_a, pred_b) = predict(load_model(tmp_path / "run"), samples[2:])
    curve = froc_metrics(samples[2:], [pred_a, pred_b])["all"]
    expected = curve["threshold_at_fp_per_image"]["1.0"]
    assert row["val_froc_mean_sens"] == pytest.approx(curve["mean_sensitivity"], abs=1e-6)  # the tie-break
    assert row["val_threshold_at_1fp"] == pytest.approx(expected if expected is not None else math.nan, nan_ok=True,
                                                        abs=1e-5)
    # mccad export --score-thresh auto writes that operating point into the manifest
    from mccad.cli import main
    from models.registry import load_manifest

    assert 0 < row["val_threshold_at_1fp"] < 1  # this seed's tiny model has one (0.73)
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "auto"),
                 "--set", "thresholds.score_thresh=auto"]) == 0
    assert load_manifest(tmp_path / "auto").thresholds["score_thresh"] == pytest.approx(row["val_threshold_at_1fp"])
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "x"),
                 "--set", "thresholds.score_thresh=sometimes"]) == 2

    loaded = load_model(tmp_path / "run")
    wide = dataclasses.replace(loaded.network_config, score_thresh=EVALUATION_SCORE_FLOOR,
                               cross_class_suppression=False)
    runner = detector_runner(loaded)
    tiling = runner.tiling
    assert tiling == TilingSpec(**loaded.tiling) and runner.breast_gate == BreastGate.from_spec(loaded.breast_gate)
    for sample in samples[2:]:
        prep = prepare(sample, loaded.standardise)
        assert is_whole_image(prep.pixels, tiling)
        det = validation_detections(runner, prep.pixels, torch.device("cpu"))
        (pred,) = predict(loaded, [sample])
        assert len(det) > 0 and len(det) == len(pred.boxes)
        np.testing.assert_allclose(prep.cmap.boxes_to_original(det.boxes.astype(np.float64)), pred.boxes, atol=1e-3)
        np.testing.assert_allclose(det.scores, pred.scores, atol=1e-5)
        resized = detect(loaded.model, [torch.from_numpy(np.ascontiguousarray(prep.pixels))[None]], wide)[0]
        assert resized.boxes.shape != det.boxes.shape or not np.allclose(resized.boxes, det.boxes, atol=1e-3)
        # a crop no larger than a tile runs whole, without the gate
        crop = np.ascontiguousarray(prep.pixels[:TILING["tile"], :TILING["tile"]])
        assert not is_whole_image(crop, tiling)
        plain = validation_detections(runner, crop, torch.device("cpu"))
        direct = detect(loaded.model, [torch.from_numpy(crop)[None]], wide)[0]
        np.testing.assert_allclose(plain.boxes, direct.boxes, atol=1e-4)


def test_a_whole_image_detector_exports_no_tiling(tiny, tmp_path):
    from models.registry import load_manifest
    from training.export import export_run
    from training.evaluation.predict import load_model

    cfg = DetectorTrainConfig(epochs=1, max_side=160, detector=TINY_DETECTOR, samples_per_epoch=1)
    assert cfg.tiling() is None
    train_detector(tiny[:1], None, cfg, tmp_path / "run", progress=False)
    manifest = load_manifest(export_run(tmp_path / "run", tmp_path / "model"))
    assert manifest.architecture == "fpnnet-resnet50" and "tiling" not in manifest.input_spec
    assert manifest.input_spec["standardise"]["spacing_mm"] is None
    assert manifest.input_spec["standardise"]["max_side"] == 160
    assert load_model(tmp_path / "model").tiling is None


@pytest.mark.parametrize("bad,message", [
    ({"tile": 64, "tile_overlap": 64}, "tile_overlap"), ({"tile": 64, "tile_overlap": -1}, "tile_overlap"),
    ({"tile": 128, "tile_batch": 0}, "tile_batch"), ({"spacing_mm": 3.0}, "spacing_mm"),
    ({"samples_per_epoch": 0}, "samples_per_epoch"), ({"samples_per_epoch": -2}, "samples_per_epoch"),
    ({"time_budget_min": 0}, "time_budget_min"), ({"time_budget_min": -1.0}, "time_budget_min"),
])
def test_new_settings_are_checked_before_training(bad, message):
    with pytest.raises(ValueError, match=message):
        DetectorTrainConfig(epochs=1, **bad)


def test_tiling_record_of_the_config():
    assert DetectorTrainConfig(epochs=1).tiling() is None
    assert DetectorTrainConfig(epochs=1, tile=128, tile_overlap=0, tile_batch=3).tiling() == {
        "tile": 128, "overlap": 0, "batch": 3}


def test_a_run_made_before_a_setting_existed_resumes_when_the_setting_keeps_its_default():
    from training.trainers.common import _changed_keys, config_defaults, config_dict

    cfg = DetectorTrainConfig(epochs=3, tile=128)
    new = config_dict(cfg)
    old = {k: v for k, v in new.items() if k != "tile_overlap"}  # a checkpoint written before tile_overlap existed
    assert _changed_keys(old, new, config_defaults(cfg)) == []
    wider = config_dict(DetectorTrainConfig(epochs=3, tile=128, tile_overlap=32))
    assert _changed_keys(old, wider, config_defaults(cfg)) == ["tile_overlap"]
    assert _changed_keys({**old, "lr": 0.1}, new, config_defaults(cfg)) == ["lr"]
    # a warm start's source and the tiles per pass do not change what a resumed run trains
    moved = config_dict(DetectorTrainConfig(epochs=3, tile=128, tile_batch=16, init_from="elsewhere"))
    assert _changed_keys(new, moved, config_defaults(cfg)) == []


def test_init_from_starts_a_run_from_another_runs_weights(tiny, tmp_path):
    from training.trainers.common import TrainingError
    from training.export import export_run, load_run

    first = DetectorTrainConfig(epochs=1, max_side=160, detector=TINY_DETECTOR, samples_per_epoch=1, seed=0)
    train_detector(tiny[:2], None, first, tmp_path / "first", progress=False)
    export_run(tmp_path / "first", tmp_path / "bundle", dtype="float32")
    trained = dict(load_run(tmp_path / "first").model.named_parameters())  # BatchNorm statistics move at lr 0
    # another seed would start elsewhere; a warm start begins at the first run's weights, from a run or a bundle
    for source in (tmp_path / "first", tmp_path / "bundle"):
        cfg = dataclasses.replace(first, seed=5, lr=0.0, init_from=str(source))  # lr 0: the weights stay put
        train_detector(tiny[:2], None, cfg, tmp_path / f"warm-{source.name}", progress=False)
        warm = dict(load_run(tmp_path / f"warm-{source.name}").model.named_parameters())
        assert all(torch.equal(warm[k], trained[k]) for k in trained)
    cold = dataclasses.replace(first, seed=5, lr=0.0)
    train_detector(tiny[:2], None, cold, tmp_path / "cold", progress=False)
    assert not torch.equal(dict(load_run(tmp_path / "cold").model.named_parameters())[
                               "roi_heads.box_predictor.cls_score.weight"],
                           trained["roi_heads.box_predictor.cls_score.weight"])
    # another architecture, a missing folder: refused before any training
    wider = dataclasses.replace(first, detector=dict(TINY_DETECTOR, box_head_size=64),
                                init_from=str(tmp_path / "first"))
    with pytest.raises(TrainingError, match="another architecture"):
        train_detector(tiny[:2], None, wider, tmp_path / "wider", progress=False)
    with pytest.raises(TrainingError, match="does not exist"):
        train_detector(tiny[:2], None, dataclasses.replace(first, init_from=str(tmp_path / "nowhere")),
                       tmp_path / "nowhere-run", progress=False)


def test_export_writes_the_operating_point_it_is_given(tiny, tmp_path):
    from models.registry import load_detector, load_manifest
    from training.export import export_run

    cfg = DetectorTrainConfig(epochs=1, max_side=160, detector=TINY_DETECTOR, samples_per_epoch=1)
    train_detector(tiny[:2], None, cfg, tmp_path / "run", progress=False)
    export_run(tmp_path / "run", tmp_path / "paper", dtype="float32")
    export_run(tmp_path / "run", tmp_path / "chosen", {"thresholds.score_thresh": "0.62"}, dtype="float32")
    assert load_manifest(tmp_path / "paper").thresholds["score_thresh"] == pytest.approx(0.3)  # the run's own
    assert load_manifest(tmp_path / "chosen").thresholds["score_thresh"] == pytest.approx(0.62)
    assert load_detector(tmp_path / "chosen")[1].score_thresh == pytest.approx(0.62)  # what the pipeline runs at
    with pytest.raises(ValueError, match="score_thresh"):
        export_run(tmp_path / "run", tmp_path / "bad", {"thresholds.score_thresh": 1.5}, dtype="float32")
    # 'auto' needs an operating point measured on whole validation images: this run validated on none
    from training.trainers.common import TrainingError

    with pytest.raises(TrainingError, match="val_threshold_at_1fp"):
        export_run(tmp_path / "run", tmp_path / "auto", {"thresholds.score_thresh": "auto"}, dtype="float32")
    with pytest.raises(ValueError, match="tile by tile"):  # a whole-image model has no tiles to batch
        export_run(tmp_path / "run", tmp_path / "tiles", {"tiling.batch": 2}, dtype="float32")
    with pytest.raises(ValueError, match="tile by tile"):  # nor a tiled reading to mirror
        export_run(tmp_path / "run", tmp_path / "tiles", {"tiling.hflip": True}, dtype="float32")
    # a score mode chosen on validation images after training is written with the threshold chosen in that mode
    export_run(tmp_path / "run", tmp_path / "lesion",
               {"thresholds.score_thresh": 0.7, "detector.score_mode": "lesion"}, dtype="float32")
    assert load_manifest(tmp_path / "lesion").input_spec["detector"]["score_mode"] == "lesion"
    assert load_detector(tmp_path / "lesion")[1].score_mode == "lesion"
    assert load_manifest(tmp_path / "chosen").input_spec["detector"]["score_mode"] == "class"  # the run's own
    with pytest.raises(ValueError, match="score_mode = class, not lesion"):  # its operating point is per class
        export_run(tmp_path / "run", tmp_path / "bad",
                   {"thresholds.score_thresh": "auto", "detector.score_mode": "lesion"}, dtype="float32")
    # a malignant offset calibrated on validation images likewise, with the threshold chosen under it
    export_run(tmp_path / "run", tmp_path / "offset",
               {"thresholds.score_thresh": 0.5, "detector.malignant_logit_offset": "-0.75"}, dtype="float32")
    assert load_manifest(tmp_path / "offset").input_spec["detector"]["malignant_logit_offset"] == -0.75
    assert load_detector(tmp_path / "offset")[1].malignant_logit_offset == -0.75
    assert load_manifest(tmp_path / "chosen").input_spec["detector"]["malignant_logit_offset"] == 0  # the run's own
    with pytest.raises(ValueError, match="malignant_logit_offset = 0.0, not -0.75"):
        export_run(tmp_path / "run", tmp_path / "bad",
                   {"thresholds.score_thresh": "auto", "detector.malignant_logit_offset": -0.75}, dtype="float32")
    with pytest.raises(ValueError, match="malignant_logit_offset"):
        export_run(tmp_path / "run", tmp_path / "bad",
                   {"thresholds.score_thresh": 0.5, "detector.malignant_logit_offset": 50}, dtype="float32")
