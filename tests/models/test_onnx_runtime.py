"""The detector's backbone in ONNX Runtime (models.onnx_runtime): same boxes as PyTorch, eager model left alone for
explanations, a clear refusal or an eager fallback where it cannot run."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models.onnx_runtime import (
    PROBE_SIDE,
    OnnxBackbone,
    OnnxRpnHead,
    RuntimeUnavailable,
    detection_model,
    onnxruntime_available,
    resolve_runtime,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "weights" / "default"

needs_ort = pytest.mark.skipif(not onnxruntime_available(), reason="onnxruntime and onnx are project dependencies")


@needs_ort
def test_the_shipped_detector_draws_the_same_boxes_in_onnx_runtime_on_a_real_mammogram() -> None:
    """The malignant real case's right MLO (CBIS-DDSM 1-283): the shipped detector's boxes, tile by tile at its
    operating point, within 1 px and 1e-3 of PyTorch's; the image has boxes to compare at all."""
    from dicom_io.reader import read_mammogram
    from models.pipeline import Pipeline
    from training.simulate.dataset import real_sample_paths

    path = next(p for p in real_sample_paths() if p.name == "1-283.dcm")
    image = read_mammogram(path)
    results = {}
    for runtime in ("eager", "onnxruntime"):
        pipeline = Pipeline.from_model_dir(SHIPPED, device="cpu", explain=False, runtime=runtime)
        assert pipeline.detector_runtime == runtime
        results[runtime] = pipeline.analyze([image]).result
    eager, fast = (results[r].images[0].lesions for r in ("eager", "onnxruntime"))
    assert len(eager) >= 2
    assert len(fast) == len(eager)
    for a, b in zip(eager, fast, strict=True):
        assert a.label == b.label
        assert abs(a.probability - b.probability) <= 1e-3
        assert max(abs(getattr(a.box, k) - getattr(b.box, k)) for k in ("x0", "y0", "x1", "y1")) <= 1.0
    assert results["onnxruntime"].models[0].role == "detector"
    assert results["onnxruntime"].models[0].runtime == "onnxruntime"
    assert results["eager"].models[0].runtime == "eager"
    assert all(m.runtime is None for m in results["eager"].models[1:])


@needs_ort
def test_the_twin_leaves_the_eager_detector_whole_so_explanations_still_have_gradients(tiny_model_dir,
                                                                                       one_torch_thread) -> None:
    from models.detector import detect
    from models.explain import detector_cam
    from models.registry import load_detector

    model, config, _ = load_detector(tiny_model_dir / "detector")
    eager_backbone, eager_rpn, eager_head = model.backbone, model.rpn, model.rpn.head
    twin, used = detection_model(model, "onnxruntime", "cpu")
    assert used == "onnxruntime"
    assert isinstance(twin.backbone, OnnxBackbone) and isinstance(twin.rpn.head, OnnxRpnHead)
    # the loaded model is not rewritten
    assert model.backbone is eager_backbone and model.rpn is eager_rpn and model.rpn.head is eager_head
    assert twin.roi_heads is model.roi_heads  # the box head and its weights shared, not copied
    # the twin's RPN uses the model's anchors and the proposal counts that detect() sets for both
    assert twin.rpn.anchor_generator is model.rpn.anchor_generator
    assert twin.rpn._pre_nms_top_n is model.rpn._pre_nms_top_n
    assert twin.rpn._post_nms_top_n is model.rpn._post_nms_top_n
    image = torch.rand(1, 300, 200, generator=torch.Generator().manual_seed(3))
    a, b = detect(model, [image], config)[0], detect(twin, [image], config)[0]
    assert len(a) == len(b) > 0  # the tiny bundle scores from 0: every kept proposal is compared
    assert np.abs(a.boxes - b.boxes).max() <= 1.0
    assert np.abs(a.scores - b.scores).max() <= 1e-3
    cam = detector_cam(model, image, target_label=2)  # Grad-CAM needs autograd through the eager backbone
    assert cam.shape == image.shape[-2:] and np.isfinite(cam).all()


def test_runtime_choice_by_device_and_name() -> None:
    assert resolve_runtime("eager", "cpu") == "eager"
    assert resolve_runtime("auto", "cuda") == "eager"  # ONNX Runtime's CPU provider is not for GPU workers
    assert resolve_runtime("auto", "cpu") == ("onnxruntime" if onnxruntime_available() else "eager")
    with pytest.raises(RuntimeUnavailable, match="CPU only"):
        resolve_runtime("onnxruntime", "cuda")
    with pytest.raises(ValueError, match="one of auto, eager, onnxruntime"):
        resolve_runtime("tensorrt", "cpu")


def test_without_the_packages_auto_is_eager_and_onnxruntime_says_what_to_install() -> None:
    """A Python that cannot import onnxruntime (an install without it): a real interpreter, the import blocked."""
    code = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "onnxruntime":
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
from models.onnx_runtime import RuntimeUnavailable, onnxruntime_available, resolve_runtime
assert not onnxruntime_available()
assert resolve_runtime("auto", "cpu") == "eager"
try:
    resolve_runtime("onnxruntime", "cpu")
except RuntimeUnavailable as exc:
    print(exc)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert "pip install onnxruntime onnx" in done.stdout


class _ShapeBakedBackbone(nn.Module):
    """A backbone whose Python branches on the input width: the ONNX trace keeps the probe's branch, so at another
    width the session and PyTorch disagree, the failure the load-time check is there to catch."""

    out_channels = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.conv(x)
        if x.shape[-1] == PROBE_SIDE:  # the export's probe width
            y = y * 2
        return {"0": y}


class _Detectorish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = _ShapeBakedBackbone()


