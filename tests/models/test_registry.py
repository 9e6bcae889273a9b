"""Models are data: save and load round trips, and every way a model folder can be wrong fails clearly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models.classifier import ClassifierConfig, build_classifier
from models.detector import CLASS_NAMES, DetectorConfig, build_detector, detect
from models.errors import (ArchitectureMismatch, ManifestInvalid, ModelNotFound, RegistryError, WeightsNotFound,
                           WeightsTampered)
from models.registry import (
    DETECTOR_THRESHOLD_KEYS,
    FORMAT_VERSION,
    MANIFEST,
    ModelManifest,
    load_classifier,
    load_detector,
    load_manifest,
    save_model,
    sha256_of,
    write_manifest,
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


def test_classifier_round_trip_is_fp16_on_disk_and_fp32_in_memory(
        saved_classifier: tuple[Path, torch.nn.Module]) -> None:
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


def test_a_detector_folder_is_refused_where_a_classifier_is_expected(
        saved_classifier: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = saved_classifier
    with pytest.raises(ArchitectureMismatch, match="fpnnet-resnet50"):
        load_detector(folder)


def test_weights_that_do_not_fit_the_configured_network_are_refused(
        saved_classifier: tuple[Path, torch.nn.Module]) -> None:
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
    with pytest.raises(ManifestInvalid, match="architecture"):
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
        save_model(tmp_path / "x", build_classifier(SMALL_CLASSIFIER),
                   classifier_manifest(architecture="fpnnet-resnet50"))


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
                             input_spec={"standardise": {"max_side": 256}})
    save_model(tmp_path / "det", model, manifest)
    loaded, loaded_config, loaded_manifest = load_detector(tmp_path / "det")
    assert loaded_manifest.input_spec["standardise"] == {"max_side": 256}
    assert loaded_config.score_thresh == 0.4 and loaded_config.min_size == 128
    # each setting once: the network config holds no threshold; the config's own fill the thresholds not given
    assert not set(DETECTOR_THRESHOLD_KEYS) & set(loaded_manifest.input_spec["detector"])
    assert loaded_manifest.thresholds == {"score_thresh": 0.4, "nms_thresh": config.nms_thresh,
                                          "detections_per_img": config.detections_per_img,
                                          "cross_class_iou": config.cross_class_iou}
    assert loaded.roi_heads.score_thresh == 0.4
    image = torch.rand(1, 128, 128)
    (ours,) = detect(loaded, [image], loaded_config)
    (theirs,) = detect(model, [image], loaded_config)
    assert (ours.scores >= 0.4).all()
    assert abs(len(ours) - len(theirs)) <= max(2, len(theirs) // 10)  # fp16 weights move a few borderline boxes


def _edited(folder: Path, edit) -> None:
    data = json.loads((folder / MANIFEST).read_text())
    edit(data)
    (folder / MANIFEST).write_text(json.dumps(data))


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.pop("format_version"), "no format_version: it is of format 1"),
    (lambda m: m.update(format_version=FORMAT_VERSION + 1), "newer than this mccad reads"),
    (lambda m: m["input_spec"]["detector"].update(score_thresh=0.3), r"input_spec.detector holds \['score_thresh'\]"),
    (lambda m: m["thresholds"].update(score_threshold=0.3), r"thresholds holds \['score_threshold'\]"),
    (lambda m: m["input_spec"].update(extra={}), r"input_spec holds \['extra'\]"),
    (lambda m: m["input_spec"]["detector"].update(nms=0.3),
     r"input_spec.detector with thresholds is invalid \(unknown detector"),
    (lambda m: m["input_spec"].update(tiling={"tile": 64, "overlap": 8, "layout": "even"}),
     r"input_spec.tiling is invalid .*layout"),
    (lambda m: m["input_spec"].update(breast_gate={"margin": 1.0}), r"input_spec.breast_gate is invalid .*margin"),
    (lambda m: m["input_spec"].update(standardise={"spacing": 0.1}), r"input_spec.standardise is invalid .*spacing"),
    (lambda m: m["thresholds"].update(score_thresh=1.5),
     r"input_spec.detector with thresholds is invalid .*score_thresh"),
])
def test_one_strict_reader_refuses_what_a_manifest_must_not_hold(tmp_path: Path, edit, message) -> None:
    """Every loader reads a manifest through ``load_manifest``: an unknown key, a setting twice, a value its class
    refuses, no format version or a newer one fail there, with ``ManifestInvalid`` naming the file and setting,
    for the pipeline, evaluation and the benchmark alike."""
    from bench.inference import load_models
    from models.pipeline import Pipeline
    from training.evaluation.predict import load_model

    bundle = tmp_path / "bundle"  # the manifest is refused before any weight is read: it needs none
    (bundle / "detector").mkdir(parents=True)
    write_manifest(bundle / "detector", ModelManifest(
        name="d", version="0.1.0", architecture="fpnnet-resnet50", role="detector", classes=list(CLASS_NAMES),
        input_spec={"standardise": {"max_side": 64}, "detector": {"min_size": 64, "max_size": 64}},
        thresholds={"score_thresh": 0.4}))
    _edited(bundle / "detector", edit)
    loaders = (load_manifest, load_detector, load_model, lambda d: Pipeline.from_model_dir(d.parent),
               lambda d: load_models(d.parent, quick=True))
    for loader in loaders:
        with pytest.raises(ManifestInvalid, match=message) as caught:
            loader(bundle / "detector")
        assert str(bundle / "detector" / MANIFEST) in str(caught.value)

