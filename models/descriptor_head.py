"""The descriptor head: BI-RADS calcification type and distribution of one found cluster, from the image around its box.

Contract. Input: the mammogram a detector ran on (float in [0, 1], bright = dense), its pixel spacing in mm and one
cluster box (x0, y0, x1, y1 in that image's pixels). :func:`crop_cluster` turns them into a :class:`ClusterCrop`,
two square views resampled to ``spacing_mm`` (0.1 mm) per pixel whatever the image's own pitch, both centred on the
box:

* channel 0, the *detail* view: ``size`` x ``size`` pixels at exactly ``spacing_mm`` (9.6 mm for 96 px), so that a
  calcification's size in pixels is its size in millimetres: the type (punctate 0.1-0.5 mm, round 0.5-1 mm, coarse
  1-2 mm) is a matter of physical size and shape;
* channel 1, the *context* view: the box grown by ``context_margin`` on each side to a square of at least the detail
  view's field, resampled to ``size`` pixels, so that a 40 mm diffuse spread fits as well as a 5 mm group: the
  distribution is a matter of spread. Its field in mm is handed to the network beside the pixels
  (``ClusterCrop.context_mm``), since the resampling hides it.

Each view is centred on its median and divided by its robust spread (1.4826 x the median absolute deviation): a
calcification is then counted in units of its background's texture and noise, which is what a reader sees, and the
display scaling of the image (film, detector, windowing) drops out.

Output: :meth:`DescriptorNet.predict` returns, per crop, a ``models.descriptors.ClusterDescriptors``: a probability
over the calcification types and one over the distributions of ``models.descriptors`` (the simulator's patterns and
distributions, under the same keys; the manifest lists them too). :class:`CnnDescriptorHead` is what the pipeline
holds: source image, boxes and pixel spacing in, descriptors out.

The network is a five-layer convolutional trunk (strides 2, 1, 2, 2, 2; average and max pooling) shared by both
outputs, then one hidden layer and two linear heads: about 0.1 M parameters and 20-30 MFLOPs a cluster, a few
milliseconds on a CPU. A pretrained EfficientNet-Lite0 trunk was the alternative; on this project's 2-core CPU it
trained 5 times slower (``docs/experiments/descriptor-head.md``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.descriptors import CALCIFICATION_TYPES, DISTRIBUTIONS, ClusterDescriptors
from models.manifest_config import ManifestConfig
from models.preprocess import resize_area

ARCHITECTURE = "descriptors-cnn"
#: the smallest robust spread a view is divided by (a flat, noise-free view would otherwise blow up)
MIN_SPREAD = 1e-3
#: normalised values are clipped here: a calcification stands out by tens of spreads, nothing needs more
CLIP = 30.0


@dataclass(frozen=True)
class DescriptorHeadConfig(ManifestConfig):
    """The descriptor head's vocabulary, input geometry and network widths (stored in its manifest)."""

    manifest_name = "descriptor head"

    patterns: tuple[str, ...] = CALCIFICATION_TYPES
    distributions: tuple[str, ...] = DISTRIBUTIONS
    spacing_mm: float = 0.1
    size: int = 96
    context_margin: float = 0.15
    widths: tuple[int, ...] = (16, 32, 48, 64, 96)
    hidden: int = 128
    dropout: float = 0.2

    def __post_init__(self) -> None:
        if tuple(self.patterns) != CALCIFICATION_TYPES or tuple(self.distributions) != DISTRIBUTIONS:
            raise ValueError(f"a descriptor head predicts the types {CALCIFICATION_TYPES} and distributions "
                             f"{DISTRIBUTIONS} of models.descriptors, in that order; got {self.patterns} and "
                             f"{self.distributions}")
        if self.size < 32 or self.spacing_mm <= 0 or self.context_margin < 0 or len(self.widths) != 5:
            raise ValueError("size >= 32, spacing_mm > 0, context_margin >= 0 and five widths are required")

    @property
    def architecture(self) -> str:
        return ARCHITECTURE

    @property
    def detail_mm(self) -> float:
        """The detail view's field of view (mm): ``size`` pixels at ``spacing_mm``."""
        return self.size * self.spacing_mm


@dataclass(frozen=True)
class ClusterCrop:
    """The head's input for one cluster: ``pixels`` (2, size, size) float32, detail and context views, normalised;
    ``context_mm`` the context view's field of view in mm."""

    pixels: np.ndarray
    context_mm: float


def _square(image: np.ndarray, cx: float, cy: float, side_px: float, size: int) -> np.ndarray:
    """The ``side_px`` square centred at (cx, cy), edge-padded where it leaves the image, area-resampled to ``size``."""
    h, w = image.shape
    n = max(1, int(round(side_px)))
    x0, y0 = int(math.floor(cx - n / 2 + 0.5)), int(math.floor(cy - n / 2 + 0.5))
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + n, w), min(y0 + n, h)
    if cx1 <= cx0 or cy1 <= cy0:  # the square lies wholly outside: the nearest edge pixel stands in
        cx0, cy0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
        cx1, cy1 = cx0 + 1, cy0 + 1
    region = image[cy0:cy1, cx0:cx1]
    pads = ((cy0 - y0, y0 + n - cy1), (cx0 - x0, x0 + n - cx1))
    if any(p for pair in pads for p in pair):
        region = np.pad(region, tuple((max(a, 0), max(b, 0)) for a, b in pads), mode="edge")
    return resize_area(region, (size, size))


