"""A model folder re-issued under a new version with settings chosen after training, its weights unchanged.

Why: the settings a detector is read with after training (operating point, box score, malignant logit offset, tiles
per pass, test-time flip, tile geometry) are chosen on validation images, often long after the training run's folder
is gone. A shipped model whose reading changes is a new model: it gets its own version, its manifest records what
changed, and its card says so above the card it came from. The weights file is copied byte for byte, so the manifest's
SHA-256 shows they are the source's.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from training.export import AUTO_THRESHOLD, TILING_DEFAULTS, evaluation_lines, headline_metrics, json_safe
from training.overrides import apply_settings

log = logging.getLogger(__name__)


def reissue_model(model_dir: Path, out_dir: Path, overrides: Mapping[str, Any] | None = None, *, version: str,
                  name: str | None = None, metrics_json: Path | None = None, training_data: str | None = None,
                  synthetic_only: bool = False) -> Path:
    """Write ``out_dir``: ``model_dir``'s weights and manifest with ``overrides`` applied.

    Args:
        model_dir: a detector or classifier folder (``manifest.json`` and its weights).
        out_dir: the folder to write; not ``model_dir``.
        overrides: detector settings chosen after training, ``{"thresholds.score_thresh": 0.35}``
            (``training.overrides``; values or their text).
        version: the new model's version, which must differ from the source's.
        name: the new model's name (default: the source's).
        metrics_json: ``mccad evaluate``'s ``metrics.json`` of the re-issued reading; without it the source's
            evaluation is dropped, since it measured another reading.
        training_data: the card's line on the training data (default: the source's).
        synthetic_only: marks the model as trained on synthetic data only (can only be added).
    """
    from models.registry import load_manifest, verify_weights, write_manifest

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    source = load_manifest(model_dir)
    weights = verify_weights(model_dir, source)
    if out_dir.resolve() == model_dir.resolve():
        raise ValueError(f"{out_dir} is the model folder being re-issued: write the new version to another folder")
    if version == source.version:
        raise ValueError(f"{model_dir} is version {version} already: a re-issued model needs a version of its own")
    overrides = dict(overrides or {})
    if overrides.get("thresholds.score_thresh") == AUTO_THRESHOLD:
        raise ValueError(f"{model_dir} is a model folder, not a training run: it keeps no validation checkpoint for "
                         "'auto'; give --set thresholds.score_thresh a number chosen with 'mccad evaluate'")
    if overrides and source.role != "detector":
        raise ValueError(f"{model_dir}: {', '.join(overrides)} are detector settings; this model is a {source.role}")
    input_spec = json.loads(json.dumps(source.input_spec))
    thresholds = dict(source.thresholds)
    if overrides:
        chosen = apply_settings({"detector": input_spec.get("detector", {}), "thresholds": thresholds,
                                 "tiling": input_spec.get("tiling"), "breast_gate": input_spec.get("breast_gate")},
                                overrides, model_dir)
        thresholds = dict(chosen["thresholds"])
        input_spec.update({k: chosen[k] for k in ("detector", "tiling", "breast_gate") if chosen[k] is not None})
    changes = _changes(source.model_dump(), input_spec, thresholds)
    evaluation = json.loads(Path(metrics_json).read_text()) if metrics_json else None
    metrics = {k: v for k, v in source.metrics.items() if k != "evaluation"}
    if evaluation is not None:
        metrics["evaluation"] = headline_metrics(evaluation)
    manifest = source.model_copy(update={
        "name": name or source.name, "version": version, "input_spec": input_spec, "thresholds": thresholds,
        "training_data": source.training_data if training_data is None else training_data,
        "synthetic_only": source.synthetic_only or synthetic_only, "metrics": json_safe(metrics),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, out_dir / manifest.weights_file)
    verify_weights(out_dir, manifest)
    write_manifest(out_dir, manifest)
    (out_dir / "metrics.json").write_text(json.dumps(json_safe(evaluation or metrics), indent=2))
    old_card = model_dir / "MODEL_CARD.md"
    (out_dir / "MODEL_CARD.md").write_text(reissue_card(
        manifest.model_dump(), source.model_dump(), changes, evaluation,
        old_card.read_text() if old_card.is_file() else ""))
    log.info("re-issued %s %s as %s %s in %s", source.name, source.version, manifest.name, version, out_dir)
    return out_dir


def _changes(source: dict[str, Any], input_spec: dict[str, Any],
             thresholds: dict[str, float]) -> list[tuple[str, Any, Any]]:
    """(setting, source's value, new value) for each setting that differs, named by its place in the manifest."""
    out = []
    for key in sorted(set(source["thresholds"]) | set(thresholds)):
        if source["thresholds"].get(key) != thresholds.get(key):
            out.append((f"thresholds.{key}", source["thresholds"].get(key), thresholds.get(key)))
    for block in ("tiling", "detector"):
        old, new = source["input_spec"].get(block) or {}, input_spec.get(block) or {}
        for key in sorted(set(old) | set(new)):
            default = TILING_DEFAULTS.get(key) if block == "tiling" else None
            if old.get(key, default) != new.get(key, default):
                out.append((f"input_spec.{block}.{key}", old.get(key, default), new.get(key, default)))
    return out


def reissue_card(manifest: dict[str, Any], source: dict[str, Any], changes: list[tuple[str, Any, Any]],
                 evaluation: dict[str, Any] | None, source_card: str) -> str:
    """The re-issued model's card: what it is, what changed from its source, its evaluation, then the source's
    card with its headings one level down."""
    lines = [
        f"# Model card: {manifest['name']} {manifest['version']}",
        "",
        f"- Role: **{manifest['role']}** ({manifest['architecture']}), classes {', '.join(manifest['classes'])}",
        f"- Weights: `{manifest['weights_file']}` ({manifest['dtype']}), sha256 `{manifest['sha256']}`: those of "
        f"{source['name']} {source['version']}, unchanged",
        f"- Created: {manifest['created']}",
        f"- Training data: {manifest['training_data'] or 'not stated'}",
    ]
    if manifest.get("synthetic_only"):
        lines += ["", "**NOT FOR CLINICAL USE: trained on synthetic data only.**"]
    lines += ["", f"## Re-issued from {source['name']} {source['version']}", "",
              "The same weights, read with these settings chosen after training:", "",
              f"| setting | {source['version']} | {manifest['version']} |", "|---|---|---|"]
    lines += [f"| {key} | {old} | {new} |" for key, old, new in changes] or ["| (none) | | |"]
    lines += ["", "## Evaluation", ""]
    lines += evaluation_lines(evaluation) if evaluation else [
        f"None attached: {source['version']}'s evaluation measured another reading and is not carried over."]
    if source_card.strip():
        body = source_card.split("\n", 1)[1] if source_card.startswith("# ") else source_card
        lines += ["", f"## The card of {source['name']} {source['version']}", "",
                  re.sub(r"^(#{2,5}) ", r"#\1 ", body.strip(), flags=re.MULTILINE)]
    return "\n".join(lines) + "\n"

