"""Inference speed and memory of FPNNet (detector) and SPPNet, eager PyTorch against faster execution paths.

What is measured, per model x resolution x device x path:

- seconds per image (one image per call, as the interactive queue runs) and per 4-view study (four images in one
  call, as ``Pipeline.analyze`` does), median and p95 over ``--repeats`` calls after ``--warmup`` calls;
- the first call's seconds separately (it includes tracing or compilation for the faster paths);
- peak resident memory of the process during the case (VmHWM, reset per case through /proc/self/clear_refs) and,
  on a GPU, peak allocated GPU memory;
- on a GPU, images per second for batch reprocessing at each ``--batch-sizes`` value;
- paths: ``eager``, ``channels_last``, ``torchscript`` (frozen trace of the backbone), ``onnxruntime`` (the backbone
  in ONNX Runtime, CPU), ``autocast_bf16`` / ``autocast_fp16`` and ``compile`` (``torch.compile``, opt-in);
- for every non-eager path, output equality against eager: boxes within 1 px and scores within 1e-3 (detector),
  probabilities within 1e-3 (SPPNet), plus the relative error of the backbone features the path replaces;
- the detector's FLOPs per image (``torch.utils.flop_counter.FlopCounterMode``: convolutions and matrix products;
  RoIAlign and NMS are not counted; the eager rows also split them by module) and this machine's measured fp32
  matrix-multiply peak, so each row says what fraction of peak the model reaches.

Resolutions: ``default`` is the bundle's own detector config (torchvision resizes the standardised image so that
its sides fit ``min_size`` / ``max_size``); ``full`` raises those limits to 1300 / 2048 so the network really sees a
2048 x 1300 full-field image. SPPNet: ``default`` is ``input_size`` of its config, ``full`` a 2048 px long side
(``classify`` pads to a square, as the pipeline would).

A crops-trained detector (``input_spec["tiling"]`` in its manifest) never sees a resized whole image:
``Pipeline.analyze`` resamples the mammogram to ``input_spec["standardise"]["spacing_mm"]`` and runs
``models.tiling.detect_tiled``. For such a bundle ``default`` is a whole standardised mammogram at that spacing (the
2048 x 1300 phantom is a 20.5 x 13 cm breast at 0.1 mm) run tile by tile, so each row's seconds, FLOPs and peak memory
are per whole image (``tiles_per_image`` tiles, the merge included); ``full`` is the same breast resampled to 0.05 mm
(4096 x 2600), a cost figure only. The faster paths replace the backbone (ResNet50 + FPN, or EfficientNet-Lite +
FPN) and are checked on the merged, tiled output.

A bundle whose manifest has ``input_spec["breast_gate"]`` (``models.breast_gate``) has the gate applied to every
image's boxes after detection, as ``Pipeline.analyze`` does, and its time counts as detection time.

The model bundle (``--model-dir``, default ``MCCAD_MODEL_DIR`` / ``models/weights/default``) is loaded through the
registry when present; otherwise the architectures are built with random weights at the default configs and the JSON
says so. Timing does not depend on the weights, but the detector's equality check does: random weights give scores
bunched near 1/3, so boxes near the score threshold or the 250-box cut are exempt and the feature check carries the
weight of the comparison.

Run ``python -m bench.inference`` (see bench/README.md); ``--quick`` is a smoke run at toy sizes.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import logging
import os
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch import nn

from bench.common import (
    BenchError,
    add_output_arguments,
    machine_info,
    peak_rss_mib,
    print_report,
    progress,
    reset_peak_rss,
    summarise,
    time_calls,
    write_report,
)
from models.classifier import ClassifierConfig, build_classifier, classify
from models.breast_gate import BreastGate
from models.detect import DetectorRunner
from models.detector import DetectorConfig, Detections, build_detector, to_three_channels
from models.onnx_runtime import detection_model, resolve_runtime
from models.preprocess import standardise_config_from
from models.tiling import TilingSpec, native_scale

log = logging.getLogger("bench.inference")

CPU_PATHS = ("eager", "channels_last", "torchscript", "onnxruntime")
GPU_PATHS = ("eager", "channels_last", "autocast_bf16", "autocast_fp16", "torchscript")
ALL_PATHS = ("eager", "channels_last", "torchscript", "onnxruntime", "autocast_bf16", "autocast_fp16", "compile")
FULL_FIELD = (2048, 1300)  # rows x columns of a full-field standardised mammogram
#: the spacing the phantom of FULL_FIELD pixels stands for: a breast of about 20.5 x 13 cm
PHANTOM_SPACING_MM = 0.1
#: a tiled (crops-trained) detector's ``full`` resolution: the same breast at this finer spacing (4096 x 2600 px)
TILED_FULL_SPACING_MM = 0.05
#: ``--quick`` tiling of a tiled bundle: 6 tiles of a 256 x 160 toy image instead of 15 of 512 px on 2048 x 1300
QUICK_TILING = TilingSpec(tile=96, overlap=16, batch=2)
STUDY_VIEWS = 4
BOX_TOL_PX = 1.0
SCORE_TOL = 1e-3
FEATURE_REL_TOL = 1e-3
#: the speed and memory targets (the "first_" keys: the first, looser CPU limits); "met" is decided in
#: ``evaluate_targets``.
TARGETS = {
    "detector_cpu_default_median_s_per_image_max": 6.0,
    "first_detector_cpu_default_median_s_per_image_max": 20.0,
    "first_detector_cpu_default_peak_rss_gib_max": 6.0,
    "detector_gpu_batch_images_per_s_min": 20.0,
}


# -- inputs -------------------------------------------------------------------------------------------------------
def phantom_mammogram(rows: int, cols: int, seed: int) -> torch.Tensor:
    """A deterministic (1, rows, cols) image in [0, 1] shaped like a standardised mammogram.

    Chest wall on the left, a half-ellipse of textured tissue, dark background to the right and a few bright specks:
    enough structure that the detector's proposals are not all identical, and no data files needed.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    inside = ((yy - rows / 2) / (rows * 0.48)) ** 2 + (xx / (cols * 0.95)) ** 2 <= 1.0
    coarse = rng.random((max(2, rows // 64), max(2, cols // 64))).astype(np.float32)
    texture = torch.nn.functional.interpolate(torch.from_numpy(coarse)[None, None], size=(rows, cols),
                                              mode="bilinear", align_corners=False)[0, 0].numpy()
    image = np.where(inside, 0.35 + 0.3 * texture + 0.05 * rng.random((rows, cols), dtype=np.float32), 0.0)
    for _ in range(12):
        r, c = int(rng.integers(rows // 8, rows * 7 // 8)), int(rng.integers(2, max(3, cols // 2)))
        image[max(0, r - 2):r + 2, max(0, c - 2):c + 2] = 0.95
    return torch.from_numpy(image.astype(np.float32))[None]


# -- models -------------------------------------------------------------------------------------------------------
@dataclass
class LoadedModels:
    detector: nn.Module
    detector_config: DetectorConfig
    sppnet: nn.Module
    sppnet_config: ClassifierConfig
    source: dict[str, Any]
    #: a crops-trained detector's ``input_spec["tiling"]`` (``--quick``: ``QUICK_TILING``); None: whole-image mode
    tiling: TilingSpec | None = None
    #: ``input_spec["standardise"]["spacing_mm"]`` of the detector bundle (None: the bundle does not resample)
    spacing_mm: float | None = None
    #: the detector bundle's ``input_spec["breast_gate"]``; None: no gate
    breast_gate: BreastGate | None = None


def default_model_dir() -> Path:
    from settings.config import default_model_dir as shipped

    env = os.environ.get("MCCAD_MODEL_DIR")
    return Path(env) if env else shipped()


def load_models(model_dir: Path, quick: bool) -> LoadedModels:
    """The bundle's detector and SPPNet through the registry, or random-weight architectures at default configs."""
    torch.manual_seed(0)
    source: dict[str, Any] = {"model_dir": str(model_dir)}
    if (model_dir / "detector" / "manifest.json").is_file():
        from models.registry import load_classifier, load_detector

        detector, det_cfg, det_manifest = load_detector(model_dir / "detector")
        source["detector"] = {"weights": "bundle", "name": det_manifest.name, "version": det_manifest.version,
                              "architecture": det_manifest.architecture,
                              "synthetic_only": getattr(det_manifest, "synthetic_only", None)}
        tiling_spec = det_manifest.input_spec.get("tiling")
        tiling = TilingSpec(**tiling_spec) if tiling_spec else None  # as ``Pipeline`` reads it
        spacing_mm = standardise_config_from(det_manifest.input_spec.get("standardise", {})).spacing_mm
        gate = BreastGate.from_spec(det_manifest.input_spec.get("breast_gate"))
    else:
        det_cfg = DetectorConfig()
        detector = build_detector(det_cfg, None, frozen_batchnorm=True)
        source["detector"] = {"weights": "random (no bundle found: architecture at DetectorConfig() defaults)"}
        tiling, spacing_mm, gate = None, None, None
    if (model_dir / "sppnet" / "manifest.json").is_file():
        from models.registry import load_classifier

        sppnet, spp_cfg, spp_manifest = load_classifier(model_dir / "sppnet")
        source["sppnet"] = {"weights": "bundle", "name": spp_manifest.name, "version": spp_manifest.version,
                            "architecture": spp_manifest.architecture}
    else:
        spp_cfg = ClassifierConfig()
        sppnet = build_classifier(spp_cfg)
        source["sppnet"] = {"weights": "random (no bundle found: architecture at ClassifierConfig() defaults)"}
    if quick:  # toy resolutions so that the smoke run takes seconds
        det_cfg = dataclasses.replace(det_cfg, min_size=96, max_size=160)
        spp_cfg = dataclasses.replace(spp_cfg, input_size=64)
        # the box head's cost is per proposal (1000 by default) whatever the image size
        det_cfg = dataclasses.replace(det_cfg, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=20)
        if tiling is not None:
            source["tiling_bundle"] = dataclasses.asdict(tiling)
            tiling = QUICK_TILING
    source["detector_config"] = det_cfg.to_dict()
    source["sppnet_config"] = spp_cfg.to_dict()
    source["detector_mode"] = "tiled" if tiling is not None else "whole_image"
    source["tiling"] = dataclasses.asdict(tiling) if tiling is not None else None
    source["standardise_spacing_mm"] = spacing_mm
    source["breast_gate"] = gate.to_spec() if gate is not None else None
    return LoadedModels(detector.eval(), det_cfg, sppnet.eval(), spp_cfg, source, tiling, spacing_mm, gate)


def set_transform_sizes(model: nn.Module, config: DetectorConfig) -> None:
    """Make torchvision's resize follow ``config`` (``apply_thresholds`` sets only the post-processing)."""
    model.transform.min_size = (config.min_size,)
    model.transform.max_size = config.max_size


# -- faster paths -------------------------------------------------------------------------------------------------
class ShapeTracedModule(nn.Module):
    """TorchScript trace of ``module``, frozen and optimised for inference, one trace per input shape.

    ``torch.jit.freeze`` folds BatchNorm into the convolutions and ``optimize_for_inference`` pre-packs weights for
    oneDNN on CPU; a trace is specialised to its input shape, hence the cache. The module's dict output (FPN levels)
    comes back as an OrderedDict in the original key order, which the detector's heads rely on.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.eval()
        self._traces: dict[tuple[tuple[int, ...], torch.dtype, str], Any] = {}

    def forward(self, x: torch.Tensor) -> Any:
        key = (tuple(x.shape), x.dtype, str(x.device))
        if key not in self._traces:
            with torch.inference_mode(False), torch.no_grad(), warnings_quiet():
                example = x.clone()
                traced = torch.jit.trace(self.module, example, strict=False, check_trace=False)
                self._traces[key] = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
        out = self._traces[key](x)
        if isinstance(out, dict):
            return OrderedDict(out)
        return out


class OnnxRuntimeModule(nn.Module):
    """``module`` exported to ONNX (opset 17, one file per input shape) and run by ONNX Runtime on the CPU.

    ONNX Runtime fuses BatchNorm into convolutions and runs its own MLAS kernels; ``intra_op_num_threads`` follows
    torch's thread count so the comparison with eager uses the same cores. Outputs come back as torch tensors (an
    OrderedDict for the FPN levels), so the detector's heads run unchanged.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        import onnxruntime  # noqa: F401  (fail here, with the path's name, when it is not installed)

        self.module = module.eval()
        self._sessions: dict[tuple[int, ...], tuple[Any, list[str]]] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="mccad-bench-onnx-")

    def _session(self, x: torch.Tensor) -> tuple[Any, list[str]]:
        import onnxruntime as ort

        key = tuple(x.shape)
        if key not in self._sessions:
            path = Path(self._tmp.name) / f"{'x'.join(map(str, key))}.onnx"
            with torch.inference_mode(False), torch.no_grad(), warnings_quiet():
                example = x.detach().clone().float().contiguous()
                probe = self.module(example)
                names = list(probe.keys()) if isinstance(probe, dict) else ["out"]
                torch.onnx.export(self.module, (example,), str(path), dynamo=False, opset_version=17,
                                  input_names=["x"], output_names=[f"out_{name}" for name in names],
                                  do_constant_folding=True)  # ONNX names may not be bare digits ("0")
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            self._sessions[key] = (session, names)
        return self._sessions[key]

    def forward(self, x: torch.Tensor) -> Any:
        session, names = self._session(x)
        outputs = session.run(None, {"x": x.detach().float().contiguous().cpu().numpy()})
        tensors = [torch.from_numpy(o).to(x.device) for o in outputs]
        if names == ["out"]:
            return tensors[0]
        return OrderedDict(zip(names, tensors, strict=True))


class CompiledModule(nn.Module):
    """``torch.compile`` (inductor) of ``module``; the first call per shape pays for compilation."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.eval()
        self.compiled = torch.compile(self.module, dynamic=False)

    def forward(self, x: torch.Tensor) -> Any:
        out = self.compiled(x)
        return OrderedDict(out) if isinstance(out, dict) else out


@contextlib.contextmanager
def warnings_quiet() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@dataclass
class PathVariant:
    """One way of running a model: the (possibly rewritten) module and the context its calls run in."""

    name: str
    model: nn.Module
    context: Callable[[], contextlib.AbstractContextManager[Any]]
    exact: bool  # expected to match eager within the tolerances (autocast is not)


def make_variant(path: str, model: nn.Module, kind: str, device: torch.device) -> PathVariant:
    """Build ``path`` from the eager ``model``; ``kind`` is "detector" (rewrite its backbone) or "sppnet" (whole)."""
    null = contextlib.nullcontext
    if path == "eager":
        return PathVariant(path, model, null, True)
    variant = copy.deepcopy(model)
    if path == "channels_last":
        return PathVariant(path, variant.to(memory_format=torch.channels_last), null, True)
    if path in ("autocast_bf16", "autocast_fp16"):
        dtype = torch.bfloat16 if path.endswith("bf16") else torch.float16
        variant = variant.to(memory_format=torch.channels_last)
        return PathVariant(path, variant, lambda: torch.autocast(device.type, dtype=dtype), False)
    if path in ("torchscript", "onnxruntime", "compile"):
        if path == "onnxruntime" and device.type != "cpu":
            raise BenchError("the onnxruntime path runs on the CPU only (CPUExecutionProvider)")
        if kind == "detector" and path == "onnxruntime":  # exactly what the product runs (models.onnx_runtime)
            twin, _ = detection_model(variant, "onnxruntime", device)
            return PathVariant(path, twin, null, True)
        wrap = {"torchscript": ShapeTracedModule, "onnxruntime": OnnxRuntimeModule, "compile": CompiledModule}[path]
        if kind == "detector":
            out_channels = variant.backbone.out_channels
            variant.backbone = wrap(variant.backbone)
            variant.backbone.out_channels = out_channels
            return PathVariant(path, variant, null, True)
        return PathVariant(path, _ClassifierWrapper(variant, wrap), null, True)
    raise BenchError(f"unknown path {path!r}; choose from {', '.join(ALL_PATHS)}")


class _SPPTrunk(nn.Module):
    """SPPNet up to its last stage (normalisation, then ResNet18's stem and layer1..layer4, or the EfficientNet-Lite
    trunk up to its stride-32 stage): the part a faster path runs.

    The pyramid pooling (``adaptive_max_pool2d`` with sizes that need not divide the feature map, which ONNX cannot
    export) and the linear classifier stay in eager PyTorch; they are a negligible share of the FLOPs.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.feature_stages(x)["layer4"]


class _ClassifierWrapper(nn.Module):
    """SPPNet whose trunk runs in a faster path; ``classify`` needs only parameters and ``forward``."""

    def __init__(self, model: nn.Module, wrap: type[nn.Module]) -> None:
        super().__init__()
        self.inner = model
        self.fast_trunk = wrap(_SPPTrunk(model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.fc(self.inner.spp(self.fast_trunk(x)))


# -- equality -----------------------------------------------------------------------------------------------------
def compare_detections(reference: list[Detections], candidate: list[Detections], config: DetectorConfig
                       ) -> dict[str, Any]:
    """Match boxes one to one (same label, every side within 1 px, score within 1e-3).

    A box left unmatched is exempt when its score lies within the tolerance of the cut that decides whether it is
    kept at all (the score threshold, or the lowest kept score when the 250-box cap was reached): a 1e-4 change
    there legitimately swaps which of two nearly equal boxes survives.
    """
    matched = unmatched = exempt = 0
    max_box = max_score = 0.0
    for ref, cand in zip(reference, candidate, strict=True):
        used = np.zeros(len(cand), dtype=bool)
        cut_ref = _score_cut(ref, config)
        cut_cand = _score_cut(cand, config)
        for i in np.argsort(-ref.scores):
            best = None
            for j in range(len(cand)):
                if used[j] or cand.labels[j] != ref.labels[i]:
                    continue
                box_diff = float(np.abs(cand.boxes[j] - ref.boxes[i]).max())
                score_diff = abs(float(cand.scores[j] - ref.scores[i]))
                if box_diff <= BOX_TOL_PX and score_diff <= SCORE_TOL and (best is None or box_diff < best[1]):
                    best = (j, box_diff, score_diff)
            if best is not None:
                used[best[0]] = True
                matched += 1
                max_box, max_score = max(max_box, best[1]), max(max_score, best[2])
            elif ref.scores[i] <= cut_ref + SCORE_TOL:
                exempt += 1
            else:
                unmatched += 1
        for j in np.flatnonzero(~used):
            if cand.scores[j] <= cut_cand + SCORE_TOL:
                exempt += 1
            else:
                unmatched += 1
    return {"boxes_matched": matched, "boxes_unmatched": unmatched, "boxes_exempt_near_cut": exempt,
            "max_box_diff_px": max_box, "max_score_diff": max_score, "detections_equal": unmatched == 0}


def _score_cut(dets: Detections, config: DetectorConfig) -> float:
    if len(dets) >= config.detections_per_img:
        return float(dets.scores.min())
    return float(config.score_thresh)


def feature_relative_error(reference: Any, candidate: Any) -> float:
    """max |a - b| / max |a| over all tensors of two outputs (tensors or dicts of tensors)."""
    if isinstance(reference, dict):
        return max(feature_relative_error(reference[k], candidate[k]) for k in reference)
    ref, cand = reference.float(), candidate.float()
    scale = float(ref.abs().max()) or 1.0
    return float((ref - cand).abs().max()) / scale


# -- FLOPs and peak -----------------------------------------------------------------------------------------------
def count_flops(fn: Callable[[], Any], breakdown: dict[str, float] | None = None, depth: int = 3) -> int:
    """FLOPs of one call (multiply-add counted as 2) for the ops FlopCounterMode knows (conv, mm, bmm, sdpa).

    With ``breakdown`` given, it is filled with GFLOPs per module path down to ``depth`` levels (for the detector:
    ``backbone.body``, ``backbone.fpn``, ``rpn.head``, ``roi_heads.box_head``...), which says where the time can go.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    if breakdown is not None:
        for module, ops in counter.get_flop_counts().items():
            parts = module.split(".")
            if module != "Global" and 1 < len(parts) <= depth:  # "FasterRCNN.backbone.fpn" -> "backbone.fpn"
                breakdown[".".join(parts[1:])] = sum(ops.values()) / 1e9
    return int(counter.get_total_flops())


def matmul_peak_gflops(device: torch.device, n: int, repeats: int, dtype: torch.dtype = torch.float32) -> float:
    """Best GFLOP/s of an n x n matrix product (2 n^3 FLOPs): the practical peak our convolutions compete with."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    samples = time_calls(lambda: torch.mm(a, b), repeats=repeats, warmup=2, sync=sync)
    return 2 * n ** 3 / min(samples) / 1e9


# -- measurement --------------------------------------------------------------------------------------------------
def gpu_peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None


def reset_peaks(device: torch.device) -> None:
    reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def measure_case(run_batch: Callable[[int], Any], batch_sizes: list[int], args: argparse.Namespace,
                 device: torch.device,
                 throughput_call: Callable[[int], tuple[Callable[[], Any], int]] | None = None) -> dict[str, Any]:
    """Per-image (batch 1), per-study (batch 4) and, on GPU, batch-throughput timings of one variant.

    ``throughput_call(size)`` gives the call timed for batch ``size`` and the images it analyses (default:
    ``run_batch(size)``, ``size`` images; a tiled detector batches tiles of one image instead)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    reset_peaks(device)
    first = {}
    for label, size in (("first_call_s", 1), ("first_study_call_s", STUDY_VIEWS)):
        t0 = time.perf_counter()
        run_batch(size)  # traced / compiled paths build their graph for this shape here
        if sync:
            sync()
        first[label] = time.perf_counter() - t0
    image = summarise(time_calls(lambda: run_batch(1), args.repeats, args.warmup, sync))
    # the first study call above was already one warm-up at the study's shape
    study = summarise(time_calls(lambda: run_batch(STUDY_VIEWS), args.repeats, max(0, args.warmup - 1), sync))
    result: dict[str, Any] = {
        **first,
        "per_image_median_s": image.median_s, "per_image_p95_s": image.p95_s,
        "per_study_median_s": study.median_s, "per_study_p95_s": study.p95_s,
        "images_per_s": 1.0 / image.median_s,
        "peak_rss_mib": peak_rss_mib(), "peak_gpu_mib": gpu_peak_mib(device),
        "timings": {"per_image": image.as_dict(), "per_study": study.as_dict()},
    }
    if device.type == "cuda":
        throughput = {}
        for size in batch_sizes:
            call, images = throughput_call(size) if throughput_call else ((lambda n=size: run_batch(n)), size)
            call()  # a new batch shape: trace / compile / cuDNN autotune outside the clock
            stats = summarise(time_calls(call, args.repeats, args.warmup, sync))
            throughput[str(size)] = {"median_s_per_batch": stats.median_s, "images_per_s": images / stats.median_s}
        result["batch_throughput"] = throughput
        result["best_batch_images_per_s"] = max(v["images_per_s"] for v in throughput.values())
        result["peak_gpu_mib"] = gpu_peak_mib(device)
    return result


def peak_for(peaks: dict[str, float], device: torch.device, path: str) -> float:
    """The matmul peak a path competes with: bf16 for autocast on a GPU, fp32 otherwise."""
    if device.type == "cuda" and path.startswith("autocast") and "cuda_bf16_gflops" in peaks:
        return peaks["cuda_bf16_gflops"]
    return peaks[f"{device.type}_fp32_gflops"]


@dataclass
class DetectorCase:
    """One resolution of the detector: its images, its config, and how ``Pipeline.analyze`` runs a model on them.

    Whole-image mode: ``detect`` on the images, torchvision resizing each to the config's ``min_size`` /
    ``max_size``. Tiled mode (a crops-trained bundle with ``input_spec["tiling"]``): ``detect_tiled`` on each image,
    one after another, tiles at native scale in batches of ``tiling.batch``; an image's time and FLOPs are the sum
    over its tiles and the merge. A bundle's breast gate runs on each image's boxes after detection (its time is
    detection time), at the spacing the image stands for.
    """

    resolution: str
    pool: list[torch.Tensor]
    config: DetectorConfig
    tiling: TilingSpec | None
    fields: dict[str, Any]  # what the rows say about the input (sizes, spacing, tiles)
    breast_gate: BreastGate | None = None
    spacing_mm: float = PHANTOM_SPACING_MM  # what one pixel of the pool stands for (the gate's mask cells)

    def run(self, model: nn.Module, images: list[torch.Tensor], tile_batch: int | None = None) -> list[Detections]:
        """``images`` through ``model`` as ``Pipeline.analyze`` runs them (``models.detect.DetectorRunner``);
        ``tile_batch`` replaces the tiles per forward pass of a tiled case."""
        tiling = self.tiling if self.tiling is None or tile_batch is None else replace(self.tiling, batch=tile_batch)
        return DetectorRunner(model, self.config, tiling, self.breast_gate, self.spacing_mm)(images)

    def network_input(self, model: nn.Module) -> torch.Tensor:
        """The batch the backbone sees for the first image (tiled: its first batch of tiles), for the feature check."""
        image = self.pool[0]
        with torch.inference_mode():
            if self.tiling is None:
                return model.transform([to_three_channels(image)])[0].tensors
            tiles = self.tiling.grid(int(image.shape[-2]), int(image.shape[-1]))
            y0, x0, y1, x1 = tiles[0]
            crops = [to_three_channels(image[:, a:c, b:d]) for (a, b, c, d) in tiles[:self.tiling.batch]]
            with native_scale(model, y1 - y0, x1 - x0):
                return model.transform(crops)[0].tensors


def _resample(image: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``image`` (1, H, W) at another pixel spacing: bilinear, area-averaged when shrinking."""
    if tuple(image.shape[-2:]) == (rows, cols):
        return image
    shrink = rows < image.shape[-2]
    return torch.nn.functional.interpolate(image[None], size=(rows, cols), mode="bilinear", align_corners=False,
                                           antialias=shrink)[0]


def detector_cases(models: LoadedModels, resolutions: list[str], images: list[torch.Tensor],
                   notes: list[str]) -> list[DetectorCase]:
    """The detector's cases. ``images`` are phantoms of FULL_FIELD px (``--quick``: a toy size) standing for a
    standardised breast at PHANTOM_SPACING_MM.

    Whole-image bundle: ``default`` is the bundle's min_size / max_size; ``full`` raises them to the image's sides.
    Tiled bundle: ``default`` is the whole breast resampled to the bundle's ``spacing_mm`` (2048 x 1300 at 0.1 mm)
    and run tile by tile; ``full`` is the same breast at TILED_FULL_SPACING_MM (4096 x 2600), dropped with a note
    when the bundle's spacing is already that fine.
    """
    cases = []
    base = models.detector_config
    rows0, cols0 = (int(v) for v in images[0].shape[-2:])
    for resolution in resolutions:
        if resolution not in ("default", "full"):
            raise BenchError(f"unknown resolution {resolution!r} (default or full)")
        fields: dict[str, Any] = {"detector_mode": "whole_image" if models.tiling is None else "tiled",
                                  "breast_gate": models.breast_gate is not None}
        spacing = PHANTOM_SPACING_MM
        if models.tiling is None:
            config = base
            if resolution == "full":
                config = dataclasses.replace(base, min_size=min(rows0, cols0), max_size=max(rows0, cols0))
            pool = images
        else:
            config = base
            bundle_spacing = models.spacing_mm
            if bundle_spacing is None:
                bundle_spacing = PHANTOM_SPACING_MM
                if resolution == "default":
                    notes.append(f"the tiled detector bundle states no standardise spacing_mm: the default input is "
                                 f"taken as the phantom's {rows0} x {cols0} px ({PHANTOM_SPACING_MM} mm)")
            spacing = bundle_spacing if resolution == "default" else TILED_FULL_SPACING_MM
            if resolution == "full" and bundle_spacing <= TILED_FULL_SPACING_MM + 1e-9:
                notes.append(f"resolution full dropped for the tiled detector: its spacing {bundle_spacing} mm is "
                             f"already as fine as {TILED_FULL_SPACING_MM} mm, so default is the full-resolution case")
                continue
            factor = PHANTOM_SPACING_MM / spacing
            rows, cols = max(1, round(rows0 * factor)), max(1, round(cols0 * factor))
            pool = [_resample(image, rows, cols) for image in images]
            tiles = models.tiling.grid(rows, cols)
            fields.update({
                "spacing_mm": spacing,
                "breast_mm": f"{rows0 * PHANTOM_SPACING_MM:.1f} x {cols0 * PHANTOM_SPACING_MM:.1f}",
                "resolution_meaning": ("whole standardised mammogram at the bundle's spacing, tiled as "
                                       "Pipeline.analyze runs it" if resolution == "default" else
                                       f"the same breast at {TILED_FULL_SPACING_MM} mm (resampled phantom), "
                                       "tiled: a cost figure, not a resolution the model was trained at"),
                "tiles_per_image": len(tiles), "tile": models.tiling.tile, "tile_overlap": models.tiling.overlap,
                "tile_batch": models.tiling.batch,
                # the test-time flip (models.flip_fusion) reads every tile twice: the image and its mirror
                "readings_per_image": 2 if models.tiling.hflip else 1,
            })
        fields["input"] = "x".join(map(str, pool[0].shape[-2:]))
        cases.append(DetectorCase(resolution, pool, config, models.tiling, fields, models.breast_gate, spacing))
    return cases


def _tile_batch_call(case: DetectorCase, variant: PathVariant) -> Callable[[int], tuple[Callable[[], Any], int]]:
    """GPU throughput of a tiled detector: an image is one call whatever the batch, so the batch that matters is the
    number of tiles per forward pass; ``--batch-sizes`` sets that (one image per timed call)."""
    def build(size: int) -> tuple[Callable[[], Any], int]:
        def call() -> Any:
            with variant.context():
                return case.run(variant.model, [case.pool[0]], tile_batch=size)
        return call, 1
    return build


def bench_detector(models: LoadedModels, device: torch.device, paths: list[str], resolutions: list[str],
                   images: list[torch.Tensor], args: argparse.Namespace, peaks: dict[str, float],
                   notes: list[str] | None = None) -> list[dict[str, Any]]:
    rows = []
    notes = notes if notes is not None else []
    eager = models.detector.to(device)
    batch_sizes = args.batch_sizes
    for case in detector_cases(models, resolutions, [img.to(device) for img in images], notes):
        config, pool = case.config, case.pool
        set_transform_sizes(eager, config)
        net_input = case.network_input(eager)
        breakdown: dict[str, float] = {}
        # tiled: the sum over the image's tiles
        flops = count_flops(lambda c=case, p=pool: c.run(eager, [p[0]]), breakdown)
        reference = case.run(eager, pool[:STUDY_VIEWS])
        reference_boxes = sum(len(d) for d in reference)
        if reference_boxes == 0 and len(paths) > 1:
            notes.append(f"detector {device.type} {case.resolution}: eager found no box above score_thresh "
                         f"{config.score_thresh} in the {STUDY_VIEWS} phantom images, so the box-level equality "
                         "check compared nothing and the feature check alone decided `equal`")
        with torch.inference_mode():
            ref_features = eager.backbone(net_input)
        for path in paths:
            row: dict[str, Any] = {"model": "detector", "device": device.type, "path": path,
                                   "resolution": case.resolution, **case.fields,
                                   "network_input": "x".join(map(str, net_input.shape[-2:])),
                                   "gflops_per_image": flops / 1e9}
            if "tiles_per_image" in row:
                row["gflops_per_tile"] = flops / 1e9 / row["tiles_per_image"]
            if path == "eager":
                row["gflops_by_module"] = breakdown
            progress(f"detector {device.type} {case.resolution} {path}")
            try:
                variant = make_variant(path, eager, "detector", device)
                set_transform_sizes(variant.model, config)

                def run_batch(n: int, v: PathVariant = variant, c: DetectorCase = case) -> Any:
                    with v.context():
                        return c.run(v.model, [c.pool[i % len(c.pool)] for i in range(n)])

                tiles_call = None
                if case.tiling is not None:
                    tiles_call = _tile_batch_call(case, variant)
                    row["batch_throughput_unit"] = "tiles per forward pass (detect_tiled batch), one image per call"
                row.update(measure_case(run_batch, batch_sizes, args, device, tiles_call))
                if path != "eager":
                    with variant.context(), torch.inference_mode():
                        cand_features = variant.model.backbone(
                            net_input.contiguous(memory_format=torch.channels_last)
                            if path.startswith(("channels_last", "autocast")) else net_input)
                    row["feature_rel_err"] = feature_relative_error(ref_features, cand_features)
                    row["reference_boxes"] = reference_boxes
                    with variant.context():
                        row.update(compare_detections(reference, case.run(variant.model, pool[:STUDY_VIEWS]), config))
                    row["equal"] = bool(row["detections_equal"] and row["feature_rel_err"] <= FEATURE_REL_TOL)
                    row["exact_path"] = variant.exact
                achieved = flops / row["per_image_median_s"] / 1e9
                row["achieved_gflops_per_s"] = achieved
                row["pct_of_matmul_peak"] = 100.0 * achieved / peak_for(peaks, device, path)
            except Exception as exc:  # one failing path must not hide the others' figures
                log.exception("detector path %s at %s failed", path, case.resolution)
                row["error"] = f"{type(exc).__name__}: {exc}"
            finally:
                variant = None  # free traces / sessions before the next path's peak memory is measured
                gc.collect()
            rows.append(row)
        set_transform_sizes(eager, models.detector_config)
    return rows


def bench_sppnet(models: LoadedModels, device: torch.device, paths: list[str], resolutions: list[str],
                 images: list[torch.Tensor], args: argparse.Namespace, peaks: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    eager = models.sppnet.to(device)
    config = models.sppnet_config
    pool = [img.to(device) for img in images]
    for resolution in resolutions:
        side = config.input_size if resolution == "default" else max(pool[0].shape[-2:])
        flops = count_flops(lambda s=side: classify(eager, [pool[0]], config, size=s))
        reference = classify(eager, pool[:STUDY_VIEWS], config, size=side)
        for path in paths:
            row: dict[str, Any] = {"model": "sppnet", "device": device.type, "path": path, "resolution": resolution,
                                   "input": "x".join(map(str, pool[0].shape[-2:])),
                                   "network_input": f"{side}x{side}", "gflops_per_image": flops / 1e9}
            progress(f"sppnet {device.type} {resolution} {path}")
            try:
                variant = make_variant(path, eager, "sppnet", device)

                def run_batch(n: int, v: PathVariant = variant, s: int = side) -> Any:
                    with v.context():
                        return classify(v.model, [pool[i % len(pool)] for i in range(n)], config, size=s,
                                        batch_size=max(n, 1))

                row.update(measure_case(run_batch, args.batch_sizes, args, device))
                if path != "eager":
                    with variant.context():
                        probs = classify(variant.model, pool[:STUDY_VIEWS], config, size=side)
                    diff = float(np.abs(probs - reference).max())
                    row["max_prob_diff"] = diff
                    row["equal"] = diff <= SCORE_TOL
                    row["exact_path"] = variant.exact
                achieved = flops / row["per_image_median_s"] / 1e9
                row["achieved_gflops_per_s"] = achieved
                row["pct_of_matmul_peak"] = 100.0 * achieved / peak_for(peaks, device, path)
            except Exception as exc:
                log.exception("sppnet path %s at %s failed", path, resolution)
                row["error"] = f"{type(exc).__name__}: {exc}"
            finally:
                variant = None
                gc.collect()
            rows.append(row)
    return rows


def describe_resolutions(models: LoadedModels) -> dict[str, str]:
    """What ``default`` and ``full`` mean for this run's detector (the JSON says it, the rows carry the sizes)."""
    if models.tiling is None:
        return {"mode": "whole_image",
                "default": "the bundle's min_size / max_size (torchvision resizes the standardised image to fit)",
                "full": "min_size / max_size raised to the image's sides: the network sees the 2048 x 1300 image"}
    tiling = f"tiles of {models.tiling.tile} px, overlap {models.tiling.overlap}, {models.tiling.batch} per pass"
    spacing = models.spacing_mm if models.spacing_mm is not None else PHANTOM_SPACING_MM
    return {"mode": "tiled",
            "default": f"a whole standardised mammogram at the bundle's spacing ({spacing} mm) through detect_tiled "
                       f"({tiling}) as Pipeline.analyze runs it; time, FLOPs and memory per whole image",
            "full": (f"the same breast resampled to {TILED_FULL_SPACING_MM} mm, tiled the same way (cost only: "
                     "the model was trained at the default spacing)" if spacing > TILED_FULL_SPACING_MM + 1e-9
                     else "dropped: the bundle's spacing is already the finest one benchmarked")}


def evaluate_targets(rows: list[dict[str, Any]], quick: bool) -> dict[str, Any]:
    """Compare the rows with the targets (only meaningful at the real default resolution).

    The targets are per mammogram: for a tiled (crops-trained) detector the ``default`` rows are already the whole
    standardised mammogram (every tile, the merge), never one tile, and ``scope`` says which input they timed.
    """
    def find(**match: Any) -> dict[str, Any] | None:
        for row in rows:
            if all(row.get(k) == v for k, v in match.items()) and "error" not in row:
                return row
        return None

    out: dict[str, Any] = {"thresholds": TARGETS, "applies": not quick}
    cpu = find(model="detector", device="cpu", path="eager", resolution="default")
    fastest = min((r for r in rows if r.get("model") == "detector" and r.get("device") == "cpu"
                   and r.get("resolution") == "default" and "error" not in r and r.get("equal", True)),
                  key=lambda r: r["per_image_median_s"], default=None)
    if cpu:
        tiles = cpu.get("tiles_per_image")
        out["detector_mode"] = cpu.get("detector_mode", "whole_image")
        out["scope"] = (f"one whole mammogram, {cpu.get('input')} px"
                        + (f" at {cpu.get('spacing_mm')} mm, detected in {tiles} tiles of {cpu.get('network_input')}"
                           if tiles else f", network input {cpu.get('network_input')}"))
        out["detector_cpu_eager_median_s"] = cpu["per_image_median_s"]
        out["first_time_met"] = (cpu["per_image_median_s"]
                                  <= TARGETS["first_detector_cpu_default_median_s_per_image_max"])
        out["first_rss_met"] = cpu["peak_rss_mib"] / 1024 <= TARGETS["first_detector_cpu_default_peak_rss_gib_max"]
    if fastest:
        out["detector_cpu_fastest_equal_path"] = fastest["path"]
        out["detector_cpu_fastest_median_s"] = fastest["per_image_median_s"]
        out["detector_cpu_6s_met"] = (fastest["per_image_median_s"]
                                      <= TARGETS["detector_cpu_default_median_s_per_image_max"])
    # the path the product runs on a CPU by default (MCCAD_DETECTOR_RUNTIME=auto, models.onnx_runtime)
    product = find(model="detector", device="cpu", resolution="default",
                   path="onnxruntime" if resolve_runtime("auto", "cpu") == "onnxruntime" else "eager")
    if product:
        out["detector_cpu_product_path"] = product["path"]
        out["detector_cpu_product_median_s"] = product["per_image_median_s"]
        out["detector_cpu_product_6s_met"] = (product["per_image_median_s"]
                                              <= TARGETS["detector_cpu_default_median_s_per_image_max"])
    gpu = [r for r in rows if r.get("model") == "detector" and r.get("device") == "cuda" and "error" not in r
           and r.get("resolution") == "default"]
    if gpu:
        best = max(gpu, key=lambda r: r.get("best_batch_images_per_s", 0.0))
        out["detector_gpu_best_images_per_s"] = best.get("best_batch_images_per_s")
        out["detector_gpu_best_path"] = best["path"]
        out["detector_gpu_best_path_equal_to_eager"] = best.get("equal", True)
        out["detector_gpu_20_per_s_met"] = (best.get("best_batch_images_per_s") or 0) >= TARGETS[
            "detector_gpu_batch_images_per_s_min"]
    return out


# -- command line -------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.inference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="model bundle (default: MCCAD_MODEL_DIR or models/weights/default)")
    parser.add_argument("--models", default="detector,sppnet", help="comma list of detector, sppnet")
    parser.add_argument("--resolutions", default="default,full", help="comma list of default, full")
    parser.add_argument("--devices", default="auto",
                        help="comma list of cpu, cuda, or auto (cpu, plus cuda if present)")
    parser.add_argument("--cpu-paths", default=",".join(CPU_PATHS), help=f"comma list from {', '.join(ALL_PATHS)}")
    parser.add_argument("--gpu-paths", default=",".join(GPU_PATHS), help=f"comma list from {', '.join(ALL_PATHS)}")
    parser.add_argument("--batch-sizes", default="1,4,8,16", help="GPU batch sizes for throughput")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (default: all cores)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case (per image and per study)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed calls before timing, after the first calls that are reported apart")
    parser.add_argument("--matmul-n", type=int, default=2048, help="side of the matrices timed for the fp32 peak")
    add_output_arguments(parser, "inference")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.matmul_n = 1, 0, 256
    args.batch_sizes = [int(v) for v in str(args.batch_sizes).split(",") if v]
    return args


def onnxruntime_available() -> bool:
    """Both halves of the ONNX path: the exporter needs ``onnx``, the runtime ``onnxruntime``."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def resolve_devices(spec: str) -> list[torch.device]:
    names = [d.strip() for d in spec.split(",") if d.strip()]
    if names == ["auto"]:
        names = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for name in names:
        if name == "cuda" and not torch.cuda.is_available():
            raise BenchError("--devices names cuda but no CUDA GPU is visible to this process")
        if name not in ("cpu", "cuda"):
            raise BenchError(f"unknown device {name!r} (cpu or cuda)")
    return [torch.device(n) for n in names]


COLUMNS = ("model", "device", "path", "resolution", "input", "network_input", "tiles_per_image",
           "per_image_median_s", "per_image_p95_s",
           "per_study_median_s", "per_study_p95_s", "best_batch_images_per_s", "peak_rss_mib", "peak_gpu_mib",
           "gflops_per_image", "pct_of_matmul_peak", "equal", "error")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = machine_info()
    machine.update({"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None})
    devices = resolve_devices(args.devices)
    model_dir = args.model_dir or default_model_dir()
    models = load_models(model_dir, args.quick)
    rows_px, cols_px = (256, 160) if args.quick else FULL_FIELD
    images = [phantom_mammogram(rows_px, cols_px, seed) for seed in range(STUDY_VIEWS)]
    wanted_models = [m.strip() for m in args.models.split(",") if m.strip()]
    resolutions = [r.strip() for r in args.resolutions.split(",") if r.strip()]
    peaks: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for device in devices:
        progress(f"matmul peak on {device.type}")
        # a GPU needs larger matrices than a CPU to reach its peak
        side = args.matmul_n if device.type == "cpu" or args.quick else max(args.matmul_n, 8192)
        peak = matmul_peak_gflops(device, side, repeats=3 if args.quick else 10)
        peaks[f"{device.type}_fp32_gflops"] = peak
        if device.type == "cuda":
            peaks["cuda_bf16_gflops"] = matmul_peak_gflops(device, side, 10, torch.bfloat16)
        paths = [p.strip() for p in (args.gpu_paths if device.type == "cuda" else args.cpu_paths).split(",")
                 if p.strip()]
        if "eager" not in paths:
            paths.insert(0, "eager")  # every other path is compared with eager
        if "onnxruntime" in paths and device.type != "cpu":
            paths.remove("onnxruntime")
        if "onnxruntime" in paths and not onnxruntime_available():
            paths.remove("onnxruntime")
            notes.append("onnxruntime path skipped: `pip install onnxruntime onnx` to include it")
        if "detector" in wanted_models:
            rows += bench_detector(models, device, paths, resolutions, images, args, peaks, notes)
        if "sppnet" in wanted_models:
            rows += bench_sppnet(models, device, paths, resolutions, images, args, peaks)
        models.detector.to("cpu")
        models.sppnet.to("cpu")
    random_weights = [k for k in ("detector", "sppnet")
              if k in wanted_models and "random" in str(models.source.get(k, {}).get("weights", ""))]
    if random_weights:
        notes.append(f"no bundle folder for {' and '.join(random_weights)} in {model_dir}: random weights at the "
                     "default configs (timings hold; with random weights the detector's box-level equality check is "
                     "weak because scores bunch near 1/3)")
    if args.quick:
        notes.append("--quick: toy sizes, one repeat; the figures measure nothing")
    doc = write_report(args.out, "inference", args, machine, rows,
                       extra={"models": models.source, "matmul_peak": peaks,
                              "detector_resolutions": describe_resolutions(models),
                              "targets": evaluate_targets(rows, args.quick)},
                       notes=notes)
    print_report(doc, COLUMNS, "inference: seconds per image / per 4-view study, peak memory")
    print("matmul peak (GFLOP/s):", {k: round(v, 1) for k, v in peaks.items()})
    print("targets:", {k: v for k, v in doc["targets"].items() if k != "thresholds"})
    print(f"written {args.out}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
