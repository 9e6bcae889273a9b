"""SPPNet: any input size, configurable pyramid, probabilities for batches of mixed images."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from models.classifier import ClassifierConfig, SpatialPyramidPool, SPPNet, build_classifier, classify, fit_to_square


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def sppnet() -> SPPNet:
    torch.manual_seed(0)
    return build_classifier(ClassifierConfig()).eval()


def test_pyramid_pooling_output_length_depends_on_levels_not_on_input_size() -> None:
    spp = SpatialPyramidPool((1, 2, 4))
    for h, w in [(1, 1), (3, 7), (16, 9)]:
        assert spp(torch.rand(2, 8, h, w)).shape == (2, 8 * 21)
    # level 1 of max pooling is the global maximum of each channel
    x = torch.rand(1, 4, 5, 6)
    np.testing.assert_allclose(SpatialPyramidPool((1,))(x).numpy(), x.amax(dim=(2, 3)).numpy())


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (2, 3, 64, 96), (1, 1, 150, 61)])
def test_sppnet_accepts_any_input_size(sppnet: SPPNet, shape: tuple[int, ...]) -> None:
    with torch.inference_mode():
        assert sppnet(torch.rand(*shape)).shape == (shape[0], 2)


def test_levels_and_classes_shape_the_classifier() -> None:
    model = SPPNet(num_classes=3, levels=(1, 3))
    assert model.fc.in_features == 512 * (1 + 9) and model.fc.out_features == 3
    assert model.target_layer is model.layer4
    with pytest.raises(ValueError):
        ClassifierConfig(levels=())
    with pytest.raises(ValueError):
        model.eval()(torch.rand(1, 1, 16, 64))


def test_feature_stages_have_resnet18_channels_and_strides(sppnet: SPPNet) -> None:
    with torch.inference_mode():
        stages = sppnet.feature_stages(torch.rand(1, 1, 64, 128))
    assert {k: tuple(v.shape) for k, v in stages.items()} == {
        "layer1": (1, 64, 16, 32), "layer2": (1, 128, 8, 16), "layer3": (1, 256, 4, 8), "layer4": (1, 512, 2, 4)}


def test_grey_input_equals_the_same_image_repeated_in_three_channels(sppnet: SPPNet) -> None:
    grey = torch.rand(1, 1, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(sppnet(grey), sppnet(grey.repeat(1, 3, 1, 1)))


def test_fit_to_square_keeps_aspect_and_pads_with_zero() -> None:
    image = torch.ones(1, 100, 50)
    fitted = fit_to_square(image, 64)
    assert fitted.shape == (1, 64, 64)
    assert fitted[0, :, :32].min() > 0.99 and fitted[0, :, 32:].max() == 0


def test_classify_returns_probabilities_batched_like_one_by_one(sppnet: SPPNet) -> None:
    torch.manual_seed(1)
    config = ClassifierConfig()
    images = [torch.rand(1, 120, 80), torch.rand(3, 60, 200), torch.rand(1, 40, 40)]
    together = classify(sppnet, images, config, size=64, batch_size=2)
    assert together.shape == (3, 2) and together.dtype == np.float32
    np.testing.assert_allclose(together.sum(axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([classify(sppnet, [img], config, size=64) for img in images])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    assert classify(sppnet, [], config).shape == (0, 2)


def test_a_few_steps_learn_to_separate_bright_spots_from_plain_images() -> None:
    torch.manual_seed(2)
    model = SPPNet(levels=(1, 2))
    images = torch.full((8, 1, 48, 48), 0.3)
    labels = torch.tensor([0, 1] * 4)
    for i in range(1, 8, 2):
        images[i, :, 10 + i:14 + i, 20:24] = 1.0
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    model.train()
    for _ in range(6):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0], losses
