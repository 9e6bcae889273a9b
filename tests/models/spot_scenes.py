"""Small synthetic mammograms for the spot detector's tests: a smooth textured breast (chest wall on the left) on a
dark background, with bright calcification-sized spots placed in millimetres, rendered on a 0.05 mm grid and
area-averaged to the pitch asked for, so that one scene at two pitches is the same breast."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

FINE_MM = 0.05
SUPERSAMPLE = 4
COARSE = 5


@dataclass
class Scene:
    pixels: np.ndarray  # float32 [0, 1], bright = dense
    pitch_mm: float
    cluster_mm: list[tuple[float, float]]  # x, y of the cluster's spots
    singles_mm: list[tuple[float, float]]  # x, y of the isolated spots


def _disc(image: np.ndarray, cx: float, cy: float, radius_mm: float, contrast: float) -> None:
    """Add a disc of ``contrast`` at (cx, cy) mm to a FINE_MM image, each pixel weighted by the share it covers."""
    x0, x1 = int((cx - 1) / FINE_MM), int((cx + 1) / FINE_MM)
    y0, y1 = int((cy - 1) / FINE_MM), int((cy + 1) / FINE_MM)
    grid = np.mgrid[y0 * SUPERSAMPLE:y1 * SUPERSAMPLE, x0 * SUPERSAMPLE:x1 * SUPERSAMPLE]
    sy, sx = (grid + 0.5) * FINE_MM / SUPERSAMPLE
    inside = ((sx - cx) ** 2 + (sy - cy) ** 2 <= radius_mm ** 2).astype(np.float32)
    image[y0:y1, x0:x1] += contrast * inside.reshape(y1 - y0, SUPERSAMPLE, x1 - x0, SUPERSAMPLE).mean(axis=(1, 3))


def scene(pitch_mm: float, seed: int = 0, *, cluster_at: tuple[float, float] | None = (25.0, 40.0), n_cluster: int = 5,
          singles: Sequence[tuple[float, float]] = ((15.0, 14.0), (40.0, 62.0), (12.0, 66.0)),
          contrast: float = 0.14, radius_mm: float = 0.2, height_mm: float = 80.0, width_mm: float = 60.0,
          lines: Sequence[tuple[float, float, float, float]] = ()) -> Scene:
    """A breast filling a half-ellipse against the left edge, textured at 0.4, 1.5 and 5 mm, with ``n_cluster``
    spots of radius ``radius_mm`` (+-25 %) within 3 mm of ``cluster_at`` and one spot at each of ``singles`` (mm);
    ``lines``: bright 0.5 mm wide straight segments (x0, y0, x1, y1 mm) such as vessels; pixel noise 0.004."""
    rng = np.random.default_rng(seed)
    h, w = int(round(height_mm / FINE_MM)), int(round(width_mm / FINE_MM))
    yy, xx = (np.mgrid[:h, :w] + 0.5) * FINE_MM
    inside = (xx / (0.85 * width_mm)) ** 2 + ((yy - height_mm / 2) / (0.47 * height_mm)) ** 2 <= 1.0
    breast = ndimage.gaussian_filter(inside.astype(np.float32), 1.0 / FINE_MM)
    texture = np.zeros((h, w), np.float32)
    for scale_mm, amplitude in ((0.4, 0.015), (1.5, 0.03), (5.0, 0.06)):
        step = 1 if scale_mm < 1.0 else COARSE  # broad texture drawn on a coarse grid and spread (fast)
        field = ndimage.gaussian_filter(rng.standard_normal((-(-h // step), -(-w // step))).astype(np.float32),
                                        scale_mm / (FINE_MM * step))
        if step > 1:
            field = ndimage.zoom(field, step, order=1)[:h, :w]
        texture += amplitude * field / field.std()
    image = breast * (0.4 + texture)
    for x0, y0, x1, y1 in lines:
        t = np.clip(((xx - x0) * (x1 - x0) + (yy - y0) * (y1 - y0)) / ((x1 - x0) ** 2 + (y1 - y0) ** 2), 0, 1)
        distance = np.hypot(xx - (x0 + t * (x1 - x0)), yy - (y0 + t * (y1 - y0)))
        image += 0.1 * ndimage.gaussian_filter((distance <= 0.25).astype(np.float32), 0.1 / FINE_MM)
    cluster = [] if cluster_at is None else [
        (cluster_at[0] + dx, cluster_at[1] + dy) for dx, dy in rng.uniform(-3.0, 3.0, size=(n_cluster, 2))]
    for cx, cy in [*cluster, *singles]:
        _disc(image, cx, cy, radius_mm * rng.uniform(0.75, 1.25), contrast)
    f = int(round(pitch_mm / FINE_MM))
    out = image[: h // f * f, : w // f * f].reshape(h // f, f, w // f, f).mean(axis=(1, 3))
    out = out + rng.normal(0.0, 0.004, out.shape)
    return Scene(np.clip(out, 0.0, 1.0).astype(np.float32), pitch_mm, cluster, list(singles))
