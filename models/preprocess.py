"""The paper's image standardisation (Lin et al. 2025, section 2.4) with an exact coordinate map.

Section 2.4: "we used an algorithm to sum up the image pixels in each column from right or left, and stopped when
the sum of pixels in a column was zero. This helped us to automatically find the first valid pixel. We then cut out
the images on the other side of the column to obtain an image without a black background."

Our reading, made explicit:

1. Orient: every image is turned so that the chest wall is on the left (:func:`chest_wall_on_left` decides from
   the image content, white film edges and labels left out; DICOM laterality breaks ties). Only a horizontal flip
   is ever applied.
2. Columns: walking from the chest-wall side, skip leading background columns (some detectors leave a dark strip at
   the chest wall), then keep columns until the first one that counts as background; everything from that column on
   is cut. "Sum reaches zero" becomes "mean intensity <= ``column_tolerance``" so that detector noise and film grain
   do not keep the background, and walking from the chest wall (not from the far side) means that a burned-in label
   or lead marker lying beyond a gap of background does not stop the cut. Rows that are bright from edge to edge
   (film borders of digitised film) are left out of the column means (:func:`border_rows`).
3. Rows (optional, ``crop_rows``): the same test on row means, keeping the contiguous run of tissue rows that holds
   the densest row, so that markers above or below the breast are cut too.
4. Scale (optional): area-average resampling to a fixed pixel spacing (``spacing_mm``, for detectors trained on
   crops at native resolution), then, with ``max_side``, downscaling so that the longer side is at most ``max_side``.

Every step is an affine map of continuous pixel coordinates (pixel ``i`` covers ``[i, i + 1)``), so
:class:`CoordinateMap` maps boxes both ways exactly and maps heatmaps back onto the original image grid.
Pure numpy: this module runs inside the model pipeline and imports none of our I/O packages.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

#: |left - right| / total tissue mass below which the content is called ambiguous and laterality decides.
CONTENT_MARGIN = 0.05
#: share of a row's pixels that must be bright for the row to count as a film border (see :func:`border_rows`).
BORDER_ROW_FRACTION = 0.95
#: intensity (on the [0, 1] scale, bright = dense) from which a pixel counts as film edge, label or marker rather
#: than tissue in the orientation decision (:func:`chest_wall_on_left`)
NON_TISSUE_LEVEL = 0.9
#: rows summed at a time by :func:`chest_wall_on_left`
MASS_BLOCK_ROWS = 1024


@dataclass(frozen=True)
class StandardiseConfig:
    """How :func:`standardise` crops and scales.

    ``column_tolerance`` is on the [0, 1] intensity scale of :class:`models.types.MammogramImage`: a column (row)
    whose mean intensity is at or below it counts as background.
    """

    column_tolerance: float = 0.01
    crop_rows: bool = False
    max_side: int | None = None
    #: resample to this pixel spacing (mm) before any ``max_side`` cap: a detector trained on crops at native
    #: resolution must see calcifications at the size it learned them, whatever the acquisition's pixel
    spacing_mm: float | None = None
    #: the spacing assumed for images that state none (digitised film such as CBIS-DDSM: 42-50 um)
    assumed_spacing_mm: float = 0.05

    def __post_init__(self) -> None:
        for name in ("spacing_mm", "assumed_spacing_mm"):
            value = getattr(self, name)
            if value is not None and not 0.01 <= value <= 1.0:
                raise ValueError(f"{name} must lie in 0.01-1 mm, got {value}")
        if not 0.0 <= self.column_tolerance < 1.0:
            raise ValueError(f"column_tolerance must be in [0, 1), got {self.column_tolerance}")
        if self.max_side is not None and self.max_side < 1:
            raise ValueError(f"max_side must be a positive number of pixels, got {self.max_side}")


def standardise_config_from(spec: dict) -> StandardiseConfig:
    """A config from a manifest's or run's ``standardise`` record; keys this version does not know are ignored."""
    known = {f.name for f in fields(StandardiseConfig)}
    return StandardiseConfig(**{k: v for k, v in dict(spec).items() if k in known})


@dataclass(frozen=True)
class CoordinateMap:
    """The exact affine map between original pixel coordinates and model input coordinates.

    Forward (original -> input): optional horizontal flip of the whole original image, then the crop
    ``[row_start, row_stop) x [col_start, col_stop)`` of the flipped image, then a per-axis scale to ``input_shape``.
    Boxes are ``(N, 4)`` arrays of ``x0, y0, x1, y1`` in continuous pixel coordinates (x = column).
    """

    original_shape: tuple[int, int]
    flipped: bool
    row_start: int
    row_stop: int
    col_start: int
    col_stop: int
    input_shape: tuple[int, int]

    @property
    def crop_shape(self) -> tuple[int, int]:
        return (self.row_stop - self.row_start, self.col_stop - self.col_start)

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Input pixels per original pixel along x (columns) and y (rows)."""
        ch, cw = self.crop_shape
        return (self.input_shape[1] / cw, self.input_shape[0] / ch)

    @property
    def resized(self) -> bool:
        return tuple(self.input_shape) != self.crop_shape

    def to_dict(self) -> dict:
        """JSON-ready description (the crop/flip/scale record written beside preprocessed images)."""
        d = asdict(self)
        d["original_shape"] = list(self.original_shape)
        d["input_shape"] = list(self.input_shape)
        d["scale_xy"] = list(self.scale_xy)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CoordinateMap":
        return cls(
            original_shape=tuple(int(v) for v in d["original_shape"]),
            flipped=bool(d["flipped"]),
            row_start=int(d["row_start"]),
            row_stop=int(d["row_stop"]),
            col_start=int(d["col_start"]),
            col_stop=int(d["col_stop"]),
            input_shape=tuple(int(v) for v in d["input_shape"]),
        )

    # ------------------------------------------------------------------ boxes
    def boxes_to_input(self, boxes: np.ndarray) -> np.ndarray:
        b = _as_boxes(boxes)
        x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
        if self.flipped:
            width = self.original_shape[1]
            x0, x1 = width - x1, width - x0
        sx, sy = self.scale_xy
        return np.stack(
            [(x0 - self.col_start) * sx, (y0 - self.row_start) * sy,
             (x1 - self.col_start) * sx, (y1 - self.row_start) * sy],
            axis=1,
        )

    def boxes_to_original(self, boxes: np.ndarray) -> np.ndarray:
        b = _as_boxes(boxes)
        sx, sy = self.scale_xy
        x0 = b[:, 0] / sx + self.col_start
        x1 = b[:, 2] / sx + self.col_start
        y0 = b[:, 1] / sy + self.row_start
        y1 = b[:, 3] / sy + self.row_start
        if self.flipped:
            width = self.original_shape[1]
            x0, x1 = width - x1, width - x0
        return np.stack([x0, y0, x1, y1], axis=1)

    # ---------------------------------------------------------------- heatmaps
    def heatmap_to_original(self, heatmap: np.ndarray, *, coarse: bool = False) -> np.ndarray:
        """A map of the model input onto the original grid (float32); zero where the crop removed background.

        ``heatmap`` has the input shape; with ``coarse``, any 2-D shape covering the whole input at another
        resolution (a class activation map computed on a grid of bounded size). Either way it is resampled (bilinear)
        straight into the crop of one original-sized array, mirrored in place when the image was flipped: that array
        is the only allocation of the original's size, whatever the image's size.
        """
        h = np.asarray(heatmap, dtype=np.float32)
        if h.ndim != 2 or h.size == 0 or (not coarse and h.shape != tuple(self.input_shape)):
            raise ValueError(f"heatmap shape {h.shape} is not the model input shape {tuple(self.input_shape)}")
        out = np.zeros(self.original_shape, dtype=np.float32)
        if self.flipped:  # the crop's columns, mirrored: writing the unflipped crop here flips it
            width = self.original_shape[1]
            region = out[self.row_start:self.row_stop, width - self.col_stop:width - self.col_start][:, ::-1]
        else:
            region = out[self.row_start:self.row_stop, self.col_start:self.col_stop]
        if h.shape == self.crop_shape:
            region[...] = h
        else:
            resize_bilinear(h, self.crop_shape, out=region)
        return out

    def heatmap_to_input(self, heatmap: np.ndarray) -> np.ndarray:
        """An original-shaped map (e.g. a ground-truth mask) onto the model input grid (float32)."""
        h = np.asarray(heatmap, dtype=np.float32)
        if h.shape != tuple(self.original_shape):
            raise ValueError(f"heatmap shape {h.shape} is not the original image shape {tuple(self.original_shape)}")
        return self.image_to_input(h)

    def image_to_input(self, image: np.ndarray) -> np.ndarray:
        """Apply flip, crop and (area) scaling to an original-shaped float image."""
        img = image[:, ::-1] if self.flipped else image
        img = np.asarray(img[self.row_start:self.row_stop, self.col_start:self.col_stop], dtype=np.float32)
        if self.resized:
            img = resize_area(img, self.input_shape)
        return np.ascontiguousarray(img)