@needs_ort
def test_a_backbone_that_disagrees_with_pytorch_is_refused_or_falls_back_to_eager(caplog) -> None:
    model = _Detectorish()
    with pytest.raises(RuntimeUnavailable, match="disagrees with PyTorch"):
        detection_model(model, "onnxruntime", "cpu")
    with caplog.at_level(logging.WARNING, logger="models.onnx_runtime"):
        same, used = detection_model(model, "auto", "cpu")
    assert same is model and used == "eager"
    assert any(getattr(r, "event", None) == "runtime_fallback" for r in caplog.records)


class _ShapeBakedRpnHead(nn.Module):
    """An RPN head whose Python branches on the finest level's width (the probe's): the trace keeps that branch."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.logits = nn.Conv2d(channels, 3, 1)
        self.deltas = nn.Conv2d(channels, 12, 1)

    def forward(self, x: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        scale = 2.0 if x[0].shape[-1] == PROBE_SIDE // 4 else 1.0
        return [self.logits(level) * scale for level in x], [self.deltas(level) for level in x]


class _Rpnish(nn.Module):
    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head


@needs_ort
def test_an_rpn_head_that_disagrees_with_pytorch_is_refused_and_a_good_one_agrees() -> None:
    from models.detector import DetectorConfig, build_detector

    torch.manual_seed(0)
    model = build_detector(DetectorConfig(min_size=64, max_size=64, fpn_channels=16, box_head_size=32)).eval()
    head = OnnxRpnHead(model.rpn.head, model.backbone)
    assert head.verify() <= 1e-4 and head.verify(PROBE_SIDE * 2, PROBE_SIDE + 64) <= 1e-4
    with pytest.raises(ValueError, match="5 FPN levels"):
        head([torch.zeros(1, 16, 8, 8)])
    model.rpn = _Rpnish(_ShapeBakedRpnHead(16))
    with pytest.raises(RuntimeUnavailable, match="RPN head disagrees"):
        detection_model(model, "onnxruntime", "cpu")
    same, used = detection_model(model, "auto", "cpu")
    assert same is model and used == "eager"


@needs_ort
def test_evaluate_runs_the_runtime_of_the_settings_or_the_flag_and_records_it(tiny_model_dir, tmp_path,
                                                                             monkeypatch) -> None:
    from mccad.cli import main
    from training.simulate.synth import write_synthetic_dataset

    csv = write_synthetic_dataset(tmp_path / "data", 1, seed=5)
    monkeypatch.setenv("MCCAD_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("MCCAD_DETECTOR_RUNTIME", raising=False)

    def used(name: str, *flag: str) -> str:
        out = tmp_path / name
        assert main(["evaluate", "--data", str(csv), "--model", str(tiny_model_dir / "detector"), "--out", str(out),
                     "--n-boot", "0", "--false-positives", "0", "--device", "cpu", *flag]) == 0
        return json.loads((out / "predictions.json").read_text())["meta"]["detector_runtime"]

    assert used("default") == "onnxruntime"  # auto, on this CPU with the packages installed
    monkeypatch.setenv("MCCAD_DETECTOR_RUNTIME", "eager")
    assert used("setting") == "eager"
    assert used("flag", "--runtime", "onnxruntime") == "onnxruntime"  # the flag wins over the setting


def _resident_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


@needs_ort
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the resident set from /proc")
def test_release_memory_hands_the_arena_of_a_tile_batch_back_and_changes_no_box() -> None:
    """The shipped detector's twin after a batch of two 512 px tiles (the arena of that run is held, a few hundred
    MiB): ``release_memory`` hands most of it back, and the same batch then gives the same boxes; an eager model has
    no arena and nothing is done."""
    from models.detector import detect
    from models.onnx_runtime import release_memory
    from models.registry import load_detector
    from models.tiling import native_scale

    model, config, _ = load_detector(SHIPPED / "detector", device="cpu")
    twin, used = detection_model(model, "onnxruntime", "cpu")
    assert used == "onnxruntime"
    generator = torch.Generator().manual_seed(11)
    tiles = [torch.rand(1, 512, 512, generator=generator) for _ in range(2)]
    with native_scale(twin, 512, 512):
        before = detect(twin, tiles, config)
        held = _resident_mib()
        assert release_memory(twin) is True
        released = held - _resident_mib()
        after = detect(twin, tiles, config)
    assert released >= 64, f"only {released:.0f} MiB handed back"
    for a, b in zip(before, after, strict=True):
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
    assert release_memory(model) is False


@needs_ort
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the resident set from /proc")
def test_the_pipeline_hands_the_arena_back_after_detection() -> None:
    """After ``Pipeline.analyze`` of a 1024 px image (8 tiles of 512 px in ONNX Runtime) the sessions' arena has
    already been handed back: releasing it again frees next to nothing (without the pipeline's release it frees the
    few hundred MiB of the test above)."""
    from models.onnx_runtime import release_memory
    from models.pipeline import Pipeline
    from models.types import ImageMeta, MammogramImage

    pipeline = Pipeline.from_model_dir(SHIPPED, device="cpu", explain=False, runtime="onnxruntime")
    pixels = torch.rand(1024, 1024, generator=torch.Generator().manual_seed(5)).numpy() * 0.6 + 0.2
    meta = ImageMeta(sop_instance_uid="1.2.3.4", sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
                     study_instance_uid="1.2.3", series_instance_uid="1.2.3.1", exam_key="e", rows=1024, columns=1024,
                     laterality="L", view="CC", pixel_spacing_mm=(0.1, 0.1))
    pipeline.analyze([MammogramImage(pixels=pixels, meta=meta)])
    held = _resident_mib()
    release_memory(pipeline.detection_model)
    assert held - _resident_mib() < 32
