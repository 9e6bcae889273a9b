"""Where the breast is on a mammogram: the tissue of the breast, without background, burned-in labels, lead markers
or film borders, and optionally without the pectoral muscle of an MLO view.

A calcification lies in breast parenchyma, never in the background, on a burned-in label, or (for the simulator) in
the pectoral muscle of an MLO view. The simulator (``training.simulate.insert``) places its clusters inside this mask,
and the detector's gate (``models.breast_gate``) drops boxes whose centre falls outside it. :func:`breast_mask` finds
the breast on a coarse grid (about 1 mm cells):

1. orient with the chest wall on the left (``models.preprocess.chest_wall_on_left``), leave out film-border rows
   (``models.preprocess.border_rows``);
2. threshold the coarse image, keep the largest connected component (labels and lead markers are separate
   components), fill its holes;
3. on MLO-like views, cut the pectoral muscle: the bright component of the breast touching the breast's upper
   chest-wall corner (its first column, which on digitised film may lie well inside the image), replaced by the
   triangle it spans on the top row and on the chest-wall column, enlarged by 15 % (a triangle is how the muscle
   projects on an MLO view);
4. erode by ``margin_mm`` so that clusters keep away from the skin line and the thin periphery.

Pure numpy and scipy: this module runs inside the model pipeline and imports nothing from ``training``.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from models.preprocess import border_rows, chest_wall_on_left, resize_area

MLO_LIKE_VIEWS = {"MLO", "ML", "LM", "LMO", "SIO"}
#: coarse-grid mean intensity above which a cell counts as tissue (the [0, 1] scale of ``MammogramImage``)
TISSUE_LEVEL = 0.06
COARSE_CELL_MM = 1.0


def _coarse_factor(spacing_mm: float) -> int:
    return max(1, int(round(COARSE_CELL_MM / spacing_mm)))


def _pectoral_triangle(coarse: np.ndarray, breast: np.ndarray) -> tuple[float, float, float] | None:
    """The pectoral muscle of a chest-wall-left MLO image as a triangle: the breast's chest-wall column, the width
    along the top row and the height along that column (coarse cells), or None when no bright region touches the
    breast's upper chest-wall corner. The chest wall is the breast's first column, not the image's: digitised film
    often has a band of background (the film holder, scanner padding) between the image edge and the film."""
    rows = np.flatnonzero(breast.any(axis=1))
    if rows.size == 0:
        return None
    top = int(rows[0])
    left = int(np.flatnonzero(breast.any(axis=0))[0])
    breast_width = breast.shape[1] - left
    # the muscle is what the breast holds along its top rows: take its brightness from there, since in some women
    # it is no brighter than dense parenchyma (a fixed percentile of the breast would then miss it)
    band = breast[top:top + max(3, len(rows) // 20)]
    level = 0.9 * float(np.median(coarse[top:top + band.shape[0]][band]))
    bright = (coarse > level) & breast
    # the muscle is one smooth bright band: smooth away parenchymal speckle before labelling
    bright = ndimage.binary_opening(bright, iterations=2)
    labels, n = ndimage.label(bright)
    if n == 0:
        return None
    corner = labels[top:top + max(3, breast.shape[0] // 20), left:left + max(3, breast_width // 10)]
    ids = np.unique(corner[corner > 0])
    if ids.size == 0:
        return None
    muscle = np.isin(labels, ids)
    ys, xs = np.nonzero(muscle)
    top_band = ys <= top + max(3, breast.shape[0] // 50)
    width = float(xs[top_band].max() + 1 - left) if top_band.any() else float(xs.max() + 1 - left)
    wall_band = xs <= left + max(2, breast_width // 50)
    height = float(ys[wall_band].max() + 1 - top) if wall_band.any() else float(ys.max() + 1 - top)
    if width < 3 or height < 3:
        return None
    # a muscle component that leaked into dense parenchyma must not take the whole breast
    return float(left), width, min(height + top, top + 0.75 * len(rows))


def breast_mask(image: np.ndarray, spacing_mm: float, *, view: str | None = None, laterality: str | None = None,
                margin_mm: float = 3.0) -> np.ndarray:
    """Boolean mask (image shape) of where a calcification may be inserted: breast tissue, no pectoral muscle,
    ``margin_mm`` inside the skin line. See the module docstring for the steps."""
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim != 2:
        raise ValueError(f"breast_mask expects a 2-D image, got shape {pixels.shape}")
    flipped = not chest_wall_on_left(pixels, laterality)
    oriented = pixels[:, ::-1] if flipped else pixels
    f = _coarse_factor(spacing_mm)
    h, w = oriented.shape
    ch, cw = max(1, h // f), max(1, w // f)
    coarse = resize_area(oriented[: ch * f, : cw * f], (ch, cw))
    border = border_rows(coarse, 0.01)
    tissue = (coarse > TISSUE_LEVEL) & ~border[:, None]
    labels, n = ndimage.label(tissue)
    if n == 0:
        return np.zeros(pixels.shape, dtype=bool)
    sizes = ndimage.sum_labels(tissue, labels, index=np.arange(1, n + 1))
    breast = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    if view is not None and view.upper() in MLO_LIKE_VIEWS:
        triangle = _pectoral_triangle(coarse, breast)
        if triangle is not None:
            left, width, height = triangle
            yy, xx = np.mgrid[:ch, :cw]
            breast &= (xx - left + 0.5) / (1.15 * width) + (yy + 0.5) / (1.15 * height) > 1.0
    margin_cells = margin_mm / (f * spacing_mm)
    if margin_cells > 0:
        # distance to the nearest non-breast cell; the image edge is the chest wall (left) or a cut, so pad with
        # tissue on the chest-wall side only: the breast continues beyond the image there
        padded = np.pad(breast, ((1, 1), (0, 1)), constant_values=False)
        padded = np.pad(padded, ((0, 0), (1, 0)), mode="edge")
        inside = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
        breast = inside > margin_cells
    full = np.zeros((h, w), dtype=bool)
    up = np.repeat(np.repeat(breast, f, axis=0), f, axis=1)
    full[: up.shape[0], : up.shape[1]] = up
    return np.ascontiguousarray(full[:, ::-1]) if flipped else full