@dataclass
class StandardisedImage:
    """The model input (float32, chest wall on the left) and the map back to the original pixels."""

    pixels: np.ndarray
    cmap: CoordinateMap


def standardise(
    pixels: np.ndarray, laterality: str | None = None, config: StandardiseConfig = StandardiseConfig(),
    pixel_spacing_mm: tuple[float, float] | None = None,
) -> StandardisedImage:
    """Section 2.4 standardisation of one mammogram (float image in [0, 1], bright = dense).

    An image with no column above the tolerance (all background) is kept whole rather than cut to nothing.
    ``pixel_spacing_mm`` (row, column) is the image's own spacing; it matters only when ``config.spacing_mm`` asks for
    resampling (``config.assumed_spacing_mm`` stands in when it is None).
    """
    image = np.asarray(pixels, dtype=np.float32)
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"standardise expects one non-empty 2-D image, got shape {image.shape}")
    flipped = not chest_wall_on_left(image, laterality)
    oriented = image[:, ::-1] if flipped else image
    border = border_rows(oriented, config.column_tolerance)
    body = oriented[~border] if (~border).any() else oriented
    col_start, col_stop = _tissue_columns(body.mean(axis=0), config.column_tolerance)
    row_start, row_stop = 0, image.shape[0]
    if config.crop_rows:
        row_means = oriented[:, col_start:col_stop].mean(axis=1)
        row_means[border] = 0.0
        row_start, row_stop = _tissue_rows(row_means, config.column_tolerance)
    crop_h, crop_w = row_stop - row_start, col_stop - col_start
    input_shape = (crop_h, crop_w)
    if config.spacing_mm is not None:
        row_mm, col_mm = pixel_spacing_mm or (config.assumed_spacing_mm, config.assumed_spacing_mm)
        input_shape = (max(1, round(crop_h * row_mm / config.spacing_mm)),
                       max(1, round(crop_w * col_mm / config.spacing_mm)))
    if config.max_side is not None and max(input_shape) > config.max_side:
        factor = config.max_side / max(input_shape)
        input_shape = (max(1, min(config.max_side, round(input_shape[0] * factor))),
                       max(1, min(config.max_side, round(input_shape[1] * factor))))
    cmap = CoordinateMap(
        original_shape=(int(image.shape[0]), int(image.shape[1])),
        flipped=flipped,
        row_start=int(row_start),
        row_stop=int(row_stop),
        col_start=int(col_start),
        col_stop=int(col_stop),
        input_shape=(int(input_shape[0]), int(input_shape[1])),
    )
    return StandardisedImage(pixels=cmap.image_to_input(image), cmap=cmap)


