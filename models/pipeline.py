"""The analysis of one study, from decoded mammograms to a ``StudyResult``.

Order of work follows the paper: standardise (2.4) -> FPNNet detection (2.5) as ``models.detect`` runs it (whole
image, or tile by tile for a crops-trained detector; the breast gate when the detector's manifest has one; the
operating point) -> lesion and image findings from boxes (2.6, ``models.findings``) -> SPPNet whole-image
baseline -> pathotype and ER heads on malignant patches -> BI-RADS descriptors of every box and P(malignant) from
them when the pipeline has a descriptor head (``models.descriptors``) -> breast fusion of CC + MLO (2.7) -> exam
verdict -> explanation heatmaps. Everything returned is in the source images' own pixel coordinates.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.breast_gate import BreastGate
from models.classifier import ClassifierConfig, classify
from models.descriptors import ClusterDescriptors, DescriptorHead, MalignancyMapping
from models.detect import DetectorRunner
from models.detector import DetectorConfig
from models.explain import detector_cam
from models.preprocess import StandardiseConfig, StandardisedImage, standardise
from models.registry import ModelManifest, bundle_descriptor_head, load_classifier, load_detector
from models.onnx_runtime import detection_model, release_memory
from models.tiling import TilingSpec, native_scale
from models.findings import breast_results, exam_result, image_decision, lesions_of_image
from models.results import NOT_FOR_CLINICAL_USE, ImageResult, ModelInfo, StudyResult
from models.types import MammogramImage

log = logging.getLogger(__name__)

#: Sub-folders of a model bundle and the role each plays. ``detector`` is required, the others optional.
BUNDLE_ROLES = ("detector", "sppnet", "pathotype_incl", "pathotype_excl", "er")


class BundleError(RuntimeError):
    """A model bundle folder that cannot serve the pipeline (missing detector, unreadable manifest)."""


@dataclass
class Analysis:
    """What the pipeline hands to the writers: the typed result plus per-image heatmaps (original pixel grid)."""

    result: StudyResult
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)


#: Grad-CAM of a tiled detector runs on the whole image at half its native scale: a quarter of the cost of native
#: scale (on the CPU that was 17 s per 0.1 mm mammogram, more than detection), and CAM maps are coarse (stride 4-32)
TILED_CAM_SCALE = 0.5
#: ... and on at most this many pixels: the whole-image pass costs more per pixel as the image grows (cache and memory
#: traffic); a larger image is explained at a lower scale, which a map this coarse affords. A 0.1 mm mammogram
#: (2048 x 1300) stays at ``TILED_CAM_SCALE``.
TILED_CAM_MAX_PIXELS = 1_500_000


def tiled_cam_scale(height: int, width: int) -> float:
    """The scale a tiled detector's Grad-CAM runs at for a ``height`` x ``width`` image: ``TILED_CAM_SCALE``, lowered
    so that the explained image has at most ``TILED_CAM_MAX_PIXELS`` pixels (its cost is then bounded)."""
    return min(TILED_CAM_SCALE, (TILED_CAM_MAX_PIXELS / max(1, height * width)) ** 0.5)


#: The Grad-CAM map is handed back on the image's own grid up to this many pixels (a 24 x 30 cm detector at 0.1 mm is
#: 7.2 Mpx), on a coarser grid of the same extent above it, which ``CoordinateMap.heatmap_to_original`` resamples
#: straight onto the original pixels: the map's detail is that of the feature grid, and input-sized float copies of a
#: 64 Mpx image cost 256 MiB each.
CAM_GRID_MAX_PIXELS = 8_000_000


def cam_grid(height: int, width: int) -> tuple[int, int]:
    """The grid a ``height`` x ``width`` image's Grad-CAM is returned on: the image's own, or scaled down (aspect
    kept) to at most ``CAM_GRID_MAX_PIXELS`` pixels."""
    if height * width <= CAM_GRID_MAX_PIXELS:
        return height, width
    factor = (CAM_GRID_MAX_PIXELS / (height * width)) ** 0.5
    return max(1, int(height * factor)), max(1, int(width * factor))


@dataclass
class _Head:
    model: torch.nn.Module
    config: ClassifierConfig
    manifest: ModelManifest


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise BundleError("device 'cuda' was asked for but no CUDA GPU is visible to this process")
    return torch.device(device)


def _standardise_config(manifest: ModelManifest) -> StandardiseConfig:
    spec = dict(manifest.input_spec.get("standardise", {}))
    return StandardiseConfig(**spec)


def _model_info(role: str, manifest: ModelManifest) -> ModelInfo:
    return ModelInfo(role=role, name=manifest.name, version=manifest.version, sha256=manifest.sha256,
                     synthetic_only=manifest.synthetic_only)


class Pipeline:
    """Holds the loaded models of one bundle; ``analyze`` is safe to call repeatedly (no state between studies)."""

    def __init__(self, detector: torch.nn.Module, detector_config: DetectorConfig, detector_manifest: ModelManifest,
                 *, sppnet: _Head | None = None, patch_heads: dict[str, _Head] | None = None,
                 device: torch.device | str = "cpu", explain: bool = True,
                 tiling: TilingSpec | None = None, breast_gate: BreastGate | None = None,
                 runtime: str = "eager", descriptor_head: DescriptorHead | None = None,
                 malignancy_mapping: MalignancyMapping | None = None) -> None:
        self.device = torch.device(device)
        #: BI-RADS descriptors of every box, and from them the reported P(malignant) (``models.descriptors``)
        self.descriptor_head = descriptor_head
        self.malignancy_mapping = malignancy_mapping or (MalignancyMapping.load() if descriptor_head else None)
        self.detector = detector.to(self.device).eval()
        # detection may run the backbone in ONNX Runtime (models.onnx_runtime); explanations keep the eager model
        self.detection_model, self.detector_runtime = detection_model(self.detector, runtime, self.device)
        self.detector_config = detector_config
        self.detector_manifest = detector_manifest
        self.standardise_config = _standardise_config(detector_manifest)
        self.sppnet = sppnet
        self.patch_heads = dict(patch_heads or {})
        self.explain = explain
        runner = DetectorRunner.from_manifest(self.detection_model, detector_config, detector_manifest)
        #: detection as the product runs it (tiling, breast gate, operating point): ``models.detect``; ``tiling`` and
        #: ``breast_gate`` given here replace the manifest's
        self.runner = replace(runner, tiling=tiling if tiling is not None else runner.tiling,
                              breast_gate=breast_gate if breast_gate is not None else runner.breast_gate)
        for head in [sppnet, *self.patch_heads.values()]:
            if head is not None:
                head.model.to(self.device).eval()

    @property
    def tiling(self) -> TilingSpec | None:
        """How the detector reads a whole image tile by tile (None: at once)."""
        return self.runner.tiling

    @property
    def breast_gate(self) -> BreastGate | None:
        """The gate applied to the detector's boxes (None: no gate)."""
        return self.runner.breast_gate

    # construction --------------------------------------------------------------------------------------------
    @classmethod
    def from_model_dir(cls, model_dir: Path | str, device: str = "auto", *, explain: bool = True,
                       runtime: str = "eager") -> "Pipeline":
        """Load a bundle folder: ``detector/`` is required; ``sppnet/``, ``pathotype_incl/``, ``pathotype_excl/``,
        ``er/`` and ``descriptors/`` (the descriptor head) are used when present. Every folder is hash-checked by the
        registry. ``runtime`` is the detector's (``models.onnx_runtime.RUNTIMES``; the CLI and workers pass
        ``Settings.detector_runtime``)."""
        root = Path(model_dir)
        if not (root / "detector" / "manifest.json").is_file():
            raise BundleError(f"{root} is not a model bundle: it has no detector/manifest.json "
                              "(set MCCAD_MODEL_DIR to a folder made by `mccad export` or shipped in models/weights)")
        dev = resolve_device(device)
        detector, det_cfg, det_manifest = load_detector(root / "detector", device=str(dev))
        heads: dict[str, _Head] = {}
        for role in BUNDLE_ROLES[1:]:
            if (root / role / "manifest.json").is_file():
                model, cfg, manifest = load_classifier(root / role, device=str(dev))
                heads[role] = _Head(model, cfg, manifest)
        return cls(detector, det_cfg, det_manifest, sppnet=heads.pop("sppnet", None), patch_heads=heads,
                   device=dev, explain=explain, runtime=runtime,
                   descriptor_head=bundle_descriptor_head(root, device=str(dev)))

    def _cam_scale(self, tensor: torch.Tensor) -> AbstractContextManager:
        """A crops-trained (tiled) detector explains the whole image at :func:`tiled_cam_scale` of its native scale
        (one pass, where detection took many tiles); whole-image models at the size they were trained on."""
        if self.tiling is None:
            return nullcontext()
        height, width = int(tensor.shape[-2]), int(tensor.shape[-1])
        return native_scale(self.detector, height, width, tiled_cam_scale(height, width))

    def model_infos(self) -> list[ModelInfo]:
        infos = [_model_info("detector", self.detector_manifest).model_copy(update={"runtime": self.detector_runtime})]
        if self.sppnet:
            infos.append(_model_info("sppnet", self.sppnet.manifest))
        infos += [_model_info(role, head.manifest) for role, head in sorted(self.patch_heads.items())]
        if self.descriptor_head is not None:
            manifest = getattr(self.descriptor_head, "manifest", None)
            if manifest is not None:
                infos.append(_model_info("descriptors", manifest))
            m = self.malignancy_mapping
            infos.append(ModelInfo(role="descriptor_mapping", name=m.name, version=m.version, sha256=m.sha256))
        return infos

    # analysis --------------------------------------------------------------------------------------------------
    def analyze(self, images: Sequence[MammogramImage]) -> Analysis:
        if not images:
            raise ValueError("a study needs at least one image")
        timings: dict[str, float] = defaultdict(float)
        started = time.perf_counter()

        t = time.perf_counter()
        prepared = [standardise(img.pixels, img.meta.laterality, self.standardise_config, img.meta.pixel_spacing_mm)
                    for img in images]
        tensors = [torch.from_numpy(np.ascontiguousarray(p.pixels))[None].to(self.device) for p in prepared]
        timings["standardise"] += time.perf_counter() - t

        detections = self.runner(tensors, timings=timings)
        release_memory(self.detection_model)  # the arena of the tiles' runs is not needed by the rest of the study

        sppnet_probs: list[float | None] = [None] * len(images)
        if self.sppnet is not None:
            t = time.perf_counter()
            probs = classify(self.sppnet.model, tensors, self.sppnet.config)
            sppnet_probs = [float(p[1]) for p in probs]
            timings["sppnet"] += time.perf_counter() - t

        image_results: list[ImageResult] = []
        heatmaps: dict[str, np.ndarray] = {}
        lesion_counter = 0
        for img, prep, tensor, det, spp in zip(images, prepared, tensors, detections, sppnet_probs, strict=True):
            boxes = prep.cmap.boxes_to_original(det.boxes.astype(np.float64)) if len(det.boxes) else np.zeros((0, 4))
            boxes = _clip_boxes(boxes, img.meta.rows, img.meta.columns)
            t = time.perf_counter()
            patch_probs = self._patch_probabilities(prep, det)
            timings["patch_heads"] += time.perf_counter() - t
            descriptors = None
            if self.descriptor_head is not None:
                t = time.perf_counter()
                descriptors = self._descriptors(img, boxes)
                timings["descriptors"] += time.perf_counter() - t
            lesions = lesions_of_image(lesion_counter + 1, boxes, [int(v) for v in det.labels],
                                       [float(v) for v in det.scores],
                                       None if det.malignancy is None else [float(v) for v in det.malignancy],
                                       patch_probs, descriptors, self.malignancy_mapping)
            lesion_counter += len(lesions)
            verdict = image_decision(lesions)
            heatmap_name = None
            if self.explain:
                t = time.perf_counter()
                grid = cam_grid(int(tensor.shape[-2]), int(tensor.shape[-1]))
                with torch.enable_grad(), self._cam_scale(tensor):
                    cam = detector_cam(self.detector, tensor, target_label=2, out_hw=grid)
                heatmaps[img.meta.sop_instance_uid] = prep.cmap.heatmap_to_original(
                    cam, coarse=grid != prep.cmap.input_shape)
                heatmap_name = f"heatmap-{_safe_name(img.meta.sop_instance_uid)}.png"
                timings["explain"] += time.perf_counter() - t
            image_results.append(ImageResult(
                sop_instance_uid=img.meta.sop_instance_uid, sop_class_uid=img.meta.sop_class_uid,
                series_instance_uid=img.meta.series_instance_uid, study_instance_uid=img.meta.study_instance_uid,
                frame_of_reference_uid=img.meta.frame_of_reference_uid, laterality=img.meta.laterality,
                view=img.meta.view, rows=img.meta.rows, columns=img.meta.columns, lesions=lesions,
                label=verdict.label, malignancy_probability=verdict.malignancy_probability,
                probability=verdict.probability,
                sppnet_malignancy_probability=None if spp is None else _unit(spp), heatmap=heatmap_name))

        breasts = breast_results(image_results)
        infos = self.model_infos()
        warnings = [NOT_FOR_CLINICAL_USE] if any(m.synthetic_only for m in infos) else []
        timings["total"] = time.perf_counter() - started
        result = StudyResult(
            study_instance_uid=images[0].meta.study_instance_uid, exam_key=images[0].meta.exam_key,
            images=image_results, breasts=breasts,
            exam=exam_result(breasts),
            models=infos, timings_s={k: round(v, 4) for k, v in timings.items()}, warnings=warnings)
        return Analysis(result=result, heatmaps=heatmaps)

    def _descriptors(self, img: MammogramImage, boxes: np.ndarray) -> list[ClusterDescriptors]:
        """The descriptor head's reading of every box (source pixels) of one image, at the image's own spacing (the
        standardisation's assumed spacing when the file states none)."""
        if not len(boxes):
            return []
        spacing = img.meta.pixel_spacing_mm
        mm = float(np.mean(spacing)) if spacing else float(self.standardise_config.assumed_spacing_mm)
        return list(self.descriptor_head.predict(img.pixels, boxes, mm))

    def _patch_probabilities(self, prep: StandardisedImage, det) -> dict[str, list[float | None]]:
        """Run every patch head on every detection (cheap) and keep values for malignant ones only, later."""
        if not self.patch_heads or len(det.boxes) == 0:
            return {}
        out: dict[str, list[float | None]] = {}
        for role, head in self.patch_heads.items():
            patches = [crop_patch(prep.pixels, box, head.config.patch_size) for box in det.boxes]
            probs = classify(head.model, [torch.from_numpy(p)[None] for p in patches], head.config,
                             size=head.config.patch_size)
            out[role] = [_unit(float(p[1])) for p in probs]
        return out


def crop_patch(pixels: np.ndarray, box: np.ndarray, size: int, margin: float = 0.25) -> np.ndarray:
    """A square patch centred on ``box`` (model-input pixels), enlarged by ``margin`` on each side, resized to
    ``size``. Square so that linear-branching clusters keep their shape; zero-padded at image borders."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    side = max(side, 8.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    n = int(round(side))
    out = np.zeros((n, n), dtype=np.float32)
    h, w = pixels.shape
    sx0, sy0, sx1, sy1 = max(left, 0), max(top, 0), min(left + n, w), min(top + n, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = pixels[sy0:sy1, sx0:sx1]
    resized = F.interpolate(torch.from_numpy(out)[None, None], size=(size, size), mode="bilinear",
                            align_corners=False)
    return resized[0, 0].numpy()


def _clip_boxes(boxes: np.ndarray, rows: int, cols: int) -> np.ndarray:
    out = np.asarray(boxes, dtype=np.float64).copy()
    if out.size:
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, cols)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, rows)
    return out


def _unit(value: float) -> float:
    return float(min(1.0, max(0.0, value)))


def _safe_name(uid: str) -> str:
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in uid)[:80]
