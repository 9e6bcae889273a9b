"""The detector's backbone and RPN head run by ONNX Runtime on the CPU: the same boxes in less time per mammogram.

Why: on a CPU-only site the detector is the cost of a study, and its backbone (EfficientNet-Lite or ResNet50 with
the FPN) is more than half of its FLOPs, which eager PyTorch runs well below the machine's matrix-multiply peak. ONNX
Runtime folds the BatchNorm layers into the convolutions and runs its own kernels: the same merged boxes in less time
(``bench.inference``, path ``onnxruntime``; figures in ``docs/experiments/performance.md``). The RPN head (a 3 x 3
convolution over every FPN level, and the objectness and box-delta layers) runs in a second session. Everything
else (anchors, proposal filtering, RoI pooling, the box head, NMS, tiling, the flip, the breast gate) stays in
PyTorch unchanged.

How:

- :func:`detection_model` returns a *twin* of the loaded detector for detection only: the same module objects
  (thresholds, transform, heads and weights are shared), except that its ``backbone`` is an :class:`OnnxBackbone`
  and its RPN a copy whose ``head`` is an :class:`OnnxRpnHead` (its anchors and proposal counts are the model's).
  The eager model stays as it was, because explanations (Grad-CAM, ``models.explain``) need autograd through the
  backbone, which an ONNX session does not have;
- the backbone is exported once per process, in memory (no file is written: a model folder may be read-only and a
  stale cache could not drift from the weights), with the batch, height and width dynamic, so one session serves
  every tile batch and the whole-image mode's any-size input;
- before the twin is used, a fixed probe image runs through both and the FPN levels, objectness and box deltas
  must agree to ``VERIFY_RTOL`` of their largest value; otherwise the twin is refused (``auto`` falls back to eager
  and logs why);
- ONNX Runtime keeps the memory of its largest run in its arena for the next run: :func:`release_memory` hands the
  free part back (one run of a tiny probe with arena shrinkage) once an image's tiles are read, so the arena does not
  stay resident through the explanation and the outputs; the next image grows it again (page faults on its first
  batch only, where an arena turned off would pay them on every batch);
- ``runtime``: ``"eager"`` (PyTorch only), ``"onnxruntime"`` (refused with a clear error when the packages are
  missing, the device is not the CPU or the check fails) or ``"auto"`` (ONNX Runtime on the CPU when it is installed
  and passes the check, eager otherwise). Settings: ``MCCAD_DETECTOR_RUNTIME``, default ``auto``.
"""
from __future__ import annotations

import copy
import io
import logging
import warnings
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "eager", "onnxruntime")
#: FPN levels of the ONNX session and of eager PyTorch on the probe must agree to this share of their largest value
#: (float32 with BatchNorm folded differs by about 1e-6; a wrong graph differs by far more)
VERIFY_RTOL = 1e-4
#: the probe: a fixed pseudo-random image of this side, not the size detection uses (the axes are dynamic)
PROBE_SIDE = 128
#: the side of the probe a session runs when it hands its arena back (as cheap as a run can be)
SMALL_PROBE_SIDE = 32
ONNX_OPSET = 17


class RuntimeUnavailable(RuntimeError):
    """The ONNX Runtime path was asked for and cannot run here (packages, device or a failed check)."""


