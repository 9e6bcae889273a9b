"""Grayscale pixel transforms that turn stored values into a float32 image in [0, 1] where bright means dense.

The order is the grayscale pipeline of PS3.4 N.2.1 (Modality LUT, VOI LUT, Presentation LUT), written as pure numpy
functions of the stored values and the header:

1. Modality LUT (PS3.3 C.11.1): Rescale Slope/Intercept or the Modality LUT Sequence (pydicom's implementation).
2. "For Processing" images (PS3.3 C.8.11.7, Pixel Intensity Relationship LIN): detector values are linear in
   exposure, while tissue attenuation is linear in the logarithm of exposure (Beer-Lambert). They are converted by
   ``log1p(value - min)`` over the image; their VOI attributes (meant for the raw values) are not applied.
3. VOI LUT (PS3.3 C.11.2): the first VOI LUT Sequence item when present (the manufacturer's tone curve), else the
   first Window Center/Width pair with the VOI LUT Function LINEAR, LINEAR_EXACT or SIGMOID (C.11.2.1.2-3). The VOI
   output range is mapped to [0, 1].
4. Without any VOI, the image is normalised by its actual data range (minimum -> 0, maximum -> 1), excluding pixel
   padding. Bits Stored is not trusted for scaling because archives store 10-, 12- or 14-bit data in 16 bits
   (CBIS-DDSM: 12-bit levels spread over 0..65535); the effective bit depth is measured and reported instead.
5. Polarity (PS3.3 C.8.11.7 and C.11.6.1.2): MONOCHROME1 (minimum is white) is inverted, and so is Presentation
   LUT Shape INVERSE. In DX/MG objects INVERSE is the standard companion of MONOCHROME1 and names the same
   inversion, so the image is inverted once when either says so, never twice.
6. Pixel padding (PS3.3 C.7.5.1.1.2, Pixel Padding Value/Range Limit) becomes 0, the background.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi


class VoiError(ValueError):
    """The VOI attributes cannot be applied (bad window width, unknown function, unusable LUT)."""


#: Pixels per step where a whole-image temporary would be large (see :func:`effective_bits`).
_CHUNK = 1 << 22


def padding_mask(stored: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """Pixels marked as padding by Pixel Padding Value (0028,0120) and Range Limit (0028,0121), on stored values."""
    value = ds.get("PixelPaddingValue")
    if value is None:
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    if isinstance(value, bytes) or isinstance(limit, bytes):  # US/SS ambiguous VR left unresolved
        return None
    if limit is None:
        mask = stored == value
    else:
        lo, hi = sorted((int(value), int(limit)))
        mask = (stored >= lo) & (stored <= hi)
    return mask if mask.any() else None


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Window values into [0, 1] by the VOI LUT Function of PS3.3 C.11.2.1.2 (LINEAR), C.11.2.1.3.2 (LINEAR_EXACT)
    and C.11.2.1.3.1 (SIGMOID), with output range 0..1 in place of the standard's ymin..ymax."""
    x = values.astype(np.float64, copy=False)
    function = (function or "LINEAR").strip().upper()
    if function == "LINEAR":
        if width < 1:
            raise VoiError(f"Window Width {width} is below 1, which PS3.3 C.11.2.1.2.1 forbids for LINEAR")
        # in place on one new array (x may be the caller's): a whole-image temporary per operation would hold
        # several copies of a large image at once
        if width > 1:
            out = x - (center - 0.5)
            out /= width - 1
            out += 0.5
        else:
            out = (x > center - 0.5).astype(np.float64)
        out[x <= center - 0.5 - (width - 1) / 2] = 0.0
        out[x > center - 0.5 + (width - 1) / 2] = 1.0
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise VoiError(f"Window Width {width} must be above 0 for LINEAR_EXACT (PS3.3 C.11.2.1.3.2)")
        out = x - center
        out /= width
        out += 0.5
    elif function == "SIGMOID":
        if width <= 0:
            raise VoiError(f"Window Width {width} must be above 0 for SIGMOID (PS3.3 C.11.2.1.3.1)")
        out = 1.0 / (1.0 + np.exp(np.clip(-4.0 * (x - center) / width, -700, 700)))
    else:
        raise VoiError(f"VOI LUT Function {function!r} is not one of LINEAR, LINEAR_EXACT, SIGMOID (PS3.3 C.11.2.1.3)")
    return np.clip(out, 0.0, 1.0, out=out)