def chest_wall_on_left(pixels: np.ndarray, laterality: str | None) -> bool:
    """Whether the chest wall is already on the left of ``pixels``.

    The breast is widest at the chest wall and thins to the nipple, so the half of the image holding more tissue
    mass is the chest-wall half; a pectoral muscle on MLO only adds mass on that side. Pixels at or above
    ``NON_TISSUE_LEVEL`` are left out of the masses: film edges, burned-in labels and lead markers are white and
    may lie on either side, breast tissue seldom is. Whole columns are not left out: on a mediolateral-oblique view
    the columns next to the chest wall are tissue from top to bottom, and dropping them as if they were a film
    border takes the chest-wall side's mass away. Archives get laterality and orientation tags wrong, so the
    content decides. When the two halves differ by less than ``CONTENT_MARGIN`` of the total (a centred or nearly
    empty image), laterality decides with the DICOM display convention (PS3.17 / the mammography hanging
    convention: a left breast is displayed with its chest wall on the left of the image, a right breast with its
    chest wall on the right); with no laterality either, the image is left as it is.

    The masses are summed by blocks of rows, so a large image costs one block of working memory, not a copy.
    """
    image = np.asarray(pixels)
    width = image.shape[1]
    half = width // 2
    column_mass = np.zeros(width, dtype=np.float64)
    for start in range(0, image.shape[0], MASS_BLOCK_ROWS):
        block = np.asarray(image[start:start + MASS_BLOCK_ROWS], dtype=np.float32)
        column_mass += np.where(block < NON_TISSUE_LEVEL, block, 0.0).sum(axis=0, dtype=np.float64)
    left = float(column_mass[:half].sum())
    right = float(column_mass[width - half:].sum())
    total = left + right
    if total > 0 and abs(left - right) / total >= CONTENT_MARGIN:
        return left > right
    return laterality is None or not str(laterality).upper().startswith("R")


def border_rows(image: np.ndarray, tolerance: float) -> np.ndarray:
    """Rows that are bright from edge to edge: film borders and collimator strips, never breast.

    Digitised film (CBIS-DDSM, for one) carries a white strip along the film edge. Left in, it adds its height /
    image height to every column mean and keeps the whole background above the tolerance, so these rows are left
    out of the column sums. A row counts as border when at least ``BORDER_ROW_FRACTION`` of its pixels are above
    ``max(4 * tolerance, 0.05)``; a breast leaves background at least on the nipple side of its rows.
    """
    level = max(4.0 * tolerance, 0.05)
    return (image > level).mean(axis=1) >= BORDER_ROW_FRACTION