def onnxruntime_available() -> bool:
    """Both halves of the path import: the exporter needs ``onnx``, the session ``onnxruntime`` (imported, not
    just found, so that a broken install, such as a wheel without its shared library, counts as absent)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _session(module: nn.Module, inputs: tuple[torch.Tensor, ...], input_names: list[str],
             output_names: list[str], dynamic_axes: dict[str, dict[int, str]],
             threads: int | None) -> tuple[Any, int]:
    """``module`` exported to ONNX in memory and an ONNX Runtime session on it, and the size of the export."""
    import onnxruntime as ort

    buffer = io.BytesIO()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings about shape arithmetic, which dynamic axes cover
        torch.onnx.export(module, inputs, buffer, dynamo=False, opset_version=ONNX_OPSET, input_names=input_names,
                          output_names=output_names, do_constant_folding=True, dynamic_axes=dynamic_axes)
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # no busy-waiting between runs: the anchors, proposal filtering, RoI pooling and box head run in torch's threads
    # right after each pass, on the same cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"]), len(buffer.getvalue())


def _on_cpu(tensors: list[torch.Tensor]) -> list[np.ndarray]:
    if any(t.device.type != "cpu" for t in tensors):
        raise RuntimeUnavailable(f"the ONNX Runtime detector parts run on the CPU; got a tensor on {tensors[0].device}")
    return [np.ascontiguousarray(t.detach().float().numpy()) for t in tensors]


def _worst(reference: list[torch.Tensor], candidate: list[torch.Tensor]) -> float:
    """The largest disagreement of ``candidate`` with ``reference``, tensor by tensor, as a share of each
    reference's largest value (inf when a shape differs)."""
    worst = 0.0
    for ref, got in zip(reference, candidate, strict=True):
        if got.shape != ref.shape:
            return float("inf")
        scale = float(ref.abs().max()) or 1.0
        worst = max(worst, float((got - ref).abs().max()) / scale)
    return worst


def _shrink_options() -> Any:
    """Run options under which ONNX Runtime frees its CPU arena's unused chunks after the run."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


class OnnxBackbone(nn.Module):
    """A detector backbone (image batch -> OrderedDict of FPN levels) exported to ONNX and run by ONNX Runtime.

    It keeps the eager ``module`` (for :meth:`verify` and ``out_channels``) but never calls it in ``forward``. The
    session uses as many threads as torch does when it is built.
    """

    def __init__(self, module: nn.Module, threads: int | None = None) -> None:
        super().__init__()
        self.module = module.eval()
        self.out_channels = getattr(module, "out_channels", None)
        probe = _probe(1, PROBE_SIDE, PROBE_SIDE)
        with torch.inference_mode(False), torch.no_grad():
            reference = module(probe)
        self.names = list(reference.keys()) if isinstance(reference, dict) else ["out"]
        outputs = [f"out_{name}" for name in self.names]  # ONNX names may not be bare digits ("0")
        self.session, self.onnx_bytes = _session(
            module, (probe,), ["x"], outputs,
            {"x": {0: "batch", 2: "height", 3: "width"}, **{name: {0: "batch"} for name in outputs}}, threads)
        self._small_feed = {"x": _probe(1, SMALL_PROBE_SIDE, SMALL_PROBE_SIDE).numpy()}

    def release_memory(self) -> None:
        """Hand the session's unused arena memory back (module docstring); the next run allocates it again."""
        self.session.run(None, self._small_feed, _shrink_options())

    def forward(self, x: torch.Tensor) -> Any:
        (array,) = _on_cpu([x])
        tensors = [torch.from_numpy(a) for a in self.session.run(None, {"x": array})]
        if self.names == ["out"]:
            return tensors[0]
        return OrderedDict(zip(self.names, tensors, strict=True))

    def verify(self, height: int = PROBE_SIDE + 32, width: int = PROBE_SIDE - 32) -> float:
        """The largest disagreement between the session and eager PyTorch on a probe of another shape than the
        export's (so the dynamic axes are checked too), as a share of each level's largest value."""
        probe = _probe(2, height, width)
        with torch.inference_mode(False), torch.no_grad():
            eager = self.module(probe)
        fast = self(probe)
        if not isinstance(eager, dict):
            eager, fast = {"out": eager}, {"out": fast}
        if list(fast) != list(eager):
            return float("inf")
        return _worst(list(eager.values()), [fast[name] for name in eager])


