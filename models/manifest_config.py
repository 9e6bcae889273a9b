"""The one way a network's config dataclass travels through ``manifest.json`` (see ``models.registry``), and the one
way a setting given as text (``mccad export --set tiling.tile=800``) becomes a typed value of such a dataclass."""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

#: how ``setting_value`` reads a boolean given as text
_TRUE, _FALSE = ("true", "on", "yes", "1"), ("false", "off", "no", "0")


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


def setting_value(cls: type, name: str, value: Any) -> Any:
    """Field ``name`` of the dataclass ``cls`` as its declared type: text (a command line's) is parsed as that type
    (``int``, ``float``, ``bool``: true/false/on/off/yes/no/1/0, ``str``, ``None`` for an optional field given
    ``none``), any other value is returned as it is for the class itself to check.

    Raises ``ValueError`` naming the known fields when ``cls`` has no field ``name``, or when the text is not of the
    field's type."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if name not in names:
        raise ValueError(f"{name!r} is not a setting here; known: {', '.join(names)}")
    if not isinstance(value, str):
        return value
    kinds = typing.get_args(hints[name]) if _is_union(hints[name]) else (hints[name],)
    if type(None) in kinds and value.strip().lower() in ("none", "null"):
        return None
    for kind in (k for k in kinds if k is not type(None)):
        if kind is bool:
            if value.strip().lower() in _TRUE + _FALSE:
                return value.strip().lower() in _TRUE
        elif kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                continue
        elif kind is str:
            return value
    expected = " or ".join(getattr(k, "__name__", str(k)) for k in kinds)
    raise ValueError(f"{name} takes {expected}, not {value!r}")


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)
