"""Cost of one very large image: a synthetic 8000 x 8000 16-bit mammogram (64 Mpx, under the 80 Mpx limit) taken
through the worker's steps (read from DICOM, the shipped pipeline: detection tile by tile, Grad-CAM, every head; then
every output: result.json, overlay and heatmap PNGs, SR, heatmap SEG, GSPS), with a smaller image of the same pixel
pitch for the per-pixel comparison. Between images the freed memory is handed back as the worker does after each
study (``worker.memory``).

Reported per size: seconds (read + analyse + outputs, one call after a warm-up on the small image) and CPU seconds of
the process (on a shared machine the CPU seconds stay put while the seconds follow the load), the pipeline's and the
outputs' seconds, peak resident memory of the process (VmHWM, reset per case), and seconds per megapixel; ``ratio``
compares the large image's seconds per megapixel with the small one's (1.0: cost linear in pixels).

The bound: the largest image in under ``TARGET_SECONDS`` (60 s) and ``TARGET_MIB`` (2 GiB) peak; the run exits with
status 1 when it is missed (a ``--quick`` smoke run reports it but exits 0: its sizes are not the bound's). One run
takes minutes on a two-core machine: run it once per change that could move it.

Run ``python -m bench.large_image`` (see bench/README.md); ``--quick`` is a smoke run with small sizes.
"""
from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    add_output_arguments,
    machine_info,
    peak_rss_mib,
    print_report,
    progress,
    reset_peak_rss,
    write_report,
)

TARGET_SECONDS = 60.0
TARGET_MIB = 2048.0


def write_image(path: Path, side: int, spacing_mm: float) -> Path:
    """A synthetic 16-bit MG instance: a breast-shaped gradient with noise and a few bright specks."""
    import numpy as np

    from dicom_io.mg_writer import MGInstanceSpec, write_mg_instance
    from dicom_io.uids import derive_uid

    rng = np.random.default_rng(side)
    rows = np.arange(side, dtype=np.float32)[:, None]
    cols = np.arange(side, dtype=np.float32)[None, :]
    pixels = 300 + 2500 * np.exp(-(((rows - side / 2) / (side / 2.2)) ** 2 + (cols / (side / 1.3)) ** 2))
    pixels += rng.normal(0, 40, (side, side)).astype(np.float32)
    for _ in range(20):
        y, x = rng.integers(20, side - 20, 2)
        pixels[y - 1:y + 2, x - 1:x + 2] = 4000
    name = f"large-{side}"
    spec = MGInstanceSpec(patient_id="BENCH", patient_name="Bench^Large", study_uid=derive_uid("bench-study", name),
                          series_uid=derive_uid("bench-series", name), sop_uid=derive_uid("bench-sop", name),
                          laterality="L", view="CC", pixel_spacing_mm=spacing_mm, study_date="20261206",
                          accession="BENCH", frame_of_reference_uid=derive_uid("bench-for", name))
    return write_mg_instance(path, np.clip(pixels, 0, 4095).astype(np.uint16), spec)


def bound_met(row: dict[str, Any]) -> bool:
    """Whether a measured image stayed within the bound (``TARGET_SECONDS`` and ``TARGET_MIB``)."""
    return row["seconds"] < TARGET_SECONDS and row["peak_rss_mib"] < TARGET_MIB


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(pipeline: Any, path: Path, out_dir: Path) -> dict[str, Any]:
    """One image through the worker's steps (``worker.tasks.analyse_from_spool`` without the spool): read, analyse,
    write every output; then the freed memory is handed back as after a study."""
    import pydicom

    from dicom_io.reader import read_mammogram
    from worker.memory import release_freed_memory
    from worker.outputs import write_study_outputs

    reset_peak_rss()
    started, cpu = time.perf_counter(), _cpu_seconds()
    image = read_mammogram(path, max_pixels=80_000_000)
    analysis = pipeline.analyze([image])
    written = time.perf_counter()
    sources = {image.meta.sop_instance_uid: pydicom.dcmread(path, stop_before_pixels=True)}
    write_study_outputs(analysis, [image], out_dir, sources=sources, dicom=True)
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu
    peak = peak_rss_mib()
    megapixels = image.meta.rows * image.meta.columns / 1e6
    row = {"side": image.meta.rows, "megapixels": round(megapixels, 2), "seconds": round(seconds, 2),
           "cpu_seconds": round(cpu, 2), "outputs_seconds": round(time.perf_counter() - written, 2),
           "seconds_per_mpx": round(seconds / megapixels, 3), "peak_rss_mib": round(peak, 1),
           "lesions": len(analysis.result.images[0].lesions), "pipeline_timings_s": analysis.result.timings_s}
    del image, analysis
    release_freed_memory()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="model bundle (default: the shipped one)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000], help="image sides, smallest first")
    parser.add_argument("--spacing-mm", type=float, default=0.1, help="pixel pitch of the synthetic images")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    add_output_arguments(parser, "large-image")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = [400, 800]

    import torch

    from settings.config import default_model_dir
    from models.pipeline import Pipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    machine = machine_info()
    model_dir = args.model_dir or default_model_dir()
    pipeline = Pipeline.from_model_dir(model_dir, device="cpu", explain=True, runtime="auto")
    rows = []
    with tempfile.TemporaryDirectory(prefix="mccad-bench-large-") as tmp:
        warm = write_image(Path(tmp) / "warm.dcm", min(args.sizes), args.spacing_mm)
        measure(pipeline, warm, Path(tmp) / "out-warm")  # lazily built parts (ONNX sessions) outside the timed calls
        for side in args.sizes:
            progress(f"large_image: {side} x {side}")
            path = write_image(Path(tmp) / f"{side}.dcm", side, args.spacing_mm)
            rows.append(measure(pipeline, path, Path(tmp) / f"out-{side}"))
            path.unlink()
            shutil.rmtree(Path(tmp) / f"out-{side}")
    base = rows[0]["seconds_per_mpx"]
    for row in rows:
        row["ratio"] = round(row["seconds_per_mpx"] / base, 2) if base else None
    largest = rows[-1]
    met = bound_met(largest)
    extra = {"targets": {"seconds": TARGET_SECONDS, "peak_rss_mib": TARGET_MIB}, "met": met,
             "model_dir": str(model_dir), "runtime": pipeline.detector_runtime}
    doc = write_report(args.out, "large_image", args, machine, rows, extra=extra)
    print_report(doc, ["side", "megapixels", "seconds", "cpu_seconds", "outputs_seconds", "seconds_per_mpx", "ratio",
                       "peak_rss_mib", "lesions"], "One large image, read, analysed and written as the worker does")
    verdict = "met" if met else "MISSED"
    print(f"bound {verdict}: {largest['side']} x {largest['side']} in {largest['seconds']} s "
          f"(bound {TARGET_SECONDS:g} s) and {largest['peak_rss_mib']} MiB peak (bound {TARGET_MIB:g} MiB)")
    return 0 if met or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
