"""The settings of a detector chosen after training, as ``mccad export --set SECTION.KEY=VALUE`` gives them.

A detector's reading (operating point, box score, tiles, test-time flip, breast gate margin) holds no weights: it is
chosen on validation images after training and written into the model folder's manifest. Each setting is named by
its section and key, the place it has in the manifest:

- ``thresholds.score_thresh`` (the operating point), ``thresholds.nms_thresh``, ``thresholds.detections_per_img``,
  ``thresholds.cross_class_iou`` (``models.detector.DetectorConfig``);
- ``detector.score_mode``, ``detector.malignant_logit_offset``, ``detector.cross_class_suppression``
  (``models.box_scores``);
- ``tiling.<field>`` of ``models.tiling.TilingSpec`` (``tile``, ``overlap``, ``batch``, ``join``, ``hflip``), for a
  detector that reads whole images tile by tile;
- ``breast_gate.margin_mm`` (``models.breast_gate.BreastGate``), for a detector that has the gate.

Values are parsed as the configuration class declares the field and then checked by the class itself; an unknown
section or key, a value of the wrong type or one the class refuses fails with a ``ValueError`` that names the
setting. Settings that shape the weights (backbone, anchors, layer widths) are not among them: they need training.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from models.breast_gate import BreastGate
from models.detector import DetectorConfig
from models.manifest_config import setting_value
from models.tiling import TilingSpec

#: the settings ``--set`` may change, by section, and the configuration class that declares and checks them
SETTINGS: dict[str, tuple[type, tuple[str, ...]]] = {
    "thresholds": (DetectorConfig, ("score_thresh", "nms_thresh", "detections_per_img", "cross_class_iou")),
    "detector": (DetectorConfig, ("score_mode", "malignant_logit_offset", "cross_class_suppression")),
    "tiling": (TilingSpec, ("tile", "overlap", "batch", "hflip")),
    "breast_gate": (BreastGate, ("margin_mm",)),
}
#: the settings whose change moves a detector's scores, so that an operating point validated without the change no
#: longer holds (the tiles per forward pass and the NMS-free settings above do not move them)
READING = ("detector.score_mode", "detector.malignant_logit_offset", "tiling.tile", "tiling.overlap", "tiling.hflip")


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``["tiling.tile=800", ...]`` (``--set``, repeated) as a mapping; a malformed or repeated item is refused."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. thresholds.score_thresh=0.35")
        if key in out:
            raise ValueError(f"--set {key} is given twice")
        out[key] = value.strip()
    return out


def apply_settings(parts: Mapping[str, dict[str, Any] | None], overrides: Mapping[str, Any],
                   source: Path) -> dict[str, dict[str, Any] | None]:
    """``parts`` (a detector's ``detector``, ``thresholds``, ``tiling`` and ``breast_gate`` records; the last two None
    when it has none) with ``overrides`` (``"section.key"`` -> a value or its text) applied, each checked by its
    configuration class. ``source`` names the model in errors."""
    out = {section: copy.deepcopy(dict(block)) if block is not None else None for section, block in parts.items()}
    for key, raw in overrides.items():
        section, _, name = key.partition(".")
        if section not in SETTINGS:
            raise ValueError(f"--set {key}: unknown section {section!r}; the sections are {', '.join(SETTINGS)}")
        cls, names = SETTINGS[section]
        if name not in names:
            raise ValueError(f"--set {key}: {name!r} is not a {section} setting chosen after training; those are "
                             f"{', '.join(names)}")
        if out.get(section) is None:
            raise ValueError(f"{source}: --set {key}: this detector has no {section} "
                             + ("(it reads whole images, not tile by tile)" if section == "tiling" else
                                "(it has no breast gate)"))
        try:
            out[section][name] = setting_value(cls, name, raw)  # type: ignore[index]
        except ValueError as exc:
            raise ValueError(f"--set {key}: {exc}") from exc
    _check(out, overrides)
    return out


def _check(parts: Mapping[str, dict[str, Any] | None], overrides: Mapping[str, Any]) -> None:
    """Each section given a setting, checked by its class; the error names the settings given in that section."""
    checks = {
        "thresholds": lambda: _operating_point(parts),
        "detector": lambda: _operating_point(parts),
        "tiling": lambda: TilingSpec(**parts["tiling"]),  # type: ignore[arg-type]
        "breast_gate": lambda: BreastGate(**parts["breast_gate"]),  # type: ignore[arg-type]
    }
    for section in dict.fromkeys(key.partition(".")[0] for key in overrides):
        try:
            checks[section]()
        except (TypeError, ValueError) as exc:
            given = ", ".join(f"{k}={overrides[k]}" for k in overrides if k.startswith(section + "."))
            raise ValueError(f"--set {given}: {exc}") from exc


def _operating_point(parts: Mapping[str, dict[str, Any] | None]) -> None:
    thresholds = parts.get("thresholds") or {}
    score = thresholds.get("score_thresh")
    if score is not None and not 0.0 < float(score) < 1.0:
        raise ValueError(f"score_thresh must lie in (0, 1), got {score}")
    DetectorConfig.from_dict({**(parts.get("detector") or {}), **thresholds})


def reading_changes(parts: Mapping[str, dict[str, Any] | None],
                    changed: Mapping[str, dict[str, Any] | None]) -> dict[str, tuple[Any, Any]]:
    """``{"tiling.hflip": (False, True), ...}``: the settings of ``READING`` that differ between two sets of parts,
    a setting a record lacks read as its class's default (as the pipeline reads a manifest)."""
    defaults = {"detector": DetectorConfig().to_dict(), "tiling": TilingSpec.__dataclass_fields__}
    out = {}
    for key in READING:
        section, _, name = key.partition(".")
        default = defaults[section][name]
        default = getattr(default, "default", default)
        old = (parts.get(section) or {}).get(name, default)
        new = (changed.get(section) or {}).get(name, default)
        if old != new:
            out[key] = (old, new)
    return out
