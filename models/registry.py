"""Models are data: a model is a folder with a safetensors weights file and ``manifest.json``.

The manifest says what the weights are (architecture, role, classes), how to feed them (``input_spec``: the
standardisation and network configs), how to read their output (``thresholds``), where they came from
(``training_data``, ``synthetic_only``, ``metrics``) and the SHA-256 of the weights file. Loading checks all of it
before a single weight is used: a wrong folder, a changed file or weights of another network fail with an
``models.errors.RegistryError`` that names the file. Nothing is ever downloaded.

Each setting appears once (manifest format ``FORMAT_VERSION``): a detector's operating point and post-processing
(``DETECTOR_THRESHOLD_KEYS``) live in ``thresholds`` only, its network config in ``input_spec["detector"]``, how it
reads whole images in ``input_spec["tiling"]`` (``models.tiling.TilingSpec``) and its breast gate in
``input_spec["breast_gate"]`` (``models.breast_gate.BreastGate``). :func:`load_manifest` is the one reader: every
block is checked by the class it configures, so an unknown key, a setting given twice, a manifest without a format
version or of a newer format fails there, with ``models.errors.ManifestInvalid``, for every caller alike (pipeline,
evaluation, adaptation, benchmark, re-issue). The one model without weights is
the training-free spot detector (``spots-dog``, ``models.spot_detector``): its folder is a manifest alone.

Weights are stored as float16 (the repository ships them; half the size of float32) and loaded into float32 networks.
BatchNorm's ``num_batches_tracked`` counters are not stored: inference does not use them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from models.classifier import ClassifierConfig, SPPNet, build_classifier
from models.classifier import ARCHITECTURE as CLASSIFIER_ARCHITECTURE
from models.descriptor_head import ARCHITECTURE as DESCRIPTORS_ARCHITECTURE
from models.descriptor_head import CnnDescriptorHead, DescriptorHeadConfig, DescriptorNet, build_descriptor_net
from models.detector import DetectorConfig, apply_thresholds, build_detector
from models.detector import ARCHITECTURE as DETECTOR_ARCHITECTURE
from models.breast_gate import BreastGate
from models.errors import ArchitectureMismatch, ManifestInvalid, ModelNotFound, WeightsNotFound, WeightsTampered
from models.preprocess import StandardiseConfig
from models.spot_detector import ARCHITECTURE as SPOTS_ARCHITECTURE
from models.spot_detector import SpotDetectorConfig
from models.tiling import TilingSpec

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
Architecture = Literal["fpnnet-resnet50", "fpnnet-efficientnet_lite0", "fpnnet-efficientnet_lite2",
                       "sppnet-resnet18", "sppnet-efficientnet_lite0", "sppnet-efficientnet_lite2", "spots-dog",
                       "descriptors-cnn"]
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# Detector thresholds an operator may tune in manifest.json without retraining (the weights hash is unaffected).
DETECTOR_THRESHOLD_KEYS = ("score_thresh", "nms_thresh", "detections_per_img", "cross_class_iou")
#: the manifest format this version writes and reads (2: each setting once; 1, without the field: a detector's
#: thresholds in both ``thresholds`` and ``input_spec["detector"]``)
FORMAT_VERSION = 2
#: the ``input_spec`` blocks a model of each kind may hold (by architecture prefix)
INPUT_BLOCKS = {"fpnnet": ("standardise", "detector", "tiling", "breast_gate"), "sppnet": ("standardise", "classifier"),
                "descriptors": ("descriptors",)}


class ModelManifest(BaseModel):
    """What a model folder holds; written next to the weights as ``manifest.json``."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format_version: int = FORMAT_VERSION
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    architecture: Architecture
    role: str = Field(description="detector, sppnet, pathotype_incl, pathotype_excl or er")
    classes: list[str] = Field(min_length=2)
    input_spec: dict[str, Any] = Field(
        default_factory=dict,
        description="'standardise': preprocessing config; 'detector' or 'classifier': the network config as a dict",
    )
    thresholds: dict[str, float | int] = {}
    sha256: str = ""
    weights_file: str = "model.safetensors"
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    training_data: str = ""
    synthetic_only: bool = False
    metrics: dict[str, Any] = {}
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks (weights are tens of megabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _storable_state(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    state = {}
    for key, tensor in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point():
            converted = tensor.to(dtype)
            if bool(torch.isfinite(tensor).all()) and not bool(torch.isfinite(converted).all()):
                raise ValueError(
                    f"tensor {key} overflows {dtype} (largest magnitude {float(tensor.abs().max()):.3g}); "
                    f"save with dtype=torch.bfloat16 or torch.float32")
            tensor = converted
        state[key] = tensor.contiguous().clone()
    return state


def _architecture_of(model: nn.Module) -> str:
    """``<network>-<backbone>`` from the config the model was built with (the paper's defaults without one)."""
    config = getattr(model, "mccad_config", None)
    if config is not None:
        return config.architecture
    return CLASSIFIER_ARCHITECTURE if isinstance(model, SPPNet) else DETECTOR_ARCHITECTURE


def save_model(folder: Path, model: nn.Module, manifest: ModelManifest,
               dtype: torch.dtype = torch.float16) -> ModelManifest:
    """Write ``model.safetensors`` (in ``dtype``) and ``manifest.json`` into ``folder``; returns the manifest as
    written.

    The sha256 and dtype are filled in here. When the model was built by ``build_detector`` / ``build_classifier``
    and the manifest's ``input_spec`` lacks the network config, it is added, so the folder is self-describing.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if _architecture_of(model) != manifest.architecture:
        raise ArchitectureMismatch(
            folder, f"the manifest says {manifest.architecture} but the model is {_architecture_of(model)}")
    dtype_name = {v: k for k, v in DTYPES.items()}.get(dtype)
    if dtype_name is None:
        raise ValueError(f"unsupported weights dtype {dtype}; use one of {sorted(DTYPES)}")
    input_spec = dict(manifest.input_spec)
    config = getattr(model, "mccad_config", None)
    key = "classifier" if isinstance(model, SPPNet) else "detector"
    if isinstance(model, DescriptorNet):
        key = "descriptors"
    if key not in input_spec and config is not None:
        input_spec[key] = config.to_dict()
    thresholds = dict(manifest.thresholds)
    if key == "detector" and isinstance(input_spec.get(key), dict):  # the thresholds move to ``thresholds``
        network = dict(input_spec[key])
        for name in DETECTOR_THRESHOLD_KEYS:
            value = network.pop(name, None)
            if value is not None:
                thresholds.setdefault(name, value)
        input_spec[key] = network
    check_manifest(folder, manifest.model_copy(update={"input_spec": input_spec, "thresholds": thresholds}))
    weights = folder / manifest.weights_file
    tmp = folder / f".{manifest.weights_file}.tmp"
    save_file(_storable_state(model, dtype), str(tmp), metadata={"name": manifest.name, "version": manifest.version})
    os.replace(tmp, weights)
    written = manifest.model_copy(update={"sha256": sha256_of(weights), "dtype": dtype_name, "input_spec": input_spec,
                                          "thresholds": thresholds})
    write_manifest(folder, written)
    log.info("saved model %s %s to %s (sha256 %s)", written.name, written.version, folder, written.sha256[:12])
    return written


def write_manifest(folder: Path, manifest: ModelManifest) -> None:
    """Write ``folder/manifest.json`` atomically (a re-issued model's, whose weights file is already in place),
    after the checks :func:`load_manifest` makes, so that no writer leaves a manifest the reader refuses."""
    check_manifest(Path(folder), manifest)
    _atomic_write(Path(folder) / MANIFEST, (manifest.model_dump_json(indent=2) + "\n").encode())


def load_manifest(folder: Path) -> ModelManifest:
    """Read ``folder/manifest.json`` and check every block of it (module docstring).

    Raises ``ModelNotFound`` when the folder or the file is missing, ``ManifestInvalid`` (naming the file and the
    setting) when it is not JSON, has no ``format_version`` or a newer one than ``FORMAT_VERSION``, or holds an
    unknown key, a setting twice or a value its class refuses."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ModelNotFound(folder, "the folder does not exist")
    if not path.is_file():
        raise ModelNotFound(folder, f"{MANIFEST} is missing")
    try:
        data = json.loads(path.read_bytes())
    except ValueError as exc:
        raise ManifestInvalid(path, f"it is not JSON ({exc})") from exc
    version = data.get("format_version") if isinstance(data, dict) else None
    if version is None:
        raise ManifestInvalid(path, f"it has no format_version: it is of format 1, written before {FORMAT_VERSION} "
                                    "(a detector's thresholds in both 'thresholds' and 'input_spec.detector'); "
                                    "keep them in 'thresholds' only and add \"format_version\": 2")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ManifestInvalid(path, f"its format_version is {version!r}, newer than this mccad reads "
                                    f"({FORMAT_VERSION}): update mccad to use this model")
    try:
        manifest = ModelManifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise ManifestInvalid(path, problems) from exc
    check_manifest(folder, manifest)
    return manifest


def check_manifest(folder: Path, manifest: ModelManifest) -> None:
    """The checks of :func:`load_manifest` past its JSON schema: for a detector or classifier, ``input_spec`` holds
    only its blocks, each valid for the class it configures (``StandardiseConfig``, ``DetectorConfig`` with the
    thresholds, ``TilingSpec``, ``BreastGate``, ``ClassifierConfig``), and a setting of ``thresholds`` is not also in
    ``input_spec["detector"]``. ``ManifestInvalid`` names the setting."""
    path = Path(folder) / MANIFEST
    kind = manifest.architecture.split("-")[0]
    spec = manifest.input_spec
    if kind in INPUT_BLOCKS:
        unknown = sorted(set(spec) - set(INPUT_BLOCKS[kind]))
        if unknown:
            raise ManifestInvalid(path, f"input_spec holds {unknown}, which a {kind} model does not read; it reads "
                                        f"{', '.join(INPUT_BLOCKS[kind])}")
    if kind == "fpnnet":
        twice = sorted(set(DETECTOR_THRESHOLD_KEYS) & set(spec.get("detector", {})))
        if twice:
            raise ManifestInvalid(path, f"input_spec.detector holds {twice}, which belong in thresholds only")
        unknown = sorted(set(manifest.thresholds) - set(DETECTOR_THRESHOLD_KEYS))
        if unknown:
            raise ManifestInvalid(path, f"thresholds holds {unknown}; a detector's are "
                                        f"{', '.join(DETECTOR_THRESHOLD_KEYS)}")
    elif kind in ("sppnet", "descriptors") and manifest.thresholds:
        raise ManifestInvalid(path, f"thresholds of a classifier are empty, not {sorted(manifest.thresholds)}")
    blocks: dict[str, Any] = {
        "standardise": lambda v: StandardiseConfig(**v),
        "detector": lambda v: DetectorConfig.from_dict({**v, **manifest.thresholds}),
        "tiling": lambda v: TilingSpec(**v),
        "breast_gate": lambda v: BreastGate(**v),
        "classifier": ClassifierConfig.from_dict,
        "descriptors": DescriptorHeadConfig.from_dict,
    }
    for block, check in blocks.items():
        if block in spec and (kind in INPUT_BLOCKS or block == "standardise"):
            try:
                check(dict(spec[block]))
            except (TypeError, ValueError) as exc:
                where = "input_spec.detector with thresholds" if block == "detector" else f"input_spec.{block}"
                raise ManifestInvalid(path, f"{where} is invalid ({exc})") from exc


def verify_weights(folder: Path, manifest: ModelManifest) -> Path:
    """Check that the weights file exists and matches the manifest's sha256; returns its path."""
    folder = Path(folder)
    if Path(manifest.weights_file).name != manifest.weights_file:
        raise ModelNotFound(folder, f"weights_file {manifest.weights_file!r} must be a plain file name")
    path = folder / manifest.weights_file
    if not path.is_file():
        raise WeightsNotFound(path, f"named by {folder / MANIFEST}")
    actual = sha256_of(path)
    if actual != manifest.sha256.lower():
        raise WeightsTampered(path, manifest.sha256 or "(none recorded)", actual)
    return path


def _load_state(folder: Path, manifest: ModelManifest, expected_architecture: str, model_factory: Any) -> nn.Module:
    if manifest.architecture != expected_architecture:
        raise ArchitectureMismatch(
            folder, f"the manifest says {manifest.architecture}, this role needs {expected_architecture}")
    path = verify_weights(folder, manifest)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ArchitectureMismatch(folder, f"{path.name} is not a readable safetensors file ({exc})") from exc
    model = model_factory()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    found = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if missing or unexpected or wrong:
        detail = ", ".join(
            part for part in (
                f"missing {len(missing)} tensors (e.g. {missing[:3]})" if missing else "",
                f"{len(unexpected)} unknown tensors (e.g. {unexpected[:3]})" if unexpected else "",
                ("shape differs for " + ", ".join(f"{k} {found[k]} vs {expected[k]}" for k in wrong[:3])
                 if wrong else ""),
            ) if part
        )
        raise ArchitectureMismatch(folder, f"weights do not fit {expected_architecture} as configured: {detail}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=False)
    return model


def load_detector(folder: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, DetectorConfig, ModelManifest]:
    """Load and verify an FPNNet folder; returns the float32 model in eval mode, its config and manifest.

    The config is ``input_spec["detector"]`` with ``thresholds`` (score_thresh, nms_thresh, detections_per_img,
    cross_class_iou), which an operator may tune without touching the weights.
    """
    folder = Path(folder)
    manifest = load_manifest(folder)
    config = detector_config(manifest)
    model = _load_state(
        folder, manifest, config.architecture, lambda: build_detector(config, None, frozen_batchnorm=True))
    apply_thresholds(model, config)  # type: ignore[arg-type]
    log.info("loaded detector %s %s from %s", manifest.name, manifest.version, folder)
    return model.to(device).eval(), config, manifest


def detector_config(manifest: ModelManifest) -> DetectorConfig:
    """A detector manifest's ``DetectorConfig``: its ``input_spec["detector"]`` with its ``thresholds``."""
    thresholds = {k: int(v) if k == "detections_per_img" else v for k, v in manifest.thresholds.items()}
    return DetectorConfig.from_dict({**manifest.input_spec.get("detector", {}), **thresholds})


def load_classifier(folder: Path, device: str | torch.device = "cpu") -> tuple[SPPNet, ClassifierConfig, ModelManifest]:
    """Load and verify an SPPNet folder (whole-image, pathotype or ER head); float32, eval mode."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    config = _config(folder, manifest, "classifier", ClassifierConfig)
    if len(manifest.classes) != config.num_classes:
        raise ArchitectureMismatch(
            folder, f"manifest lists {len(manifest.classes)} classes but the network has {config.num_classes}")
    model = _load_state(folder, manifest, config.architecture, lambda: build_classifier(config))
    log.info("loaded classifier %s %s (%s) from %s", manifest.name, manifest.version, manifest.role, folder)
    return model.to(device).eval(), config, manifest  # type: ignore[return-value]


def load_descriptor_head(folder: Path, device: str | torch.device = "cpu") -> CnnDescriptorHead:
    """Load and verify a descriptor head folder (``models.descriptor_head``; a bundle's ``descriptors/`` part): its
    ``input_spec["descriptors"]`` is the ``DescriptorHeadConfig`` and its classes the types, then the distributions,
    of ``models.descriptors``. Returns the float32 head in eval mode, its manifest attached."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    config = _config(folder, manifest, "descriptors", DescriptorHeadConfig)
    if manifest.classes != [*config.patterns, *config.distributions]:
        raise ArchitectureMismatch(folder, f"manifest classes {manifest.classes} are not the head's types and "
                                           f"distributions {[*config.patterns, *config.distributions]}")
    net = _load_state(folder, manifest, DESCRIPTORS_ARCHITECTURE, lambda: build_descriptor_net(config))
    log.info("loaded descriptor head %s %s from %s", manifest.name, manifest.version, folder)
    return CnnDescriptorHead(net.to(device).eval(), manifest)


#: the sub-folder of a model bundle that holds its descriptor head (optional)
DESCRIPTOR_PART = "descriptors"


def bundle_descriptor_head(bundle: Path, device: str | torch.device = "cpu") -> CnnDescriptorHead | None:
    """The descriptor head of a model bundle (its ``descriptors/`` folder, verified like any model folder), or None
    when the bundle has none: a bundle without it reports clusters without BI-RADS descriptors."""
    folder = Path(bundle) / DESCRIPTOR_PART
    if not (folder / MANIFEST).is_file():
        return None
    return load_descriptor_head(folder, device)


def load_spot_detector(folder: Path) -> tuple[SpotDetectorConfig, ModelManifest]:
    """Load a training-free spot detector folder (``models.spot_detector``): a manifest and no weights.

    Its parameters are ``input_spec["spots"]`` (``SpotDetectorConfig``: an unknown key is an error, a key left out
    takes its documented default); its operating point, ``thresholds["score_thresh"]``, must be given and is the only
    threshold. Its role is ``detector``. A folder whose manifest names a weights hash or holds a weights file is
    refused, since nothing would check or use them.
    """
    folder = Path(folder)
    manifest = load_manifest(folder)
    if manifest.architecture != SPOTS_ARCHITECTURE:
        raise ArchitectureMismatch(folder, f"the manifest says {manifest.architecture}, a spot detector is "
                                           f"{SPOTS_ARCHITECTURE}")
    if manifest.sha256 or (folder / manifest.weights_file).exists():
        raise ArchitectureMismatch(folder, f"{SPOTS_ARCHITECTURE} has no weights: remove the sha256 from {MANIFEST} "
                                           f"and {manifest.weights_file} from the folder")
    unknown = sorted(set(manifest.input_spec) - {"spots"})
    if unknown:
        raise ArchitectureMismatch(folder, f"input_spec of a {SPOTS_ARCHITECTURE} model holds only 'spots', not "
                                           f"{unknown}")
    if manifest.role != "detector":
        raise ArchitectureMismatch(folder, f"a {SPOTS_ARCHITECTURE} model's role is detector, not {manifest.role}")
    if set(manifest.thresholds) != {"score_thresh"}:
        raise ArchitectureMismatch(folder, f"thresholds of a {SPOTS_ARCHITECTURE} model hold 'score_thresh' and "
                                           f"nothing else, not {sorted(manifest.thresholds)}")
    config = _config(folder, manifest, "spots", SpotDetectorConfig)
    log.info("loaded spot detector %s %s from %s", manifest.name, manifest.version, folder)
    return config, manifest


def _config(folder: Path, manifest: ModelManifest, key: str, cls: Any) -> Any:
    try:
        return cls.from_dict(manifest.input_spec.get(key, {}))
    except (TypeError, ValueError) as exc:
        raise ArchitectureMismatch(folder, f"input_spec.{key} in {MANIFEST} is invalid ({exc})") from exc
