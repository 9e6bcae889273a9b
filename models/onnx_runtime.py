"""The detector's backbone run by ONNX Runtime on the CPU: the same boxes, a quarter to 40 % less time per mammogram.

Why: on a CPU-only site the detector is the cost of a study. Its backbone (EfficientNet-Lite or ResNet50 with the FPN)
is more than half of its FLOPs (issue 7's benchmark: 156 of 285 GFLOP per 2048 x 1300 mammogram for the shipped
model), and eager PyTorch runs it at about a third of the machine's matrix-multiply peak. ONNX Runtime folds the
BatchNorm layers into the convolutions and runs its own kernels; the benchmark measured the same merged boxes (max
0.0004 px apart) in 59-77 % of eager's time (``bench.inference``, path ``onnxruntime``, on different days).
Everything after the backbone (RPN, RoI heads, NMS, tiling, the flip, the breast gate) stays in PyTorch unchanged.

How:

- :func:`detection_model` returns a *twin* of the loaded detector for detection only: the same module objects
  (thresholds, transform, heads and weights are shared), except that its ``backbone`` is an :class:`OnnxBackbone`.
  The eager model stays as it was, because explanations (Grad-CAM, ``models.explain``) need autograd through the
  backbone, which an ONNX session does not have;
- the backbone is exported once per process, in memory (no file is written: a model folder may be read-only and a
  stale cache could not drift from the weights), with the batch, height and width dynamic, so one session serves
  every tile batch and the whole-image mode's any-size input;
- before the twin is used, a fixed probe image runs through both and the FPN levels must agree to
  ``VERIFY_RTOL`` of their largest value; otherwise the twin is refused (``auto`` falls back to eager and logs why);
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


class OnnxBackbone(nn.Module):
    """A detector backbone (image batch -> OrderedDict of FPN levels) exported to ONNX and run by ONNX Runtime.

    It keeps the eager ``module`` (for :meth:`verify` and ``out_channels``) but never calls it in ``forward``. The
    session uses as many threads as torch does when it is built.
    """

    def __init__(self, module: nn.Module, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        self.module = module.eval()
        self.out_channels = getattr(module, "out_channels", None)
        probe = _probe(1, PROBE_SIDE, PROBE_SIDE)
        with torch.inference_mode(False), torch.no_grad():
            reference = module(probe)
        self.names = list(reference.keys()) if isinstance(reference, dict) else ["out"]
        buffer = io.BytesIO()
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's warnings about shape arithmetic, which dynamic axes cover
            outputs = [f"out_{name}" for name in self.names]  # ONNX names may not be bare digits ("0")
            torch.onnx.export(module, (probe,), buffer, dynamo=False, opset_version=ONNX_OPSET,
                              input_names=["x"], output_names=outputs, do_constant_folding=True,
                              dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"},
                                            **{name: {0: "batch"} for name in outputs}})
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting between runs: the RPN, RoI pooling and box head run in torch's threads right after each
        # backbone pass, on the same cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        self.onnx_bytes = len(buffer.getvalue())

    def forward(self, x: torch.Tensor) -> Any:
        if x.device.type != "cpu":
            raise RuntimeUnavailable(f"the ONNX Runtime backbone runs on the CPU; got a tensor on {x.device}")
        arrays = self.session.run(None, {"x": np.ascontiguousarray(x.detach().float().numpy())})
        tensors = [torch.from_numpy(a) for a in arrays]
        if self.names == ["out"]:
            return tensors[0]
        return OrderedDict(zip(self.names, tensors))

    def verify(self, height: int = PROBE_SIDE + 32, width: int = PROBE_SIDE - 32) -> float:
        """The largest disagreement between the session and eager PyTorch on a probe of another shape than the
        export's (so the dynamic axes are checked too), as a share of each level's largest value."""
        probe = _probe(2, height, width)
        with torch.inference_mode(False), torch.no_grad():
            eager = self.module(probe)
        fast = self(probe)
        if not isinstance(eager, dict):
            eager, fast = {"out": eager}, {"out": fast}
        worst = 0.0
        for name, ref in eager.items():
            got = fast[name]
            if got.shape != ref.shape:
                return float("inf")
            scale = float(ref.abs().max()) or 1.0
            worst = max(worst, float((got - ref).abs().max()) / scale)
        return worst


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
    eager, else a twin whose backbone is an :class:`OnnxBackbone` (module docstring). ``auto`` falls back to eager,
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
    except Exception as exc:  # an exporter or session failure is as final as a failed check
        if runtime == "onnxruntime" and isinstance(exc, RuntimeUnavailable):
            raise
        if runtime == "onnxruntime":
            raise RuntimeUnavailable(f"the detector's backbone could not run in ONNX Runtime: {exc}") from exc
        log.warning("detector runs in eager PyTorch: the ONNX Runtime backbone failed",
                    extra={"event": "runtime_fallback", "reason": str(exc)[:300]})
        return model, "eager"
    twin = copy.copy(model)
    twin._modules = OrderedDict(model._modules)  # its own module table: replacing the backbone leaves ``model`` alone
    twin.backbone = backbone
    log.info("detector backbone runs in ONNX Runtime", extra={"event": "runtime_ready", "runtime": "onnxruntime",
                                                                "check_error": float(f"{error:.3g}"),
                                                                "onnx_bytes": backbone.onnx_bytes})
    return twin, "onnxruntime"
