"""The one configuration object.

Sources, highest priority first: keyword arguments, environment variables ``MCCAD_*`` (nested fields with ``__``,
lists as JSON), the TOML file named by ``MCCAD_CONFIG`` (or ``./mccad.toml`` when present), then defaults.
Defaults give the embedded mode: SQLite ledger, a local broker that needs no server, everything under ``data_dir``.

A key nobody reads is an error at start (:class:`UnknownSettingError`, naming the key and the file or the
environment): a misspelt or misplaced key (for example a top-level key written after a ``[[destinations]]`` table,
which TOML files under that table) would otherwise be ignored without a word. ``allowed_calling_aes`` is read as
a JSON list or as comma-separated names.
"""
from __future__ import annotations

import importlib.util
import json
import os
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import (BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict,
                               TomlConfigSettingsSource)

#: Environment variables with our prefix that are not settings.
ENV_NOT_SETTINGS = frozenset({"MCCAD_CONFIG"})


class UnknownSettingError(ValueError):
    """A configuration key that names no setting; the message names the key and where it was written."""


def default_model_dir() -> Path:
    """The model bundle shipped inside the ``models`` package (``models/weights/default``), found without importing
    ``models``: configuration sits below every other package of ours."""
    spec = importlib.util.find_spec("models")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the models package is not installed: set MCCAD_MODEL_DIR")
    return Path(spec.origin).resolve().parent / "weights" / "default"


class Destination(BaseModel):
    """A DICOM node that receives our results (usually the PACS that sent the study)."""

    ae_title: str = Field(min_length=1, max_length=16)
    host: str
    port: int = Field(ge=1, le=65535)
    tls: bool = False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MCCAD_", env_nested_delimiter="__", extra="ignore")

    # where state lives
    data_dir: Path = Field(default_factory=lambda: Path.home() / ".local" / "share" / "mccad")
    ledger_url: str | None = None  # default sqlite:///<data_dir>/ledger.sqlite3
    broker_url: str | None = None  # default: embedded (kombu SQLAlchemy transport on SQLite in data_dir)
    visibility_timeout_s: int = 4 * 3600

    # the SCP
    ae_title: str = Field(default="MCCAD", min_length=1, max_length=16)
    host: str = "127.0.0.1"
    port: int = Field(default=11112, ge=0, le=65535)
    allowed_calling_aes: Annotated[list[str], NoDecode] = []  # empty: accept any calling AE
    accept_non_mg: bool = False
    max_associations: int = Field(default=8, ge=1)
    max_instance_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None  # when set, peers must present a certificate signed by it

    # study assembly and processing
    study_idle_s: float = Field(default=10.0, ge=0.0)
    max_attempts: int = Field(default=3, ge=1)  # failed analyses, then dead-lettered
    max_crashes: int = Field(default=10, ge=1)  # attempts ended by the death of the worker process
    retry_backoff_s: float = Field(default=5.0, ge=0.0)  # first wait before a retry; doubles with each failure
    retry_backoff_max_s: float = Field(default=600.0, ge=0.0)  # longest wait between two deliveries
    delivery_horizon_s: float = Field(default=12 * 3600.0, ge=0.0)  # keep re-sending this long, then dead-letter
    destinations: list[Destination] = []
    send_retries: int = Field(default=3, ge=0)  # immediate reconnects within one delivery (no waiting)
    task_time_limit_s: float = Field(default=1800.0, gt=0.0)  # an attempt running longer fails the study
    worker_stale_s: float = Field(default=60.0, gt=0.0)  # a worker silent this long is taken as dead
    supervise_interval_s: float = Field(default=5.0, gt=0.0)  # how often the ledger is reconciled with the broker
    stuck_after_s: float = Field(default=900.0, gt=0.0)  # waiting longer than this makes /healthz "degraded"
    spool_retention_s: float = Field(default=7 * 86400.0, ge=0.0)  # delivered studies' instances kept this long

    # models and images
    model_dir: Path = Field(default_factory=default_model_dir)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # the detector's backbone on the CPU: ONNX Runtime when installed and checked equal at load (models.onnx_runtime)
    detector_runtime: Literal["auto", "eager", "onnxruntime"] = "auto"
    explain: bool = True  # CAM heatmaps: about half the CPU time of a study; off on slow CPU-only sites
    max_pixels: int = Field(default=80_000_000, ge=1)
    threads: int | None = None

    # health and metrics
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=9108, ge=0, le=65535)

    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    # `mccad serve` and `mccad worker` log into this file (default <data_dir>/logs/mccad.log; a per-host path when
    # workers on several hosts share data_dir), and to stderr as well only with log_stderr
    log_file: Path | None = None
    log_stderr: bool = False

    @field_validator("allowed_calling_aes", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = os.environ.get("MCCAD_CONFIG") or ("mccad.toml" if Path("mccad.toml").is_file() else None)
        check_env_keys(os.environ)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path:
            if not Path(toml_path).is_file():
                raise FileNotFoundError(f"MCCAD_CONFIG names {toml_path}, which does not exist")
            check_toml_keys(Path(toml_path))
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    # derived locations (not settable: one data_dir keeps a deployment's state together)
    @cached_property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @cached_property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @cached_property
    def effective_ledger_url(self) -> str:
        return self.ledger_url or f"sqlite:///{self.data_dir / 'ledger.sqlite3'}"

    @cached_property
    def effective_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.sqlite3'}"

    @cached_property
    def effective_log_file(self) -> Path:
        return self.log_file or self.data_dir / "logs" / "mccad.log"

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url is None


def check_toml_keys(path: Path) -> None:
    """Raise :class:`UnknownSettingError` for a key of the TOML file at ``path`` that names no setting (top level,
    or inside a ``[[destinations]]`` table)."""
    with open(path, "rb") as handle:
        data = tomllib.load(handle)
    for key in data:
        if key not in Settings.model_fields:
            raise UnknownSettingError(f"unknown setting {key!r} in {path}")
    for index, table in enumerate(data.get("destinations") or []):
        for key in table if isinstance(table, dict) else ():
            if key not in Destination.model_fields:
                hint = " (a top-level key written after [[destinations]] belongs to that table: move it above)" \
                    if key in Settings.model_fields else ""
                raise UnknownSettingError(f"unknown key {key!r} in [[destinations]] number {index + 1} of {path}{hint}")


def check_env_keys(environ: Any) -> None:
    """Raise :class:`UnknownSettingError` for an ``MCCAD_*`` environment variable that names no setting."""
    for name in environ:
        if not name.startswith("MCCAD_") or name in ENV_NOT_SETTINGS:
            continue
        field = name[len("MCCAD_"):].lower().split("__", 1)[0]
        if field not in Settings.model_fields:
            raise UnknownSettingError(f"unknown setting {name} in the environment")


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
