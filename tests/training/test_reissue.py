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

TILING = {"tile": 64, "overlap": 16, "batch": 2, "join": False}
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
    out = reissue_model(source, tmp_path / "new", version="0.2.0", score_thresh=0.33, test_time_flip=True,
                        metrics_json=_evaluation(tmp_path / "metrics.json"))
    old, new = load_manifest(source), load_manifest(out)
    assert (out / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    assert new.sha256 == old.sha256 == sha256_of(out / "model.safetensors")
    assert new.version == "0.2.0" and new.name == "tiny" and new.synthetic_only
    assert new.input_spec["tiling"] == {**TILING, "hflip": True}
    assert new.thresholds == {"score_thresh": 0.33, "nms_thresh": 0.3}
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
    out = reissue_model(source, tmp_path / "new", version="0.1.1", tile_batch=1, malignant_offset=-1.0,
                        training_data="tiny phantoms, read otherwise")
    new = load_manifest(out)
    assert "evaluation" not in new.metrics and new.training_data == "tiny phantoms, read otherwise"
    assert new.input_spec["tiling"]["batch"] == 1 and new.input_spec["detector"]["malignant_logit_offset"] == -1.0
    card = (out / "MODEL_CARD.md").read_text()
    assert "evaluation measured another reading" in card
    assert "| input_spec.detector.malignant_logit_offset | 0.0 | -1.0 |" in card


def test_a_reissued_detector_may_read_images_in_other_tiles(tmp_path):
    source = _detector_folder(tmp_path / "src")
    out = reissue_model(source, tmp_path / "new", version="0.2.0", score_thresh=0.3, tile=256, tile_overlap=32)
    assert load_manifest(out).input_spec["tiling"] == {**TILING, "tile": 256, "overlap": 32}
    from training.evaluation.predict import load_model

    assert load_model(out).tiling["tile"] == 256
    card = (out / "MODEL_CARD.md").read_text()
    assert "| input_spec.tiling.tile | 64 | 256 |" in card and "| input_spec.tiling.overlap | 16 | 32 |" in card
    assert "hflip" not in card  # unchanged, and absent from both manifests
    flipped = reissue_model(source, tmp_path / "flip", version="0.3.0", score_thresh=0.3, test_time_flip=True)
    assert load_manifest(flipped).input_spec["tiling"] == {**TILING, "hflip": True}
    assert "| input_spec.tiling.hflip | False | True |" in (flipped / "MODEL_CARD.md").read_text()


@pytest.mark.parametrize("kwargs,message", [
    ({"version": "0.1.0"}, "version of its own"),
    ({"version": "0.2.0", "score_thresh": "auto"}, "not a training run"),
    ({"version": "0.2.0", "score_thresh": 1.5}, "score_thresh"),
    ({"version": "0.2.0", "tile_batch": 0}, "1-256"),
    ({"version": "0.2.0", "score_mode": "box"}, "score_mode"),
    ({"version": "0.2.0", "malignant_offset": 50.0}, "offset"),
    ({"version": "0.2.0", "tile": 64, "tile_overlap": 64}, "overlap"),
    ({"version": "0.2.0", "tile": 0}, "tile"),
])
def test_requests_that_cannot_be_honoured_are_refused_before_writing(tmp_path, kwargs, message):
    source = _detector_folder(tmp_path / "src")
    with pytest.raises(ValueError, match=message):
        reissue_model(source, tmp_path / "new", **kwargs)
    assert not (tmp_path / "new").exists()


def test_the_flip_of_a_whole_image_detector_and_a_folder_over_itself_are_refused(tmp_path):
    whole = _detector_folder(tmp_path / "whole", tiling=None)
    with pytest.raises(ValueError, match="tile by tile"):
        reissue_model(whole, tmp_path / "new", version="0.2.0", test_time_flip=True)
    with pytest.raises(ValueError, match="tile by tile"):
        reissue_model(whole, tmp_path / "new", version="0.2.0", tile=256)
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
                 "--test-time-flip", "on", "--score-thresh", "0.35"]) == 0
    new = load_manifest(tmp_path / "new")
    assert new.input_spec["tiling"]["hflip"] is True and new.thresholds["score_thresh"] == 0.35
    assert main(["export", str(source), "--out", str(tmp_path / "x")]) == 2
    assert "--version" in capsys.readouterr().err
    assert main(["export", str(source), "--out", str(tmp_path / "y"), "--version", "0.3.0", "--dtype",
                 "float32"]) == 2
    assert "keeps" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
