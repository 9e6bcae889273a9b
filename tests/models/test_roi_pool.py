"""The box head's RoI pooling on several threads (models.roi_pool): the same tensor as torchvision's, bit for bit."""
from __future__ import annotations

import threading

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

from models.roi_pool import MIN_BOXES_TO_SPLIT, ThreadedRoIAlign


def _inputs(counts: tuple[int, ...], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = len(counts)
    features = {"0": torch.rand(n, 16, 64, 64, generator=g), "1": torch.rand(n, 16, 32, 32, generator=g),
                "2": torch.rand(n, 16, 16, 16, generator=g), "3": torch.rand(n, 16, 8, 8, generator=g),
                "pool": torch.rand(n, 16, 4, 4, generator=g)}
    boxes = []
    for count in counts:
        corner = torch.rand(count, 2, generator=g) * 200
        size = torch.rand(count, 2, generator=g) * 120 + 2  # every level gets boxes
        boxes.append(torch.cat([corner, corner + size], dim=1))
    return features, boxes, [(256, 256)] * n


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("counts", [(300, 300), (301, 0, 57), (MIN_BOXES_TO_SPLIT,)])
def test_threaded_pooling_is_torchvisions_bit_for_bit_in_the_boxes_order(threads, counts) -> None:
    features, boxes, shapes = _inputs(counts)
    reference = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    threaded = ThreadedRoIAlign().eval()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            threaded(features, boxes, shapes)  # the first call sets the level scales on one thread
            used: set[str] = set()
            original = MultiScaleRoIAlign.forward

            def spy(self, *args):
                used.add(threading.current_thread().name)
                return original(self, *args)

            MultiScaleRoIAlign.forward = spy
            try:
                got = threaded(features, boxes, shapes)
            finally:
                MultiScaleRoIAlign.forward = original
            want = reference(features, boxes, shapes)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(got, want)
    assert "MainThread" in used and len(used) >= 2  # it did split: the caller and at least one worker pooled


def test_gradients_and_small_batches_take_torchvisions_path() -> None:
    features, boxes, shapes = _inputs((40, 10))
    threaded = ThreadedRoIAlign().eval()
    reference = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    with torch.no_grad():
        threaded(features, boxes, shapes)
        assert torch.equal(threaded(features, boxes, shapes), reference(features, boxes, shapes))  # < the minimum
    leaf = {k: v.clone().requires_grad_(True) for k, v in features.items()}
    out = threaded(leaf, boxes, shapes)  # grad enabled (Grad-CAM): one thread, a graph to differentiate
    out.sum().backward()
    assert leaf["0"].grad is not None and float(leaf["0"].grad.abs().sum()) > 0


def test_the_shipped_architecture_uses_it_without_changing_the_state_dict(tiny_model_dir) -> None:
    from models.registry import load_detector

    model, _, _ = load_detector(tiny_model_dir / "detector")
    assert isinstance(model.roi_heads.box_roi_pool, ThreadedRoIAlign)
    assert not any(k.startswith("roi_heads.box_roi_pool") for k in model.state_dict())
