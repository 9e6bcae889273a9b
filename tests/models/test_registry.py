"""Models are data: save and load round trips, and every way a model folder can be wrong fails clearly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models.classifier import ClassifierConfig, build_classifier
from models.detector import CLASS_NAMES, DetectorConfig, build_detector, detect
from models.errors import ArchitectureMismatch, ModelNotFound, RegistryError, WeightsNotFound, WeightsTampered
from models.registry import (
    MANIFEST,
    ModelManifest,
    load_classifier,
    load_detector,
    load_manifest,
    save_model,
    sha256_of,
)

SMALL_CLASSIFIER = ClassifierConfig(levels=(1, 2), input_size=64, patch_size=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


def classifier_manifest(**changes: object) -> ModelManifest:
    base = dict(name="er-head", version="0.1.0", architecture="sppnet-resnet18", role="er",
                classes=["er_negative", "er_positive"], training_data="synthetic patches", synthetic_only=True,
                metrics={"auc": 0.5})
    return ModelManifest(**{**base, **changes})  # type: ignore[arg-type]


@pytest.fixture()
def saved_classifier(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_classifier(SMALL_CLASSIFIER).eval()
    save_model(tmp_path / "er", model, classifier_manifest())
    return tmp_path / "er", model


def test_classifier_round_trip_is_fp16_on_disk_and_fp32_in_memory(saved_classifier: tuple[Path, torch.nn.Module]) -> None:
    folder, original = saved_classifier
    written = load_manifest(folder)
    assert written.sha256 == sha256_of(folder / "model.safetensors")
    assert written.dtype == "float16" and written.synthetic_only
    assert written.input_spec["classifier"]["levels"] == [1, 2]
    stored = load_file(str(folder / "model.safetensors"))
    assert stored["fc.weight"].dtype == torch.float16
    assert not any(k.endswith("num_batches_tracked") for k in stored)

    model, config, manifest = load_classifier(folder)
    assert config == SMALL_CLASSIFIER and manifest == written
    assert model.fc.weight.dtype == torch.float32 and not model.training
    x = torch.rand(2, 1, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), original(x), atol=2e-2, rtol=2e-2)  # fp16 rounding only


def test_a_changed_weights_file_is_refused_naming_both_hashes(saved_classifier: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = saved_classifier
    weights = folder / "model.safetensors"
    expected = load_manifest(folder).sha256
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsTampered) as caught:
        load_classifier(folder)
    message = str(caught.value)
    assert str(weights) in message and expected in message and sha256_of(weights) in message


def test_a_detector_folder_is_refused_where_a_classifier_is_expected(saved_classifier: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = saved_classifier
    with pytest.raises(ArchitectureMismatch, match="fpnnet-resnet50"):
        load_detector(folder)


def test_weights_that_do_not_fit_the_configured_network_are_refused(saved_classifier: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = saved_classifier
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["input_spec"]["classifier"]["levels"] = [1, 2, 4]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArchitectureMismatch, match="fc.weight"):
        load_classifier(folder)


def test_missing_and_invalid_folders_fail_with_registry_errors(tmp_path: Path,
                                                               saved_classifier: tuple[Path, torch.nn.Module]) -> None:
    with pytest.raises(ModelNotFound, match="MCCAD_MODEL_DIR"):
        load_classifier(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="manifest.json is missing"):
        load_classifier(tmp_path / "empty")
    folder, _ = saved_classifier
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "architecture": "vgg16"}))
    with pytest.raises(ModelNotFound, match="architecture"):
        load_manifest(folder)
    (folder / MANIFEST).write_text(json.dumps({**manifest, "weights_file": "../elsewhere.safetensors"}))
    with pytest.raises(RegistryError):
        load_classifier(folder)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    (folder / "model.safetensors").unlink()
    with pytest.raises(WeightsNotFound):
        load_classifier(folder)


def test_saving_under_the_wrong_architecture_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchitectureMismatch):
        save_model(tmp_path / "x", build_classifier(SMALL_CLASSIFIER), classifier_manifest(architecture="fpnnet-resnet50"))


def test_weights_that_overflow_float16_are_not_saved_as_infinities(tmp_path: Path) -> None:
    model = build_classifier(SMALL_CLASSIFIER)
    with torch.no_grad():
        model.bn1.running_var[0] = 1e6
    with pytest.raises(ValueError, match="bn1.running_var"):
        save_model(tmp_path / "big", model, classifier_manifest())
    written = save_model(tmp_path / "big32", model, classifier_manifest(), dtype=torch.float32)
    assert written.dtype == "float32"
    loaded, _, _ = load_classifier(tmp_path / "big32")
    assert float(loaded.bn1.running_var[0]) == 1e6


def test_detector_round_trip_with_manifest_thresholds(tmp_path: Path) -> None:
    torch.manual_seed(1)
    config = DetectorConfig(min_size=128, max_size=128, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50)
    model = build_detector(config).eval()
    manifest = ModelManifest(name="fpnnet-demo", version="0.0.1", architecture="fpnnet-resnet50", role="detector",
                             classes=list(CLASS_NAMES), thresholds={"score_thresh": 0.4},
                             input_spec={"standardise": {"method": "column-sum"}})
    save_model(tmp_path / "det", model, manifest)
    loaded, loaded_config, loaded_manifest = load_detector(tmp_path / "det")
    assert loaded_manifest.input_spec["standardise"] == {"method": "column-sum"}
    assert loaded_config.score_thresh == 0.4 and loaded_config.min_size == 128
    assert loaded.roi_heads.score_thresh == 0.4
    image = torch.rand(1, 128, 128)
    (ours,) = detect(loaded, [image], loaded_config)
    (theirs,) = detect(model, [image], loaded_config)
    assert (ours.scores >= 0.4).all()
    assert abs(len(ours) - len(theirs)) <= max(2, len(theirs) // 10)  # fp16 weights move a few borderline boxes
