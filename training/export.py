"""A trained run becomes a registry model folder: weights + ``manifest.json`` + ``metrics.json`` + ``MODEL_CARD.md``.

The manifest's ``input_spec`` carries the standardisation the run trained with (``max_side``, tolerance) and the
network config, so that ``models.pipeline`` prepares images exactly as training did; for a detector also how it runs
on whole images (``tiling``) and whether boxes outside the breast are dropped (``breast_gate``).
``models.registry.save_model`` writes and hashes the weights; nothing here downloads anything.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.detector import DetectorConfig
from models.preprocess import standardise_config_from
from models.tiling import TilingSpec
from training.overrides import SETTINGS, apply_settings, reading_changes
from training.trainers.common import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    METRICS_LOG,
    TrainingError,
    config_defaults,
    load_checkpoint,
)

#: ``score_thresh`` that takes the checkpoint's validated operating point
AUTO_THRESHOLD = "auto"

log = logging.getLogger(__name__)

PATCH_ROLES = ("pathotype_incl", "pathotype_excl", "er")
ROLE_CLASSES = {
    "detector": ["background", "benign", "malignant"],
    "sppnet": ["benign", "malignant"],
    "pathotype_incl": ["pure_dcis", "invasive_incl_microinvasion"],
    "pathotype_excl": ["dcis_with_or_without_microinvasion", "invasive_excl_microinvasion"],
    "er": ["er_negative", "er_positive"],
}


@dataclass
class LoadedRun:
    """A run's network rebuilt from its checkpoint, with what is needed to feed it."""

    kind: str  # detector, sppnet, patches
    role: str  # detector, sppnet, pathotype_incl, pathotype_excl, er
    model: torch.nn.Module
    network_config: Any  # DetectorConfig or ClassifierConfig
    standardise: dict[str, Any]
    train_config: dict[str, Any]
    checkpoint: dict[str, Any]
    history: list[dict[str, Any]]
    tiling: dict[str, int] | None = None  # detectors trained on crops: how to run them on whole images
    breast_gate: dict[str, float] | None = None  # detectors: ``models.breast_gate.BreastGate`` spec, None: no gate


def load_run(run_dir: Path, which: str = "best") -> LoadedRun:
    """Rebuild the model of a run folder from ``best.pt`` (or ``last.pt``); TrainingError when there is none."""
    run_dir = Path(run_dir)
    path = run_dir / (BEST_CHECKPOINT if which == "best" else LAST_CHECKPOINT)
    if not path.is_file():
        raise TrainingError(f"{run_dir} holds no {path.name}: it is not a finished training run "
                            f"(run 'mccad train' into it first)")
    ckpt = load_checkpoint(path)
    kind, cfg, build = ckpt["kind"], ckpt["config"], ckpt.get("build", {})
    if kind == "detector":
        from models.detector import DetectorConfig, build_detector

        net_cfg = DetectorConfig.from_dict(build.get("detector_config", cfg.get("detector", {})))
        model = build_detector(net_cfg, None, frozen_batchnorm=False)
        role = "detector"
    else:
        from models.classifier import ClassifierConfig, build_classifier

        net_cfg = ClassifierConfig.from_dict(build.get("classifier_config", cfg.get("classifier", {})))
        model = build_classifier(net_cfg)
        role = "sppnet" if kind == "sppnet" else str(cfg.get("task"))
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise TrainingError(f"{path} does not fit the network its config describes (missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]})")
    model.eval()
    history = []
    if (run_dir / METRICS_LOG).is_file():
        history = [json.loads(x) for x in (run_dir / METRICS_LOG).read_text().splitlines() if x.strip()]
    standardise = build.get("standardise") or {"max_side": cfg.get("max_side"),
                                               "column_tolerance": cfg.get("column_tolerance", 0.01)}
    return LoadedRun(kind=kind, role=role, model=model, network_config=net_cfg, standardise=dict(standardise),
                     train_config=cfg, checkpoint=ckpt, history=history, tiling=build.get("tiling"),
                     breast_gate=_run_breast_gate(kind, cfg, build))


def _run_breast_gate(kind: str, cfg: dict[str, Any], build: dict[str, Any]) -> dict[str, float] | None:
    """A detector run's gate: its build record, or for a run written before the record existed its config's
    ``breast_gate`` setting, or that setting's default (``config_defaults``, as a resumed older run reads it)."""
    if kind != "detector":
        return None
    if "breast_gate" in build:
        return build["breast_gate"]
    from training.trainers.detector import DetectorTrainConfig, breast_gate_spec

    return breast_gate_spec(cfg.get("breast_gate", config_defaults(DetectorTrainConfig)["breast_gate"]))


#: what a tiling setting missing from a manifest reads as: TilingSpec's default, as the pipeline reads the manifest
#: (a manifest written before the setting existed)
TILING_DEFAULTS = {field.name: field.default for field in dataclasses.fields(TilingSpec)}
#: the detector settings a manifest keeps in ``thresholds`` (``models.registry``)
THRESHOLD_KEYS = SETTINGS["thresholds"][1]


