"""Fixtures shared across packages: a tiny, untrained model bundle that exercises every code path quickly."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


def make_tiny_bundle(folder: Path, *, patch_heads: bool = True, seed: int = 0) -> Path:
    """A bundle with the real architectures at a small input size and random weights: for mechanics, not accuracy."""
    import torch

    from models.classifier import ClassifierConfig, build_classifier
    from models.detector import DetectorConfig, build_detector
    from models.registry import ModelManifest, save_model

    torch.manual_seed(seed)
    det_cfg = DetectorConfig(min_size=256, max_size=384, score_thresh=0.0, detections_per_img=5,
                             rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50)
    common = dict(version="0.0.0-test", training_data="none (random initialisation, tests only)",
                  synthetic_only=True, metrics={})
    save_model(folder / "detector", build_detector(det_cfg), ModelManifest(
        name="tiny-fpnnet", architecture="fpnnet-resnet50", role="detector",
        classes=["background", "benign", "malignant"],
        input_spec={"standardise": {"max_side": 384}, "detector": det_cfg.to_dict()}, thresholds={}, **common))
    cls_cfg = ClassifierConfig(input_size=128, patch_size=32)
    roles = ["sppnet"] + (["pathotype_incl", "pathotype_excl", "er"] if patch_heads else [])
    for role in roles:
        save_model(folder / role, build_classifier(cls_cfg), ModelManifest(
            name=f"tiny-{role}", architecture="sppnet-resnet18", role=role, classes=["negative", "positive"],
            input_spec={"classifier": cls_cfg.to_dict()}, thresholds={}, **common))
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("tiny-bundle"))


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread for tests of tiny models: two OpenMP threads spin against each other when other processes
    share the two cores (several times slower); restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
