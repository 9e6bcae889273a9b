"""``mccad evaluate``: the paper's image / breast / lesion metrics, FROC, calibration and the k-fold table, written
as ``metrics.json``, PNG figures and ``report.html``.

Ways in:
  mccad evaluate --model MODEL_OR_RUN --data CSV --out DIR          run a model, then evaluate
  mccad evaluate --predictions P.json --truth CSV --out DIR         evaluate saved predictions
  mccad evaluate --predictions F1.json F2.json ... --truth CSV      one file per fold: Table 3 plus pooled metrics
  mccad evaluate --kfold RUN --data CSV --out DIR                    every fold of 'mccad train --folds k'
  mccad evaluate --model MODEL --data A.csv B.csv --out DIR          several sets pooled into one evaluation
  add --compare OTHER (predictions file, model or run folder) for DeLong's test between two models.
  add --no-breast-gate to run the models without their breast gate (``models.breast_gate``), to measure its effect;
  add --score-mode class|lesion to run detectors with another box score than their manifest's (``models.box_scores``),
  add --malignant-offset X to run them with another malignant logit offset (its calibration on validation images),
  add --test-time-flip on|off to run a tiled detector with or without its mirrored second reading
  (``models.flip_fusion``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path


def _with_intervals(values: dict[str, float], ci: dict | None) -> dict[str, str]:
    """``{"1.0": "0.772 (0.651 to 0.870)"}``: each FROC figure with its interval, for the printed summary."""
    cis = (ci or {}).get("sensitivity_ci_at_fp_per_image", {})
    return {rate: f"{v:.3f}" + (f" ({cis[rate][0]:.3f} to {cis[rate][1]:.3f})" if rate in cis else "")
            for rate, v in values.items()}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a model or saved predictions against annotated ground truth")
    p.add_argument("--truth", "--data", dest="truth", type=Path, nargs="+", required=True,
                   help="annotation file(s) (ground truth); several are pooled into one evaluation, each image named "
                        "<its file's folder>/<its name> (e.g. two simulated validation sets: narrower intervals)")
    p.add_argument("--format", default="paper_csv", help="dataset format of --truth (default paper_csv)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--predictions", type=Path, nargs="+", help="predictions file(s); several = one per fold")
    src.add_argument("--model", type=Path, help="model folder (manifest.json) or training run folder (best.pt)")
    src.add_argument("--kfold", type=Path, help="run folder of 'mccad train --folds k'")
    p.add_argument("--compare", type=Path, default=None, help="second model (predictions, model or run folder)")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--score-thresh", type=float, default=None, help="operating score threshold (default: model's)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for AUC and FROC intervals")
    p.add_argument("--false-positives", type=int, default=30, metavar="N",
                   help="draw a detector's N best-scored false positives at the operating point as a contact sheet "
                        "(false_positives.png, listed in metrics.json; 0: none)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-breast-gate", dest="breast_gate", action="store_false",
                   help="run detectors without the breast gate their manifest or run asks for (boxes centred outside "
                        "the breast are kept); saved predictions files are used as they are")
    p.add_argument("--score-mode", choices=("class", "lesion"), default=None,
                   help="run detectors with this box score instead of their manifest's: class (a box per class, its "
                        "probability; the paper's) or lesion (a box per proposal, 1 - P(background)); to choose a "
                        "model's score_mode on validation images. Saved predictions files are used as they are")
    p.add_argument("--malignant-offset", type=float, default=None, metavar="X",
                   help="run detectors with this constant added to each proposal's malignant logit instead of their "
                        "manifest's (default 0): to calibrate a model's benign/malignant split on validation images "
                        "('mccad export --malignant-offset'). Saved predictions files are used as they are")
    p.add_argument("--test-time-flip", choices=("on", "off"), default=None,
                   help="run tiled detectors with (on) or without (off) a second reading of the mirrored image, the "
                        "two fused (models.flip_fusion), instead of as their manifest says; to choose it on validation "
                        "images. Saved predictions files are used as they are")
    p.add_argument("--runtime", choices=("auto", "eager", "onnxruntime"), default=None,
                   help="the detector's runtime (default: settings' detector_runtime, auto: its backbone in ONNX "
                        "Runtime on the CPU when installed, checked equal to PyTorch at load); the predictions file "
                        "records the one used")
    p.set_defaults(func=run)


def _detector_overrides(args: argparse.Namespace) -> dict:
    """The detector settings given on the command line (``--score-mode``, ``--malignant-offset``, and
    ``--test-time-flip`` as ``"tiling.hflip"``, a setting of how the network runs on whole images)."""
    flip = None if args.test_time_flip is None else args.test_time_flip == "on"
    given = {"score_mode": args.score_mode, "malignant_logit_offset": args.malignant_offset, "tiling.hflip": flip}
    return {k: v for k, v in given.items() if v is not None}


def _predictions_of(source: Path, samples, device: str, out: Path, tag: str, breast_gate: bool = True,
                    overrides: dict | None = None, runtime: str = "eager"):
    """(predictions, operating point, name) from a predictions file or a model/run folder (``breast_gate`` False:
    a detector runs without its breast gate; ``overrides``: detector settings, such as ``score_mode``, that replace
    its manifest's)."""
    from mccad.cli import UserError
    from models.onnx_runtime import detection_model
    from training.evaluation.evaluate import OperatingPoint, read_predictions, write_predictions
    from training.evaluation.predict import load_model, predict

    if source.is_file():
        preds, meta = read_predictions(source)
        op = OperatingPoint(**meta["operating_point"]) if "operating_point" in meta else OperatingPoint()
        return preds, op, meta.get("name", source.stem)
    dev = _device(device)
    loaded = load_model(source, device=dev)
    if not breast_gate:
        loaded.breast_gate = None
    if overrides and loaded.kind == "detector":
        network = {k: v for k, v in overrides.items() if not k.startswith("tiling.")}
        loaded.network_config = dataclasses.replace(loaded.network_config, **network)
        if "tiling.hflip" in overrides:
            if not loaded.tiling:
                raise UserError(f"{source}: --test-time-flip is for detectors run tile by tile; this one reads "
                                "whole images")
            loaded.tiling = {**loaded.tiling, "hflip": overrides["tiling.hflip"]}
    used = None
    if loaded.kind == "detector":  # the runtime the product would use on this device (models.onnx_runtime)
        loaded.model, used = detection_model(loaded.model, runtime, dev)
    preds = predict(loaded, samples, progress=True)
    op = loaded.operating_point
    gate = ({"breast_gate": loaded.breast_gate, "score_mode": loaded.network_config.score_mode,
             "malignant_logit_offset": loaded.network_config.malignant_logit_offset,
             "test_time_flip": bool((loaded.tiling or {}).get("hflip", False)),
             "detector_runtime": used}
            if loaded.kind == "detector" else {})
    write_predictions(out / f"predictions{tag}.json", preds,
                      {**loaded.description, **gate, "operating_point": op.__dict__})
    return preds, op, f"{loaded.description['name']} {loaded.description['version']}"


def _read_truths(paths: list[Path], fmt: str) -> tuple[list, dict | None]:
    """The samples of one or several annotation files, and their ``simulated.json`` records (None unless every file
    has them). Pooled files prefix each image's name with its file's folder (made unique), since two sets made by
    ``mccad simulate`` both name their first image ``images/000000.png``; a background shared by two simulated sets
    stays one background (``training.evaluation.subgroups.background_of``), so its false positives are counted
    together."""
    from training.datasets.readers import read_dataset
    from training.evaluation.subgroups import simulation_records

    if len(paths) == 1:
        return read_dataset(paths[0], fmt), simulation_records(paths[0])
    samples: list = []
    records: dict | None = {}
    prefixes: set[str] = set()
    for k, path in enumerate(paths):
        prefix = path.resolve().parent.name or f"set{k + 1}"
        if prefix in prefixes:
            prefix = f"{prefix}-{k + 1}"
        prefixes.add(prefix)
        sim = simulation_records(path)
        for sample in read_dataset(path, fmt):
            name = f"{prefix}/{sample.image_id}"
            samples.append(dataclasses.replace(sample, image_id=name))
            if sim is not None and records is not None and sample.image_id in sim:
                records[name] = sim[sample.image_id]
        if sim is None:
            records = None
    return samples, records


def _device(device: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def _fold_predictions(args: argparse.Namespace, truth: list, out: Path, overrides: dict, runtime: str) -> list:
    """``(samples, predictions, operating point, model name)`` per fold: each fold of ``--kfold``, each file of
    several ``--predictions``, or one entry for ``--model`` / a single predictions file. Raises ``UserError`` when
    the k-fold run has no ``folds.json``."""
    from mccad.cli import UserError

    def predictions_of(source: Path, samples: list, tag: str):
        return _predictions_of(source, samples, args.device, out, tag, args.breast_gate, overrides, runtime)

    fold_preds = []
    if args.kfold is not None:
        folds_file = args.kfold / "folds.json"
        if not folds_file.is_file():
            raise UserError(f"{args.kfold} has no folds.json: train it with 'mccad train ... --folds k'")
        by_id = {s.image_id: s for s in truth}
        for name, ids in sorted(json.loads(folds_file.read_text()).items()):
            samples = [by_id[x] for x in ids if x in by_id]
            fold_preds.append((samples, *predictions_of(args.kfold / name, samples, f"_{name}")))
    elif args.predictions and len(args.predictions) > 1:
        for path in args.predictions:
            preds, op, name = predictions_of(path, truth, "")
            ids = {p.image_id for p in preds}
            fold_preds.append(([s for s in truth if s.image_id in ids], preds, op, name))
    else:
        source = args.model if args.model is not None else args.predictions[0]
        fold_preds.append((truth, *predictions_of(source, truth, "")))
    return fold_preds


def _pooled_metrics(args: argparse.Namespace, fold_preds: list, op, simulation: dict | None, out: Path) -> dict:
    """The metrics of every fold's predictions pooled at the operating point ``op``, the false-positive sheet
    (``--false-positives``) where boxes were scored, and the k-fold table when there are several folds."""
    from training.evaluation.evaluate import evaluate, evaluate_folds, join_predictions

    all_truth = [s for f in fold_preds for s in f[0]]
    all_preds = [p for f in fold_preds for p in f[1]]
    metrics = evaluate(all_truth, all_preds, op=op, n_boot=args.n_boot, simulation=simulation)
    if ("froc" in metrics or "normal_images" in metrics) and args.false_positives > 0:
        from training.evaluation.false_positive_sheet import write_false_positive_sheet

        sheet = write_false_positive_sheet(join_predictions(all_truth, all_preds), op.score_thresh,
                                           out / "false_positives.png", limit=args.false_positives)
        if sheet is not None:
            metrics["false_positive_sheet"] = sheet
    if len(fold_preds) > 1:
        per_fold = [evaluate(t, p, op=op, n_boot=0) for t, p, _, _ in fold_preds]
        metrics["kfold"] = evaluate_folds(per_fold)
    return metrics


def _evaluate(args: argparse.Namespace, settings, out: Path) -> tuple[dict, dict | None, tuple[str, str]]:
    """(metrics, the ``--compare`` comparison or None, the two models' names): the whole evaluation, before any
    report is written."""
    from mccad.cli import UserError
    from training.evaluation.evaluate import compare

    overrides = _detector_overrides(args)
    runtime = args.runtime or settings.detector_runtime
    if args.kfold is not None and len(args.truth) > 1:
        raise UserError("--kfold evaluates the annotation file the folds were made from: give one --data")
    truth, simulation = _read_truths(args.truth, args.format)
    fold_preds = _fold_predictions(args, truth, out, overrides, runtime)
    op = fold_preds[0][2]
    if args.score_thresh is not None:
        op = dataclasses.replace(op, score_thresh=args.score_thresh)
    metrics = _pooled_metrics(args, fold_preds, op, simulation, out)
    comparison, names = None, (fold_preds[0][3], "")
    if args.compare is not None:
        all_truth = [s for f in fold_preds for s in f[0]]
        all_preds = [p for f in fold_preds for p in f[1]]
        other, other_op, other_name = _predictions_of(args.compare, all_truth, args.device, out, "_compare",
                                                      args.breast_gate, overrides, runtime)
        # each model at its own operating point (--score-thresh sets the evaluated model's only)
        comparison = compare(all_truth, all_preds, other, op=op, op_b=other_op, n_boot=args.n_boot,
                             simulation=simulation)
        names = (fold_preds[0][3], other_name)
    return metrics, comparison, names


def _summary(metrics: dict, comparison: dict | None) -> dict:
    """The printed figures: per level n / accuracy / AUC, FROC sensitivities with intervals, false positives on
    normal images, the FROC difference of ``--compare`` and, for a simulated set, clusters found per subgroup."""
    printed: dict = {"levels": {lvl: {"n": b["n"], "accuracy": b["table"]["accuracy"], "auc": b["auc"]["auc"]}
                                for lvl, b in metrics["levels"].items()}}
    if "froc" in metrics and metrics["froc"]["all"]["n_lesions"]:  # sensitivity at each FP rate, with its interval
        curve = metrics["froc"]["all"]
        printed["froc_sensitivity"] = _with_intervals(curve["sensitivity_at_fp_per_image"], curve.get("ci"))
    if "normal_images" in metrics:  # boxes on images without lesions: every one a false positive
        fp = metrics["normal_images"]
        ci = fp["fp_per_image_ci95"]
        interval = f" ({ci[0]:.3f} to {ci[1]:.3f})" if ci[0] is not None else ""
        printed["normal_images"] = {
            "images": fp["images"], "women": fp["women"], "score_thresh": fp["score_thresh"],
            "fp_per_image": f"{fp['fp_per_image']:.3f}" + interval, "images_with_a_box": fp["images_with_a_box"]}
    if comparison and "froc" in comparison:
        printed["froc_difference"] = _with_intervals(comparison["froc"]["difference_at_fp_per_image"],
                                                     comparison["froc"])
    # a simulated set: clusters found at the operating point by pattern and, where recorded, by contrast-to-noise
    for key in ("by_pattern", "by_contrast_to_noise"):
        if key in metrics.get("subgroups", {}):
            printed[f"clusters_found_{key}"] = {name: f"{g['found']['operating_point']}/{g['clusters']}"
                                                for name, g in metrics["subgroups"][key].items()}
    # a set made at several pitches or acquisition sources (film, digital): the figures per acquisition
    for key in ("by_pixel_spacing", "by_acquisition", "by_pixel_spacing_and_acquisition"):
        groups = metrics.get("subgroups", {}).get(key, {})
        if len(groups) > 1:
            printed[f"froc_sensitivity_{key}"] = {name: row["sensitivity_at_fp_per_image"]
                                                  for name, row in groups.items()}
    return printed


def run(args: argparse.Namespace, settings) -> int:
    from mccad.cli import UserError
    from models.errors import RegistryError
    from models.onnx_runtime import RuntimeUnavailable
    from training.datasets.samples import DatasetError
    from training.evaluation.evaluate import EvaluationError
    from training.evaluation.report import write_report
    from training.trainers.common import TrainingError

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    try:
        metrics, comparison, names = _evaluate(args, settings, out)
    except (DatasetError, EvaluationError, TrainingError, FileNotFoundError, ValueError, RegistryError,
            RuntimeUnavailable) as exc:
        raise UserError(str(exc)) from exc
    metrics["command"] = "mccad " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = write_report(metrics, out, title=f"mccad evaluation: {names[0]}", model_name=names[0],
                          comparison=comparison, comparison_names=names)
    summary = _summary(metrics, comparison)
    printed: dict = {"report": str(report), "metrics": str(out / "metrics.json"), **summary}
    print(json.dumps(printed, indent=2, default=str))
    return 0