def export_run(run_dir: Path, out_dir: Path, overrides: Mapping[str, Any] | None = None, *,
               name: str | None = None, version: str = "0.1.0", training_data: str = "",
               synthetic_only: bool = False, metrics_json: Path | None = None, dtype: str = "float16",
               which: str = "best") -> Path:
    """Write the registry folder for a run; returns ``out_dir``.

    Args:
        run_dir: a folder written by ``mccad train`` (``best.pt`` / ``last.pt``).
        out_dir: the model folder to write.
        overrides: detector settings chosen after training, ``{"thresholds.score_thresh": 0.35, "tiling.batch":
            2}`` (``training.overrides``; values or their text). ``thresholds.score_thresh = "auto"`` takes the
            checkpoint's own ``val_threshold_at_1fp``, the operating point its whole validation images gave; it is
            refused when the run did not validate on whole images, or when another setting given moves the scores
            (``training.overrides.READING``), since the run validated its operating point without it.
        name, version, training_data, synthetic_only: the manifest's and card's (default name ``mccad-<role>``).
        metrics_json: an evaluation's ``metrics.json`` (``mccad evaluate``) to store in the manifest and the card;
            without it the run's best validation record is used.
        dtype: the weights file's dtype (float16, bfloat16, float32).
        which: the checkpoint, ``best`` or ``last``.
    """
    from models.registry import DTYPES, ModelManifest, save_model

    run = load_run(run_dir, which)
    out_dir = Path(out_dir)
    evaluation = json.loads(Path(metrics_json).read_text()) if metrics_json else None
    best_record = run.checkpoint.get("metrics", {})
    metrics = {"validation": {k: v for k, v in best_record.items() if isinstance(v, (int, float))}}
    if evaluation is not None:
        metrics["evaluation"] = headline_metrics(evaluation)
    overrides = dict(overrides or {})
    if overrides and run.kind != "detector":
        raise ValueError(f"{run_dir}: {', '.join(overrides)} are detector settings; this run trained a {run.kind}")
    arch = run.network_config.architecture
    key = "detector" if run.kind == "detector" else "classifier"
    thresholds: dict[str, float] = {}
    tiling = dict(run.tiling) if run.tiling else None
    if run.kind == "detector":
        parts = _detector_parts(run)
        if overrides.get("thresholds.score_thresh") == AUTO_THRESHOLD:
            others = {k: v for k, v in overrides.items() if k != "thresholds.score_thresh"}
            for setting, (old, new) in reading_changes(parts, apply_settings(parts, others, run_dir)).items():
                raise ValueError(f"{run_dir}: the run validated its operating point with {setting} = {old}, not "
                                 f"{new}: give --set thresholds.score_thresh=T chosen on validation images read "
                                 "that way")
            overrides["thresholds.score_thresh"] = validated_threshold(best_record, run_dir)
        chosen = apply_settings(parts, overrides, run_dir)
        # the network config keeps the run's thresholds; the manifest's ``thresholds`` hold the chosen ones
        run = dataclasses.replace(run, network_config=DetectorConfig.from_dict({**chosen["detector"],
                                                                                **parts["thresholds"]}))
        thresholds = dict(chosen["thresholds"])
        tiling = chosen["tiling"]
    manifest = ModelManifest(
        name=name or f"mccad-{run.role}", version=version, architecture=arch, role=run.role,
        classes=ROLE_CLASSES.get(run.role, ["negative", "positive"]),
        input_spec={"standardise": dataclasses.asdict(standardise_config_from(run.standardise)),
                    key: run.network_config.to_dict(),
                    **({"tiling": tiling} if tiling else {}),
                    **({"breast_gate": run.breast_gate} if run.breast_gate is not None else {})},
        thresholds=thresholds, training_data=training_data, synthetic_only=synthetic_only,
        metrics=json_safe(metrics))
    written = save_model(out_dir, run.model, manifest, dtype=DTYPES[dtype])
    (out_dir / "metrics.json").write_text(json.dumps(json_safe(evaluation or metrics), indent=2))
    (out_dir / "MODEL_CARD.md").write_text(model_card(written.model_dump(), run, evaluation))
    log.info("exported %s run %s to %s", run.role, run_dir, out_dir)
    return out_dir


def _detector_parts(run: LoadedRun) -> dict[str, dict[str, Any] | None]:
    """A detector run's settings as ``training.overrides.apply_settings`` takes them."""
    config = run.network_config.to_dict()
    return {"detector": {k: v for k, v in config.items() if k not in THRESHOLD_KEYS},
            "thresholds": {k: config[k] for k in THRESHOLD_KEYS},
            "tiling": dict(run.tiling) if run.tiling else None,
            "breast_gate": dict(run.breast_gate) if run.breast_gate is not None else None}


def validated_threshold(record: dict[str, Any], run_dir: Path) -> float:
    """The operating point a checkpoint's validation found on whole images (``val_threshold_at_1fp``); a
    ``TrainingError`` when the run has none (validated on crops, or too many false positives at every score)."""
    value = record.get("val_threshold_at_1fp")
    whole = record.get("val_whole_images") or 0
    if value is None or not whole or not math.isfinite(float(value)):
        raise TrainingError(f"{run_dir}: the checkpoint records no operating point from whole validation images "
                            "(val_threshold_at_1fp): validate on whole images, or give --score-thresh a number "
                            "chosen with 'mccad evaluate'")
    return float(value)


