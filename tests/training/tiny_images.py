"""Tiny annotated mammogram-like PNGs for the training tests (kept small so CPU training takes seconds).

Each image: a bright half-ellipse of tissue on the chest-wall side over black background, one lesion per image;
malignant lesions are clusters of fine bright points, benign lesions one round bright blob (the morphological cue
the models must learn).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from training.datasets.samples import Lesion, Sample


def write_tiny_samples(folder: Path, n: int, *, rows: int = 160, cols: int = 112, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:rows, :cols]
    samples = []
    for i in range(n):
        img = np.zeros((rows, cols), np.float32)
        tissue = ((xx / (cols * 0.8)) ** 2 + ((yy - rows / 2) / (rows * 0.47)) ** 2) < 1
        img[tissue] = 0.35
        img += tissue * rng.normal(0, 0.02, (rows, cols)).astype(np.float32)
        malignant = i % 2 == 0
        cx, cy = int(rng.integers(20, cols * 0.55)), int(rng.integers(30, rows - 30))
        if malignant:
            for _ in range(14):
                px, py = cx + int(rng.integers(-7, 8)), cy + int(rng.integers(-7, 8))
                img[py - 1:py + 1, px - 1:px + 1] = 1.0
        else:
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < 30] = 0.9
        path = folder / f"img{i:03d}.png"
        Image.fromarray((np.clip(img, 0, 1) * 65535).astype(np.uint16)).save(path)
        lesion = Lesion((cx - 10.0, cy - 10.0, cx + 10.0, cy + 10.0), "malignant" if malignant else "benign",
                        pathotype=("invasive" if i % 4 == 0 else "dcis") if malignant else None,
                        er=("positive" if i % 3 else "negative") if malignant else None)
        samples.append(Sample(image_id=path.name, source=path, patient_id=f"P{i // 2:03d}", breast="L",
                              view="CC" if i % 2 == 0 else "MLO", lesions=(lesion,)))
    return samples