def _first(value: object) -> float:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return float(value[0])  # type: ignore[index]
    return float(value)  # type: ignore[arg-type]


def voi_lut_output(values: np.ndarray, ds: Dataset) -> np.ndarray:
    """The first VOI LUT Sequence item applied to modality values (the LUT's own output values)."""
    integers = np.rint(values).astype(np.int64) if not np.issubdtype(values.dtype, np.integer) else values
    try:
        return apply_voi(integers, ds, index=0)
    except (NotImplementedError, ValueError, KeyError, AttributeError, IndexError) as exc:
        raise VoiError(f"the VOI LUT Sequence cannot be applied: {exc}") from exc


def voi_lut_top(ds: Dataset, largest_output: float) -> float:
    """The value the first VOI LUT Sequence item's output is divided by to give [0, 1]: its output range is
    0..2**n - 1 with n the third LUT Descriptor value (PS3.3 C.11.2.1.1); some LUTs claim 16 bits and hold 12-bit
    data or the reverse, so the larger of that and ``largest_output`` (the LUT's real maximum over the image)."""
    bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
    return max(float(2**bits - 1), float(largest_output))


def has_voi(ds: Dataset) -> bool:
    return bool(ds.get("VOILUTSequence")) or ("WindowCenter" in ds and "WindowWidth" in ds)


def effective_bits(stored: np.ndarray, bits_stored: int, mask: np.ndarray | None = None) -> int:
    """Bits the data really uses, never above Bits Stored.

    Normally the bits its range needs. When the distinct levels are spread out (median step between neighbouring
    levels of 2 or more, as when 12-bit data is multiplied up to fill 16 bits, CBIS-DDSM's step is about 22), it is
    the bits the count of levels needs instead: CBIS-DDSM measures 12 of 16.
    """
    data = stored[~mask] if mask is not None else stored.ravel()
    if data.size == 0:
        return 0
    lo, hi = int(data.min()), int(data.max())
    range_bits = max(1, math.ceil(math.log2(hi - lo + 1)))
    if np.issubdtype(data.dtype, np.integer) and hi - lo < 2**20:
        counts = np.zeros(hi - lo + 1, np.int64)
        flat = data.ravel()
        for start in range(0, flat.size, _CHUNK):  # by chunks: an int64 copy of a 64 Mpx image is 512 MiB
            counts += np.bincount(flat[start:start + _CHUNK].astype(np.int64) - lo, minlength=hi - lo + 1)
        levels = np.flatnonzero(counts)
    else:
        levels = np.unique(data)
    if levels.size > 2 and float(np.median(np.diff(levels))) >= 2:
        return min(max(1, math.ceil(math.log2(levels.size))), range_bits, bits_stored)
    return min(range_bits, bits_stored)


def is_inverted(ds: Dataset, quirks: list[str]) -> bool:
    """Whether stored order is opposite to bright = dense: MONOCHROME1 or Presentation LUT Shape INVERSE (once)."""
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    if photometric == "MONOCHROME2" and shape == "INVERSE":
        quirks.append("presentation-lut-inverse-on-monochrome2")
        return True
    if photometric == "MONOCHROME1" and shape == "IDENTITY":
        quirks.append("presentation-lut-identity-on-monochrome1")
    return photometric == "MONOCHROME1"


