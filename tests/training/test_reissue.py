"""A model folder re-issued with settings chosen after training (``training.reissue``, ``mccad export MODEL``): the
same weights byte for byte, the settings given and only those changed, a version of its own, the source's evaluation
dropped unless a new one is attached, a card that says what changed above the card it came from; and every request
that cannot be honoured refused before anything is written."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.detector import CLASS_NAMES, DetectorConfig, build_detector
from models.errors import WeightsTampered
from models.registry import ModelManifest, load_detector, load_manifest, save_model, sha256_of
from training.reissue import reissue_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py

TILING = {"tile": 64, "overlap": 16, "batch": 2}
SOURCE_CARD = "# Model card: tiny 0.1.0\n\nintro\n\n## Training\n\n| a | b |\n\n### Detail\n\ntext\n"


def _detector_folder(folder: Path, tiling: dict | None = TILING) -> Path:
    torch.manual_seed(0)
    config = DetectorConfig(min_size=64, max_size=64, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
                            fpn_channels=16, box_head_size=32, trainable_backbone_layers=0)
    spec = {"standardise": {"spacing_mm": 0.1}, **({"tiling": tiling} if tiling else {})}
    manifest = ModelManifest(name="tiny", version="0.1.0", architecture="fpnnet-resnet50", role="detector",
                             classes=list(CLASS_NAMES), thresholds={"score_thresh": 0.4, "nms_thresh": 0.3},
                             input_spec=spec, training_data="tiny phantoms", synthetic_only=True,
                             metrics={"validation": {"val_auc": 0.5}, "evaluation": {"image": {"auc": 0.6}}})
    save_model(folder, build_detector(config), manifest)
    (folder / "MODEL_CARD.md").write_text(SOURCE_CARD)
    return folder


def _evaluation(path: Path) -> Path:
    path.write_text(json.dumps({
        "levels": {"image": {"n": 4, "auc": {"auc": 0.75, "ci_low": 0.5, "ci_high": 1.0},
                             "table": {"accuracy": 0.75, "sensitivity": {"malignant": 1.0, "benign": 0.5}}}},
        "froc": {"all": {"sensitivity_at_fp_per_image": {"1.0": 0.9}}}, "command": "mccad evaluate ..."}))
    return path


def test_a_reissued_detector_keeps_its_weights_and_changes_only_what_was_given(tmp_path):
    source = _detector_folder(tmp_path / "src")
    out = reissue_model(source, tmp_path / "new", {"thresholds.score_thresh": "0.33", "tiling.hflip": "on"},
                        version="0.2.0", metrics_json=_evaluation(tmp_path / "metrics.json"))
    old, new = load_manifest(source), load_manifest(out)
    assert (out / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    assert new.sha256 == old.sha256 == sha256_of(out / "model.safetensors")
    assert new.version == "0.2.0" and new.name == "tiny" and new.synthetic_only
    assert new.input_spec["tiling"] == {**TILING, "hflip": True}
    # the network's own thresholds were written into ``thresholds`` when the source was saved (each setting once)
    assert new.thresholds == {"score_thresh": 0.33, "nms_thresh": 0.3, "detections_per_img": 250,
                              "cross_class_iou": 0.5}
    assert new.input_spec["detector"] == old.input_spec["detector"]
    assert new.training_data == "tiny phantoms"
    assert new.metrics["validation"] == {"val_auc": 0.5}
    assert new.metrics["evaluation"]["image"]["auc"] == 0.75  # the attached one, not the source's 0.6
    _, config, _ = load_detector(out)
    assert config.score_thresh == 0.33
    from training.evaluation.predict import load_model

    assert load_model(out).tiling == {**TILING, "hflip": True}  # as evaluation and the pipeline read it
    card = (out / "MODEL_CARD.md").read_text()
    assert card.startswith("# Model card: tiny 0.2.0\n")
    assert "## Re-issued from tiny 0.1.0" in card
    assert "| input_spec.tiling.hflip | False | True |" in card
    assert "| thresholds.score_thresh | 0.4 | 0.33 |" in card
    assert "FROC sensitivity at 1.0 FP/image: 0.9" in card
    # the source's card follows, its title dropped and its headings one level down
    assert "## The card of tiny 0.1.0" in card and "### Training" in card and "#### Detail" in card
    assert "# Model card: tiny 0.1.0" not in card
    assert load_manifest(source).version == "0.1.0"  # the source is left as it was


def test_without_a_new_evaluation_the_sources_is_dropped_and_the_card_says_so(tmp_path):
    source = _detector_folder(tmp_path / "src")
    out = reissue_model(source, tmp_path / "new", {"tiling.batch": 1, "detector.malignant_logit_offset": -1.0},
                        version="0.1.1", training_data="tiny phantoms, read otherwise")
    new = load_manifest(out)
    assert "evaluation" not in new.metrics and new.training_data == "tiny phantoms, read otherwise"
    assert new.input_spec["tiling"]["batch"] == 1 and new.input_spec["detector"]["malignant_logit_offset"] == -1.0
    card = (out / "MODEL_CARD.md").read_text()
    assert "evaluation measured another reading" in card
    assert "| input_spec.detector.malignant_logit_offset | 0.0 | -1.0 |" in card


def test_a_reissued_detector_may_read_images_in_other_tiles(tmp_path):
    source = _detector_folder(tmp_path / "src")
    out = reissue_model(source, tmp_path / "new", {"thresholds.score_thresh": 0.3, "tiling.tile": 256,
                                                   "tiling.overlap": 32}, version="0.2.0")
    assert load_manifest(out).input_spec["tiling"] == {**TILING, "tile": 256, "overlap": 32}
    from training.evaluation.predict import load_model

    assert load_model(out).tiling["tile"] == 256
    card = (out / "MODEL_CARD.md").read_text()
    assert "| input_spec.tiling.tile | 64 | 256 |" in card and "| input_spec.tiling.overlap | 16 | 32 |" in card
    assert "hflip" not in card  # unchanged, and absent from both manifests
    flipped = reissue_model(source, tmp_path / "flip", {"thresholds.score_thresh": 0.3, "tiling.hflip": True},
                            version="0.3.0")
    assert load_manifest(flipped).input_spec["tiling"] == {**TILING, "hflip": True}
    assert "| input_spec.tiling.hflip | False | True |" in (flipped / "MODEL_CARD.md").read_text()


@pytest.mark.parametrize("version,overrides,message", [
    ("0.1.0", {}, "version of its own"),
    ("0.2.0", {"thresholds.score_thresh": "auto"}, "not a training run"),
    ("0.2.0", {"thresholds.score_thresh": "1.5"}, r"thresholds\.score_thresh=1\.5: score_thresh must lie in \(0, 1\)"),
    ("0.2.0", {"thresholds.score_thresh": "high"}, r"thresholds\.score_thresh: score_thresh takes float, not 'high'"),
    ("0.2.0", {"tiling.batch": "0"}, r"tiling\.batch=0: batch must be at least 1"),
    ("0.2.0", {"detector.score_mode": "box"}, r"detector\.score_mode=box: unknown score_mode 'box'"),
    ("0.2.0", {"detector.malignant_logit_offset": "50"}, r"detector\.malignant_logit_offset=50: .*offset"),
    ("0.2.0", {"tiling.tile": "64", "tiling.overlap": "64"}, r"tiling\.tile=64, tiling\.overlap=64: overlap"),
    ("0.2.0", {"tiling.tile": "0"}, r"tiling\.tile=0: tile"),
    ("0.2.0", {"tiling.hflip": "maybe"}, r"tiling\.hflip: hflip takes bool, not 'maybe'"),
    ("0.2.0", {"tiling.layout": "even"}, r"tiling\.layout: 'layout' is not a tiling setting"),
    ("0.2.0", {"detector.backbone": "resnet50"}, r"detector\.backbone: 'backbone' is not a detector setting chosen"),
    ("0.2.0", {"score_thresh": "0.3"}, r"--set score_thresh: unknown section 'score_thresh'"),
    ("0.2.0", {"breast_gate.margin_mm": "1"}, "has no breast_gate"),
])
def test_requests_that_cannot_be_honoured_are_refused_before_writing(tmp_path, version, overrides, message):
    source = _detector_folder(tmp_path / "src")
    with pytest.raises(ValueError, match=message):
        reissue_model(source, tmp_path / "new", overrides, version=version)
    assert not (tmp_path / "new").exists()


def test_the_flip_of_a_whole_image_detector_and_a_folder_over_itself_are_refused(tmp_path):
    whole = _detector_folder(tmp_path / "whole", tiling=None)
    with pytest.raises(ValueError, match="tile by tile"):
        reissue_model(whole, tmp_path / "new", {"tiling.hflip": "on"}, version="0.2.0")
    with pytest.raises(ValueError, match="another folder"):
        reissue_model(whole, whole, version="0.2.0")


def test_changed_weights_are_not_reissued(tmp_path):
    source = _detector_folder(tmp_path / "src")
    data = bytearray((source / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (source / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(WeightsTampered):
        reissue_model(source, tmp_path / "new", version="0.2.0")


def test_mccad_export_reissues_a_model_folder_and_refuses_run_only_options(tmp_path, capsys):
    from mccad.cli import main

    source = _detector_folder(tmp_path / "src")
    assert main(["export", str(source), "--out", str(tmp_path / "new"), "--version", "0.2.0",
                 "--set", "tiling.hflip=on", "--set", "thresholds.score_thresh=0.35"]) == 0
    new = load_manifest(tmp_path / "new")
    assert new.input_spec["tiling"]["hflip"] is True and new.thresholds["score_thresh"] == 0.35
    for bad, message in ((["--set", "tiling.tile"], "expected SECTION.KEY=VALUE"),
                         (["--set", "tiling.tile=64", "--set", "tiling.tile=96"], "given twice"),
                         (["--set", "tiling.tiles=64"], "'tiles' is not a tiling setting")):
        assert main(["export", str(source), "--out", str(tmp_path / "z"), "--version", "0.3.0", *bad]) == 2
        assert message in capsys.readouterr().err
    assert main(["export", str(source), "--out", str(tmp_path / "x")]) == 2
    assert "--version" in capsys.readouterr().err
    assert main(["export", str(source), "--out", str(tmp_path / "y"), "--version", "0.3.0", "--dtype",
                 "float32"]) == 2
    assert "keeps" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