class _FlatRpnHead(nn.Module):
    """torchvision's RPN head with tensors in and out instead of lists (what the ONNX exporter takes)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, *levels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, deltas = self.head(list(levels))
        return (*logits, *deltas)


class OnnxRpnHead(nn.Module):
    """torchvision's ``RPNHead`` (FPN levels -> per-level objectness logits and box deltas) run by ONNX Runtime.

    Exported on the FPN levels of ``backbone`` for the probe image, every level's batch, height and width dynamic;
    keeps the eager ``module`` for :meth:`verify`, never calls it in ``forward``."""

    def __init__(self, module: nn.Module, backbone: nn.Module, threads: int | None = None) -> None:
        super().__init__()
        self.module, self.backbone = module.eval(), backbone
        levels = self._levels(_probe(1, PROBE_SIDE, PROBE_SIDE))
        self.n_levels = len(levels)
        inputs = [f"level_{k}" for k in range(self.n_levels)]
        outputs = [f"{kind}_{k}" for kind in ("logits", "deltas") for k in range(self.n_levels)]
        axes = {name: {0: "batch", 2: f"height_{name}", 3: f"width_{name}"} for name in inputs + outputs}
        self.session, self.onnx_bytes = _session(_FlatRpnHead(module), tuple(levels), inputs, outputs, axes, threads)
        small = _on_cpu(self._levels(_probe(1, SMALL_PROBE_SIDE, SMALL_PROBE_SIDE)))
        self._small_feed = {f"level_{k}": a for k, a in enumerate(small)}

    def release_memory(self) -> None:
        """As :meth:`OnnxBackbone.release_memory`."""
        self.session.run(None, self._small_feed, _shrink_options())

    def _levels(self, image: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode(False), torch.no_grad():
            features = self.backbone(image)
        return list(features.values()) if isinstance(features, dict) else [features]

    def forward(self, x: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if len(x) != self.n_levels:
            raise ValueError(f"the RPN head was exported for {self.n_levels} FPN levels, got {len(x)}")
        arrays = self.session.run(None, {f"level_{k}": a for k, a in enumerate(_on_cpu(list(x)))})
        tensors = [torch.from_numpy(a) for a in arrays]
        return tensors[:self.n_levels], tensors[self.n_levels:]

    def verify(self, height: int = PROBE_SIDE + 32, width: int = PROBE_SIDE - 32) -> float:
        """As :meth:`OnnxBackbone.verify`, on the FPN levels of a probe of another shape than the export's."""
        levels = self._levels(_probe(2, height, width))
        with torch.inference_mode(False), torch.no_grad():
            logits, deltas = self.module(levels)
        fast_logits, fast_deltas = self(levels)
        return _worst([*logits, *deltas], [*fast_logits, *fast_deltas])


def _probe(batch: int, height: int, width: int) -> torch.Tensor:
    """A fixed image batch in [0, 1] with structure at every scale (not noise alone, which BatchNorm can flatten)."""
    generator = torch.Generator().manual_seed(20261127)
    noise = torch.rand(batch, 3, height, width, generator=generator)
    ys = torch.linspace(0, 6.0, height)[:, None]
    xs = torch.linspace(0, 4.0, width)[None, :]
    waves = 0.5 + 0.25 * torch.sin(ys * 3.1 + xs * 1.7) * torch.cos(xs * 2.3)
    return (0.6 * waves + 0.4 * noise).clamp(0, 1)


def resolve_runtime(runtime: str, device: torch.device | str) -> str:
    """The runtime to build: ``auto`` becomes ``onnxruntime`` on a CPU with the packages, else ``eager``; an
    explicit ``onnxruntime`` that cannot run here raises :class:`RuntimeUnavailable`."""
    if runtime not in RUNTIMES:
        raise ValueError(f"detector runtime must be one of {', '.join(RUNTIMES)}; got {runtime!r}")
    on_cpu = torch.device(device).type == "cpu"
    if runtime == "eager":
        return "eager"
    if runtime == "auto":
        return "onnxruntime" if on_cpu and onnxruntime_available() else "eager"
    if not on_cpu:
        raise RuntimeUnavailable(f"detector runtime 'onnxruntime' runs on the CPU only; the device is {device} "
                                 "(use MCCAD_DETECTOR_RUNTIME=auto or eager on a GPU)")
    if not onnxruntime_available():
        raise RuntimeUnavailable("detector runtime 'onnxruntime' needs the packages onnxruntime and onnx "
                                 "(pip install onnxruntime onnx), or MCCAD_DETECTOR_RUNTIME=eager")
    return "onnxruntime"