def _row_blocks(shape: tuple[int, ...]) -> Iterator[slice]:
    """Slices of consecutive rows holding about ``_CHUNK`` pixels each, covering ``shape[0]`` rows."""
    rows, columns = int(shape[0]), max(1, int(shape[1]))
    step = max(1, _CHUNK // columns)
    for start in range(0, rows, step):
        yield slice(start, min(start + step, rows))


def _masked_min_max(stored: np.ndarray, mask: np.ndarray | None,
                    values_of: Callable[[np.ndarray], np.ndarray]) -> tuple[float, float] | None:
    """Minimum and maximum of ``values_of(rows of stored)`` outside the padding, block by block; None when every
    pixel is padding."""
    lo, hi, seen = math.inf, -math.inf, False
    for rows in _row_blocks(stored.shape):
        values = values_of(stored[rows])
        if mask is not None:
            values = values[~mask[rows]]
        if values.size:
            lo, hi, seen = min(lo, float(np.min(values))), max(hi, float(np.max(values))), True
    return (lo, hi) if seen else None


def _range_scaler(limits: tuple[float, float] | None,
                  quirks: list[str]) -> Callable[[np.ndarray], np.ndarray]:
    """``range_to_unit`` with the whole image's data range ``limits`` (None: all padding), for one block at a time."""
    if limits is None:
        quirks.append("image-all-padding")
    elif limits[1] <= limits[0]:
        quirks.append("constant-image")
    if limits is None or limits[1] <= limits[0]:
        return lambda values: np.zeros(values.shape, np.float64)
    lo, hi = limits

    def scale(values: np.ndarray) -> np.ndarray:
        unit = values.astype(np.float64)
        unit -= lo
        unit /= hi - lo
        return np.clip(unit, 0.0, 1.0, out=unit)

    return scale


def _unit_transform(stored: np.ndarray, ds: Dataset, mask: np.ndarray | None,
                    quirks: list[str]) -> Callable[[np.ndarray], np.ndarray]:
    """Steps 1-4 of the module docstring as a function of a block of stored rows (float64 in [0, 1] out); the
    statistics they need over the whole image (data ranges, the VOI LUT's top) are measured first, block by block."""
    bits_stored = int(ds.get("BitsStored", stored.dtype.itemsize * 8))

    def modality(rows: np.ndarray) -> np.ndarray:
        return apply_modality_lut(rows, ds)

    intent = str(ds.get("PresentationIntentType", "") or "").strip().upper()
    relationship = str(ds.get("PixelIntensityRelationship", "") or "").strip().upper()
    if intent == "FOR PROCESSING" and relationship != "LOG":
        limits = _masked_min_max(stored, mask, modality)
        lo = limits[0] if limits is not None else 0.0

        def logged(rows: np.ndarray) -> np.ndarray:
            return np.log1p(np.maximum(modality(rows).astype(np.float64) - lo, 0.0))

        quirks.append("for-processing-log-converted")
        if has_voi(ds):
            quirks.append("voi-ignored-for-processing")
        scale = _range_scaler(_masked_min_max(stored, mask, logged), quirks)
        return lambda rows: scale(logged(rows))
    if ds.get("VOILUTSequence"):
        if "WindowCenter" in ds:
            quirks.append("voi-lut-sequence-preferred-over-window")
        top = voi_lut_top(ds, max((float(voi_lut_output(modality(stored[rows]), ds).max(initial=0.0))
                                   for rows in _row_blocks(stored.shape)), default=0.0))
        return lambda rows: np.clip(voi_lut_output(modality(rows), ds).astype(np.float64) / top, 0.0, 1.0)
    if has_voi(ds):
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR")
        return lambda rows: window(modality(rows), center, width, function)
    measured = effective_bits(stored, bits_stored, mask)
    if 0 < measured < bits_stored:
        quirks.append(f"effective-bits-{measured}-of-{bits_stored}")
    quirks.append("normalised-by-data-range")
    scale = _range_scaler(_masked_min_max(stored, mask, modality), quirks)
    return lambda rows: scale(modality(rows))


def to_unit_image(stored: np.ndarray, ds: Dataset, quirks: list[str]) -> np.ndarray:
    """Stored pixel values of one frame -> float32 in [0, 1], bright = dense (steps 1-6 of the module docstring).

    Appends to ``quirks`` what it inferred (effective bit depth, log conversion, ignored VOI, polarity oddities).
    Works through blocks of rows (``_CHUNK`` pixels): the float64 working copies of the Modality LUT and the VOI stay
    a block in size, so the float32 result is the only allocation of the image's size (a 64 Mpx image in float64
    is 512 MiB); each pixel gets the value a whole-image pass would give it.
    """
    mask = padding_mask(stored, ds)
    transform = _unit_transform(stored, ds, mask, quirks)
    inverted = is_inverted(ds, quirks)
    out = np.empty(stored.shape, np.float32)
    for rows in _row_blocks(stored.shape):
        unit = transform(stored[rows])
        if inverted:
            unit = 1.0 - unit
        if mask is not None:
            unit = np.where(mask[rows], 0.0, unit)
        out[rows] = unit
    return out
