"""Where one large image's CPU seconds and memory go, step by step: the run of ``bench.large_image`` (read, analyse,
every output, as the worker does) with each step's CPU seconds and the highest resident set seen while it ran.

How: the step functions (the reader, standardisation, detection with the breast gate, SPPNet, Grad-CAM, the heatmap's
resampling to the original grid, the pictures, the DICOM objects) are wrapped for the run so that a thread sampling
``VmRSS`` every ``SAMPLE_S`` seconds knows which step is running; CPU seconds are the process's (``getrusage``)
around each call. A step shorter than the sampling period may be missed by the sampler (its peak then reads as the
enclosing step's); the peaks are the resident set of the whole process, so ``resident_before_mib`` (after the warm-up
image and the worker's ``malloc_trim``) is the floor every step starts from.

Run ``python -m bench.large_image_steps --side 8000`` (a few minutes on two cores); ``--quick`` is a smoke run on a
400 px image. Measurements and their reading: ``docs/experiments/large-image-cost.md``.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_output_arguments, current_rss_mib, machine_info, print_report, write_report

#: seconds between two samples of the resident set
SAMPLE_S = 0.02


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class StepMeter:
    """Per step name: CPU seconds of its calls and the highest resident set (MiB) sampled while it ran; time outside
    every step counts as ``between steps``."""

    def __init__(self) -> None:
        self.step = "between steps"
        self.peaks: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.order: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            step, rss = self.step, current_rss_mib()
            self.peaks[step] = max(self.peaks.get(step, 0.0), rss)
            self._stop.wait(SAMPLE_S)

    def wrap(self, owner: Any, name: str, step: str) -> Callable[[], None]:
        """Replace ``owner.name`` by a wrapper that attributes its calls to ``step``; returns the undo."""
        original = getattr(owner, name)

        def measured(*args: Any, **kwargs: Any) -> Any:
            outer, started = self.step, _cpu_seconds()
            self.step = step
            if step not in self.order:
                self.order.append(step)
            try:
                return original(*args, **kwargs)
            finally:
                self.cpu[step] = self.cpu.get(step, 0.0) + _cpu_seconds() - started
                self.step = outer

        setattr(owner, name, measured)
        return lambda: setattr(owner, name, original)

    @contextmanager
    def sampling(self) -> Iterator[None]:
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join()


def _instrument(meter: StepMeter) -> list[Callable[[], None]]:
    """Wrap the worker's steps where ``bench.large_image.measure`` and the pipeline look them up."""
    import dicom_io.reader as reader
    import models.pipeline as pipeline
    import worker.outputs as outputs
    from models.detect import DetectorRunner
    from models.preprocess import CoordinateMap

    return [meter.wrap(reader, "read_mammogram", "read"),
            meter.wrap(pipeline, "standardise", "standardise"),
            meter.wrap(DetectorRunner, "__call__", "detection + breast gate"),
            meter.wrap(pipeline, "classify", "SPPNet and patch heads"),
            meter.wrap(pipeline, "detector_cam", "Grad-CAM"),
            meter.wrap(CoordinateMap, "heatmap_to_original", "heatmap to the original grid"),
            meter.wrap(outputs, "render_overlay", "pictures"),
            meter.wrap(outputs, "render_heatmap", "pictures"),
            meter.wrap(outputs, "write_result_objects", "DICOM objects (SR, SEG, GSPS)")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="model bundle (default: the shipped one)")
    parser.add_argument("--side", type=int, default=8000, help="side of the synthetic image")
    parser.add_argument("--warm-side", type=int, default=1000, help="side of the warm-up image")
    parser.add_argument("--spacing-mm", type=float, default=0.1, help="pixel pitch of the synthetic images")
    add_output_arguments(parser, "large-image-steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.side, args.warm_side = 400, 300

    from bench.large_image import measure, write_image
    from models.pipeline import Pipeline
    from settings.config import default_model_dir

    machine = machine_info()
    model_dir = args.model_dir or default_model_dir()
    pipeline = Pipeline.from_model_dir(model_dir, device="cpu", explain=True, runtime="auto")
    meter = StepMeter()
    with tempfile.TemporaryDirectory(prefix="mccad-bench-steps-") as tmp:
        measure(pipeline, write_image(Path(tmp) / "warm.dcm", args.warm_side, args.spacing_mm), Path(tmp) / "warm")
        path = write_image(Path(tmp) / "large.dcm", args.side, args.spacing_mm)
        undo = _instrument(meter)
        try:
            before = current_rss_mib()
            with meter.sampling():
                total = measure(pipeline, path, Path(tmp) / "out")
        finally:
            for restore in reversed(undo):
                restore()
    rows = [{"step": step, "cpu_seconds": round(meter.cpu.get(step, 0.0), 2),
             "peak_rss_mib": round(meter.peaks.get(step, before), 1),
             "above_start_mib": round(meter.peaks.get(step, before) - before, 1)}
            for step in [*meter.order, "between steps"]]
    extra = {"side": args.side, "resident_before_mib": round(before, 1), "total": total,
             "runtime": pipeline.detector_runtime, "model_dir": str(model_dir)}
    doc = write_report(args.out, "large_image_steps", args, machine, rows, extra=extra)
    print_report(doc, ["step", "cpu_seconds", "peak_rss_mib", "above_start_mib"],
                 f"One {args.side} x {args.side} image step by step (resident before: {before:.0f} MiB)")
    print(f"whole run: {total['cpu_seconds']} CPU s, {total['peak_rss_mib']} MiB peak")
    return 0


if __name__ == "__main__":
    sys.exit(main())
