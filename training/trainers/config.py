"""An experiment is one TOML file: which model, which data, how to split it, how to train.

Example (``mccad train detector --config exp.toml``)::

    kind = "detector"            # detector | sppnet | patches | descriptors (simulates its own data: no [data])
    [data]
    csv = "synth/annotations.csv"
    val_fraction = 0.2           # patient-level hold-out for validation / early stopping
    folds = 0                    # > 1: k-fold cross-validation by patient
    seed = 0
    [train]                      # the trainer's dataclass fields (DetectorTrainConfig, SPPNetTrainConfig, ...)
    epochs = 12
    lr = 0.005
    [train.detector]             # DetectorConfig overrides
    min_size = 640

The run folder gets the file back as ``config.toml`` so that every run carries what made it. Python's ``tomllib``
reads TOML but does not write it; :func:`dump_toml` writes the subset configs need (tables, scalars, arrays).
"""
from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["detector", "sppnet", "patches", "descriptors"]


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    csv: Path | None = None
    format: Literal["paper_csv", "coco", "cbis_ddsm", "inbreast", "mias", "sr_folder", "vindr_mammo", "cmmd",
                    "normals"] = "paper_csv"
    image_root: Path | None = None
    #: only the images of this archive split ("training", "test": CBIS-DDSM, VinDr-Mammo), and of ``val_csv``'s
    #: split ``val_split``
    split: str | None = None
    val_split: str | None = None
    #: VinDr-Mammo's findings other than calcifications: their images left out, or kept as background
    other_findings: Literal["exclude", "background"] = "exclude"
    val_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    #: a separate validation set (same format) instead of a hold-out of ``csv``: e.g. simulated crops on the
    #: backgrounds of a patient that training never sees
    val_csv: Path | None = None
    folds: int = Field(default=0, ge=0)
    seed: int = 0


class ExperimentConfig(BaseModel):
    """The validated content of an experiment TOML file."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind
    data: DataConfig = DataConfig()
    train: dict[str, Any] = {}


class ConfigFileError(ValueError):
    """An experiment file that cannot be read; the message names the file."""


def load_experiment(path: Path) -> ExperimentConfig:
    """Read and validate an experiment TOML file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigFileError(f"experiment file {path} cannot be read: {exc}") from exc
    try:
        return ExperimentConfig.model_validate(data)
    except Exception as exc:
        raise ConfigFileError(f"experiment file {path} is not valid: {exc}") from exc


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_toml(data: dict[str, Any]) -> str:
    """Write a dict of scalars, arrays and nested tables as TOML (``None`` values are left out: TOML has no null)."""
    lines: list[str] = []

    def table(prefix: str, d: dict[str, Any]) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict) and v is not None}
        tables = {k: v for k, v in d.items() if isinstance(v, dict)}
        if prefix and (scalars or not tables):
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{_key(k)} = {_scalar(v)}")
        if scalars:
            lines.append("")
        for k, v in tables.items():
            table(f"{prefix}.{_key(k)}" if prefix else _key(k), v)

    table("", data)
    return "\n".join(lines).rstrip() + "\n"


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)
