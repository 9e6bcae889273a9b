"""The one way a network's config dataclass travels through ``manifest.json`` (see ``models.registry``)."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar


class ManifestConfig:
    """Mixin for frozen config dataclasses: JSON-ready ``to_dict`` (tuples become lists) and a strict
    ``from_dict`` that refuses unknown keys, so that a typo in a manifest is not silently ignored."""

    manifest_name: ClassVar[str] = "model"

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown {cls.manifest_name} settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