def _tissue_columns(column_means: np.ndarray, tolerance: float) -> tuple[int, int]:
    """``[start, stop)`` of the first run of non-background columns counted from the left (chest wall)."""
    tissue = column_means > tolerance
    if not tissue.any():
        return 0, int(column_means.shape[0])
    start = int(np.argmax(tissue))
    after = ~tissue[start:]
    stop = start + int(np.argmax(after)) if after.any() else int(column_means.shape[0])
    return start, stop


def _tissue_rows(row_means: np.ndarray, tolerance: float) -> tuple[int, int]:
    """``[start, stop)`` of the run of non-background rows that contains the densest row."""
    tissue = row_means > tolerance
    if not tissue.any():
        return 0, int(row_means.shape[0])
    peak = int(np.argmax(row_means))
    above = np.flatnonzero(~tissue[:peak])
    below = np.flatnonzero(~tissue[peak:])
    start = int(above[-1]) + 1 if above.size else 0
    stop = peak + int(below[0]) if below.size else int(row_means.shape[0])
    return start, stop


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be an (N, 4) array of x0, y0, x1, y1, got shape {b.shape}")
    return b


# ------------------------------------------------------------------------------------------------ resampling
def _area_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """For each output cell, the input indices it overlaps and the overlap fractions (rows sum to 1).

    Output cell ``j`` covers ``[j, j + 1) * n_in / n_out`` of the input axis; returns ``(index, weight)`` arrays of
    shape ``(n_out, k)`` with ``k`` the most input cells any output cell touches.
    """
    ratio = n_in / n_out
    lo = np.arange(n_out) * ratio
    hi = lo + ratio
    first = np.floor(lo).astype(np.int64)
    k = int(np.ceil(ratio)) + 1
    index = first[:, None] + np.arange(k)[None, :]
    cell_lo = index.astype(np.float64)
    overlap = np.clip(np.minimum(hi[:, None], cell_lo + 1) - np.maximum(lo[:, None], cell_lo), 0.0, None)
    valid = index < n_in
    overlap = np.where(valid, overlap, 0.0)
    index = np.minimum(index, n_in - 1)
    overlap /= overlap.sum(axis=1, keepdims=True)
    return index, overlap


def _bilinear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Half-pixel-centred linear interpolation along one axis (edge values repeated)."""
    centres = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    centres = np.clip(centres, 0.0, n_in - 1)
    i0 = np.floor(centres).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    t = centres - i0
    return np.stack([i0, i1], axis=1), np.stack([1.0 - t, t], axis=1)


#: Output pixels resampled per block (16 MiB of float32): the temporaries of a resampling stay this small whatever
#: the image's size.
RESAMPLE_BLOCK_PIXELS = 1 << 22


def _apply_separable(image: np.ndarray, rows: tuple[np.ndarray, np.ndarray], cols: tuple[np.ndarray, np.ndarray],
                     out: np.ndarray | None = None) -> np.ndarray:
    """Resample rows then columns; each output value sums at most ``k`` weighted inputs, so float32 is enough.

    Works through blocks of output rows (``RESAMPLE_BLOCK_PIXELS``), each value computed as a whole-image pass would,
    and writes into ``out`` (float32, the output's shape, any strides) when given.
    """
    r_idx, r_w = rows
    c_idx, c_w = cols
    r_w = r_w.astype(np.float32)
    c_w = c_w.astype(np.float32)
    shape = (r_idx.shape[0], c_idx.shape[0])
    if out is None:
        out = np.zeros(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out must be a float32 array of shape {shape}, got {out.dtype} {out.shape}")
    else:
        out[...] = 0.0
    step = max(1, RESAMPLE_BLOCK_PIXELS // max(image.shape[1], shape[1]))
    for start in range(0, shape[0], step):
        block = slice(start, start + step)
        tmp = np.zeros((min(start + step, shape[0]) - start, image.shape[1]), dtype=np.float32)
        for k in range(r_idx.shape[1]):
            tmp += r_w[block, k:k + 1] * image[r_idx[block, k], :]
        target = out[block]
        for k in range(c_idx.shape[1]):
            target += c_w[None, :, k] * tmp[:, c_idx[:, k]]
    return out


def resize_area(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Area-average resampling (the right filter for downscaling: every input pixel counts once)."""
    h, w = image.shape
    return _apply_separable(np.asarray(image, dtype=np.float32), _area_weights(h, shape[0]), _area_weights(w, shape[1]))


def resize_bilinear(image: np.ndarray, shape: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Bilinear resampling with half-pixel centres (used to bring low-resolution heatmaps back up); into ``out``
    (float32, ``shape``, any strides) when given."""
    h, w = image.shape
    return _apply_separable(np.asarray(image, dtype=np.float32), _bilinear_weights(h, shape[0]),
                            _bilinear_weights(w, shape[1]), out=out)
