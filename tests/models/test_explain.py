"""CAMs and feature maps: in [0, 1], shaped like the input, and located where the image structure is."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from models.classifier import SPPNet
from models.detector import DetectorConfig, build_detector
from models.explain import classifier_cam, detector_cam, feature_maps

SMALL = DetectorConfig(min_size=128, max_size=160, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def detector() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_detector(SMALL).eval()


def blob_image(h: int, w: int, y: int, x: int, size: int = 8) -> torch.Tensor:
    """Mid-grey image with one bright square. Mid-grey normalises to 0, the value convolutions pad with, so the
    only structure a random network can respond to is the square."""
    image = torch.full((1, h, w), 0.5)
    image[:, y:y + size, x:x + size] = 1.0
    return image


def assert_unit_map(m: np.ndarray, shape: tuple[int, int]) -> None:
    assert m.shape == shape and m.dtype == np.float32
    assert m.min() >= 0.0 and m.max() <= 1.0


def strongest_deviation(m: np.ndarray) -> tuple[int, int]:
    y, x = np.unravel_index(np.argmax(np.abs(m - np.median(m))), m.shape)
    return int(y), int(x)


def test_detector_cam_is_a_unit_map_in_input_pixels(detector: torch.nn.Module) -> None:
    torch.manual_seed(1)
    image = torch.rand(1, 96, 200)  # resized by the detector to 76 x 160 internally, padded to 96 x 160
    malignant = detector_cam(detector, image, target_label=2)
    benign = detector_cam(detector, image, target_label=1)
    assert_unit_map(malignant, (96, 200))
    assert_unit_map(benign, (96, 200))
    assert malignant.max() == pytest.approx(1.0)
    assert not np.allclose(malignant, benign)
    for p in detector.parameters():
        assert p.grad is None


def test_classifier_cam_is_a_unit_map_for_each_class() -> None:
    torch.manual_seed(2)
    model = SPPNet(levels=(1, 2)).eval()
    image = torch.rand(1, 70, 90)
    cams = [classifier_cam(model, image, target_class=c) for c in (0, 1)]
    for cam in cams:
        assert_unit_map(cam, (70, 90))
    with pytest.raises(ValueError):
        classifier_cam(model, image, target_class=2)


@pytest.mark.parametrize("which", ["sppnet", "detector"])
def test_feature_maps_per_stage_locate_structure_in_input_pixels(which: str, detector: torch.nn.Module) -> None:
    torch.manual_seed(4)
    model = SPPNet().eval() if which == "sppnet" else detector
    image = blob_image(80, 150, y=50, x=110)
    maps = feature_maps(model, image)
    assert list(maps) == ["layer1", "layer2", "layer3", "layer4"]
    for m in maps.values():
        assert_unit_map(m, (80, 150))
    y, x = strongest_deviation(maps["layer1"])
    assert abs(y - 54) <= 8 and abs(x - 114) <= 8, (y, x)


def test_feature_maps_reject_other_models() -> None:
    with pytest.raises(TypeError):
        feature_maps(torch.nn.Conv2d(1, 1, 3), torch.rand(1, 32, 32))