def _normalise(view: np.ndarray) -> np.ndarray:
    median = float(np.median(view))
    spread = max(1.4826 * float(np.median(np.abs(view - median))), MIN_SPREAD)
    return np.clip((view - median) / spread, -CLIP, CLIP).astype(np.float32)


def crop_cluster(image: np.ndarray, spacing_mm: float, box: Sequence[float],
                 config: DescriptorHeadConfig) -> ClusterCrop:
    """The head's input for the cluster in ``box`` (x0, y0, x1, y1, pixels of ``image``, whose pixels are
    ``spacing_mm`` wide): see the module docstring."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"crop_cluster expects a non-empty 2-D image, got shape {image.shape}")
    if spacing_mm <= 0:
        raise ValueError(f"pixel spacing must be positive, got {spacing_mm}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"a box needs x1 > x0 and y1 > y0, got {tuple(box)}")
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    detail_mm = config.detail_mm
    context_mm = max(detail_mm, (1 + 2 * config.context_margin) * max(x1 - x0, y1 - y0) * spacing_mm)
    detail = _square(image, cx, cy, detail_mm / spacing_mm, config.size)
    context = _square(image, cx, cy, context_mm / spacing_mm, config.size)
    return ClusterCrop(np.stack([_normalise(detail), _normalise(context)]), float(context_mm))


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DescriptorNet(nn.Module):
    """The network: ``forward(pixels (N, 2, S, S), context_mm (N,))`` -> (pattern logits, distribution logits)."""

    def __init__(self, config: DescriptorHeadConfig) -> None:
        super().__init__()
        self.mccad_config = config
        w = config.widths
        self.trunk = nn.Sequential(_block(2, w[0], 2), _block(w[0], w[1], 1), _block(w[1], w[2], 2),
                                   _block(w[2], w[3], 2), _block(w[3], w[4], 2))
        self.hidden = nn.Sequential(nn.Linear(2 * w[4] + 1, config.hidden), nn.ReLU(inplace=True),
                                    nn.Dropout(config.dropout))
        self.pattern = nn.Linear(config.hidden, len(config.patterns))
        self.distribution = nn.Linear(config.hidden, len(config.distributions))

    def forward(self, pixels: torch.Tensor, context_mm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(pixels)
        scale = torch.log(context_mm.to(features.dtype) / self.mccad_config.detail_mm)[:, None]
        pooled = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3)), scale], dim=1)
        hidden = self.hidden(pooled)
        return self.pattern(hidden), self.distribution(hidden)

    @torch.no_grad()
    def probabilities(self, pixels: np.ndarray, context_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Softmax probabilities (N x types, N x distributions) for stacked crops (eval mode is set)."""
        self.eval()
        device = next(self.parameters()).device
        x = torch.as_tensor(np.asarray(pixels, dtype=np.float32), device=device)
        scale = torch.as_tensor(np.asarray(context_mm, dtype=np.float32), device=device)
        pattern_logits, distribution_logits = self(x, scale)
        return (torch.softmax(pattern_logits.float(), dim=1).cpu().numpy(),
                torch.softmax(distribution_logits.float(), dim=1).cpu().numpy())

    def predict(self, crops: Sequence[ClusterCrop]) -> list[ClusterDescriptors]:
        """One ``ClusterDescriptors`` per crop, in order (an empty list gives an empty list)."""
        if not crops:
            return []
        types, distributions = self.probabilities(np.stack([c.pixels for c in crops]),
                                                  np.array([c.context_mm for c in crops]))
        cfg = self.mccad_config
        return [ClusterDescriptors.from_probabilities(dict(zip(cfg.patterns, t.tolist(), strict=True)),
                                                      dict(zip(cfg.distributions, d.tolist(), strict=True)))
                for t, d in zip(types, distributions, strict=True)]


def build_descriptor_net(config: DescriptorHeadConfig) -> DescriptorNet:
    """A freshly initialised network for ``config`` (the registry loads the weights into it)."""
    return DescriptorNet(config)


class CnnDescriptorHead:
    """The pipeline's descriptor head (``models.descriptors.DescriptorHead``): crops each box of a source image as
    the network was trained (:func:`crop_cluster`) and reads its descriptors. ``manifest`` names the weights."""

    def __init__(self, net: DescriptorNet, manifest=None) -> None:
        self.net = net.eval()
        self.config: DescriptorHeadConfig = net.mccad_config
        self.manifest = manifest

    def predict(self, pixels: np.ndarray, boxes: np.ndarray, spacing_mm: float) -> list[ClusterDescriptors]:
        """One ``ClusterDescriptors`` per row of ``boxes`` (x0, y0, x1, y1 in ``pixels``), in order."""
        crops = [crop_cluster(pixels, spacing_mm, box, self.config) for box in np.asarray(boxes).reshape(-1, 4)]
        return self.net.predict(crops)
