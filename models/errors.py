"""Errors of the model registry and of weight loading.

Every message says which file is involved and what an operator can do about it, because the person who reads it is
usually a hospital IT administrator who installed a model bundle, not the person who trained it.
"""
from __future__ import annotations

from pathlib import Path


class RegistryError(Exception):
    """Base class: a model could not be loaded as shipped. Nothing is ever downloaded to repair it."""


class ModelNotFound(RegistryError):
    """The model folder or its ``manifest.json`` does not exist, or the manifest cannot be read."""

    def __init__(self, folder: Path, detail: str) -> None:
        self.folder = Path(folder)
        super().__init__(
            f"no usable model in {self.folder}: {detail}. Point MCCAD_MODEL_DIR at a model folder that holds "
            f"manifest.json and its weights file (a folder written by 'mccad train' export or shipped with mccad)."
        )


class ManifestInvalid(RegistryError):
    """A ``manifest.json`` exists but cannot be used as written: not JSON, of another format version, or holding an
    unknown key, a setting twice or a value the class it configures refuses."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = Path(path)
        super().__init__(
            f"{self.path} cannot be used: {detail}. A manifest is read strictly, so that a typo or a setting this "
            f"version does not know never changes what the model does unnoticed."
        )


class WeightsNotFound(RegistryError):
    """A weights file named by a manifest or by a ``backbone_weights`` argument is missing."""

    def __init__(self, path: Path | str, detail: str = "") -> None:
        self.path = Path(path)
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"weights file {self.path} not found{extra}. mccad never downloads weights: copy the file there, "
            f"or choose another model folder / backbone weights path."
        )


class WeightsTampered(RegistryError):
    """The weights file's SHA-256 differs from the one recorded in the manifest."""

    def __init__(self, path: Path, expected_sha256: str, actual_sha256: str) -> None:
        self.path = Path(path)
        self.expected_sha256 = expected_sha256
        self.actual_sha256 = actual_sha256
        super().__init__(
            f"weights file {self.path} does not match its manifest: expected sha256 {expected_sha256}, "
            f"file has {actual_sha256}. The file was changed or corrupted after export; restore it from the "
            f"release archive (do not edit the manifest to silence this)."
        )


class ArchitectureMismatch(RegistryError):
    """The manifest names another architecture, or the weights do not fit the network the manifest describes."""

    def __init__(self, folder: Path, detail: str) -> None:
        self.folder = Path(folder)
        super().__init__(
            f"model in {self.folder} cannot be used here: {detail}. Check that MCCAD_MODEL_DIR points at the "
            f"right model for this role and that the manifest and weights come from the same export."
        )


class BackboneWeightsInvalid(RegistryError):
    """A backbone weights file exists but is not the torchvision ResNet state dict it was named as."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = Path(path)
        super().__init__(f"backbone weights {self.path} cannot be used: {detail}. Use torchvision's ImageNet file.")