def headline_metrics(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The few numbers a manifest should carry: accuracy, AUC (CI) and malignant sensitivity per level, FROC."""
    out: dict[str, Any] = {}
    for level, block in evaluation.get("levels", {}).items():
        out[level] = {"accuracy": block["table"]["accuracy"], "auc": block["auc"]["auc"],
                      "auc_ci95": [block["auc"]["ci_low"], block["auc"]["ci_high"]],
                      "sensitivity_malignant": block["table"]["sensitivity"]["malignant"], "n": block["n"]}
    if "froc" in evaluation:
        out["froc_sensitivity_at_fp_per_image"] = evaluation["froc"]["all"]["sensitivity_at_fp_per_image"]
    return out


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _fmt(value: Any) -> str:
    """A card's table cell: floats to four significant digits (four decimals printed a learning rate of 5e-05 as
    0.0001)."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.4g}"
    return str(value)


def evaluation_lines(evaluation: dict[str, Any]) -> list[str]:
    """A card's evaluation table (``mccad evaluate``'s metrics.json): each level, FROC, the command."""
    lines = ["| level | n | accuracy | AUC (95% CI) | sensitivity malignant | sensitivity benign |",
             "|---|---|---|---|---|---|"]
    for level, block in evaluation.get("levels", {}).items():
        auc = block["auc"]
        lines.append(f"| {level} | {block['n']} | {_fmt(block['table']['accuracy'])} | {_fmt(auc['auc'])} "
                     f"({_fmt(auc['ci_low'])}-{_fmt(auc['ci_high'])}) | "
                     f"{_fmt(block['table']['sensitivity']['malignant'])} | "
                     f"{_fmt(block['table']['sensitivity']['benign'])} |")
    if "froc" in evaluation:
        rates = evaluation["froc"]["all"]["sensitivity_at_fp_per_image"]
        lines += ["", "FROC sensitivity at " + ", ".join(f"{k} FP/image: {_fmt(v)}" for k, v in rates.items())]
    if evaluation.get("command"):
        lines += ["", f"Produced by: `{evaluation['command']}`"]
    return lines


def model_card(manifest: dict[str, Any], run: LoadedRun, evaluation: dict[str, Any] | None) -> str:
    """A Markdown model card: what the model is, how it was trained, what it scored, and its limits."""
    cfg = run.train_config
    lines = [
        f"# Model card: {manifest['name']} {manifest['version']}",
        "",
        f"- Role: **{manifest['role']}** ({manifest['architecture']}), classes {', '.join(manifest['classes'])}",
        f"- Weights: `{manifest['weights_file']}` ({manifest['dtype']}), sha256 `{manifest['sha256']}`",
        f"- Created: {manifest['created']}",
        f"- Training data: {manifest['training_data'] or 'not stated'}",
    ]
    if manifest.get("synthetic_only"):
        lines += ["", "**NOT FOR CLINICAL USE: trained on synthetic data only.**"]
    lines += ["", "## Method", "",
              "Lin et al., Fundamental Research 5 (2025) 880-889: "
              + ("Faster R-CNN (ResNet50 + FPN) detector of benign and malignant microcalcification lesions; image "
                 "level malignant when any malignant box (section 2.6)." if run.kind == "detector" else
                 "SPPNet (ResNet18 + spatial pyramid pooling) classifier" + (
                     " of whole mammograms (image-level labels)." if run.kind == "sppnet" else
                     f" of malignant lesion patches ({run.role}).")),
              "", "## Training", "", "| setting | value |", "|---|---|"]
    for k, v in cfg.items():
        if isinstance(v, dict):
            v = json.dumps(v)
        lines.append(f"| {k} | {_fmt(v)} |")
    lines.append(f"| epochs completed | {run.checkpoint.get('epoch')} (checkpoint used) |")
    lines.append(f"| input standardisation | {json.dumps(run.standardise)} |")
    if run.history:
        lines += ["", "## Training log (per epoch)", "", "| epoch | train loss | val AUC |", "|---|---|---|"]
        for r in run.history:
            lines.append(f"| {r['epoch']} | {_fmt(r.get('train_loss'))} | {_fmt(r.get('val_auc'))} |")
    lines += ["", "## Evaluation", ""]
    if evaluation:
        lines += evaluation_lines(evaluation)
    else:
        lines.append("No held-out evaluation was attached; the validation record of the checkpoint: "
                     + ", ".join(f"{k}={_fmt(v)}" for k, v in run.checkpoint.get("metrics", {}).items()))
    lines += ["", "## Limits", "",
              "- Validated only on the data named above; performance on other scanners, populations and "
              "protocols is unknown.",
              "- A decision aid for microcalcifications only; not a substitute for a radiologist's reading.", ""]
    return "\n".join(lines)