def detection_model(model: nn.Module, runtime: str = "auto",
                    device: torch.device | str = "cpu") -> tuple[nn.Module, str]:
    """The module to detect with and the runtime it uses (``"eager"`` or ``"onnxruntime"``): ``model`` itself for
    eager, else a twin whose backbone is an :class:`OnnxBackbone` and whose RPN head is an :class:`OnnxRpnHead`
    (module docstring). ``auto`` falls back to eager,
    with a warning in the log, when the export or the check fails; ``onnxruntime`` raises instead."""
    chosen = resolve_runtime(runtime, device)
    if chosen == "eager":
        return model, "eager"
    try:
        backbone = OnnxBackbone(model.backbone)
        error = backbone.verify()
        if not error <= VERIFY_RTOL:
            raise RuntimeUnavailable(f"the ONNX Runtime backbone disagrees with PyTorch by {error:.2e} of the "
                                     f"feature scale (allowed {VERIFY_RTOL:g})")
        rpn_head = None
        if getattr(model, "rpn", None) is not None:
            rpn_head = OnnxRpnHead(model.rpn.head, model.backbone)
            head_error = rpn_head.verify()
            if not head_error <= VERIFY_RTOL:
                raise RuntimeUnavailable(f"the ONNX Runtime RPN head disagrees with PyTorch by {head_error:.2e} of "
                                         f"its outputs' scale (allowed {VERIFY_RTOL:g})")
            error = max(error, head_error)
    except Exception as exc:  # an exporter or session failure is as final as a failed check
        if runtime == "onnxruntime" and isinstance(exc, RuntimeUnavailable):
            raise
        if runtime == "onnxruntime":
            raise RuntimeUnavailable(f"the detector's backbone could not run in ONNX Runtime: {exc}") from exc
        log.warning("detector runs in eager PyTorch: the ONNX Runtime backbone failed",
                    extra={"event": "runtime_fallback", "reason": str(exc)[:300]})
        return model, "eager"
    twin = _twin(model)
    twin.backbone = backbone
    onnx_bytes = backbone.onnx_bytes
    if rpn_head is not None:
        twin.rpn = _twin(model.rpn)  # shares the anchors and the proposal-count tables that detect() sets
        twin.rpn.head = rpn_head
        onnx_bytes += rpn_head.onnx_bytes
    log.info("detector backbone and RPN head run in ONNX Runtime",
             extra={"event": "runtime_ready", "runtime": "onnxruntime", "check_error": float(f"{error:.3g}"),
                    "onnx_bytes": onnx_bytes})
    return twin, "onnxruntime"


def release_memory(model: nn.Module) -> bool:
    """Hand the unused arena memory of a detection model's ONNX Runtime sessions back to the system (module
    docstring): after an image's detection, before its explanation and outputs. Detections are unchanged (the arena
    holds no state between runs). False, and nothing done, for an eager model."""
    parts = [getattr(model, "backbone", None), getattr(getattr(model, "rpn", None), "head", None)]
    sessions = [part for part in parts if isinstance(part, OnnxBackbone | OnnxRpnHead)]
    for part in sessions:
        part.release_memory()
    return bool(sessions)


def _twin(module: nn.Module) -> nn.Module:
    """A shallow copy of ``module`` with a module table of its own: replacing a child of the copy leaves ``module``
    alone, and everything else (weights, thresholds, the tables ``detect`` sets) stays shared."""
    twin = copy.copy(module)
    twin._modules = OrderedDict(module._modules)
    return twin
