"""The evaluation report: PNG figures (matplotlib, Agg backend: no display needed) and one HTML page.

Figures follow the paper's Fig. 5 (ROC curves and normalised confusion matrices per level) and add what a
clinical reviewer asks for beyond it: FROC for detection, calibration (reliability) curves, and the k-fold table
(Table 3 layout) when folds were evaluated.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from training.evaluation.evaluate import nan_to_none
from training.evaluation.metrics import TABLE_KEYS  # noqa: E402

TABLE_HEAD = ("Overall accuracy", "Precision benign", "Precision malignant", "Sensitivity benign",
              "Sensitivity malignant", "F1 benign", "F1 malignant")


def _num(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))


def plot_roc(metrics: dict[str, Any], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    for level, block in metrics["levels"].items():
        if not block["roc"]["fpr"]:
            continue
        a = block["auc"]
        ax.plot(block["roc"]["fpr"], block["roc"]["tpr"],
                label=f"{level} AUC {_num(a['auc'])} ({_num(a['ci_low'])}-{_num(a['ci_high'])})")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="chance")
    ax.set(xlabel="1 - specificity (false-positive rate)", ylabel="sensitivity", title=title, xlim=(0, 1),
           ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_confusion(block: dict[str, Any], path: Path, title: str) -> Path:
    cm = block["table"]["confusion_normalised"]
    counts = block["table"]["confusion"]
    fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=100)
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{cm[i][j]:.2f}\n(n={counts[i][j]})", ha="center", va="center",
                    color="white" if cm[i][j] > 0.5 else "black", fontsize=9)
    ax.set_xticks([0, 1], ["benign", "malignant"])
    ax.set_yticks([0, 1], ["benign", "malignant"])
    ax.set(xlabel="predicted", ylabel="truth", title=title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_froc(froc: dict[str, Any], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 4), dpi=100)
    for name in ("all", "malignant"):
        curve = froc[name]["curve"]
        colour = "C0" if name == "all" else "C3"
        if curve["fp_per_image"]:
            ax.step(curve["fp_per_image"], curve["sensitivity"], where="post", color=colour,
                    label=f"{name} lesions (n={froc[name]['n_lesions']})")
        rates = froc[name]["sensitivity_at_fp_per_image"]
        ax.plot([float(k) for k in rates], list(rates.values()), "o", ms=4, color=colour)
    ax.set_xscale("symlog", linthresh=0.25)
    ax.set(xlim=(0, 8), ylim=(0, 1.01), xlabel="false positives per image", ylabel="lesion sensitivity",
           title=title)
    ax.set_xticks([0.25, 0.5, 1, 2, 4, 8], ["0.25", "0.5", "1", "2", "4", "8"])
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_calibration(metrics: dict[str, Any], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
    for level, block in metrics["levels"].items():
        c = block["calibration"]
        if c["mean_predicted"]:
            ax.plot(c["mean_predicted"], c["fraction_positive"], "o-", ms=3,
                    label=f"{level} (Brier {_num(c['brier'])})")
    ax.set(xlabel="mean predicted P(malignant)", ylabel="fraction malignant", xlim=(0, 1), ylim=(0, 1.01),
           title=title)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_figures(metrics: dict[str, Any], out_dir: Path, prefix: str = "") -> dict[str, str]:
    """All PNG figures of one evaluation; returns figure name -> file name (relative to ``out_dir``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figs = {"roc": plot_roc(metrics, out_dir / f"{prefix}roc.png", "ROC").name,
            "calibration": plot_calibration(metrics, out_dir / f"{prefix}calibration.png", "Calibration").name}
    for level, block in metrics["levels"].items():
        if block["n"]:
            figs[f"confusion_{level}"] = plot_confusion(block, out_dir / f"{prefix}confusion_{level}.png",
                                                        f"{level} level (normalised)").name
    if "froc" in metrics:
        figs["froc"] = plot_froc(metrics["froc"], out_dir / f"{prefix}froc.png", "FROC").name
    if metrics.get("false_positive_sheet"):  # drawn from the images by training.evaluation.false_positive_sheet
        figs["false_positives"] = metrics["false_positive_sheet"]["file"]
    return figs


def _table2(metrics: dict[str, Any], model_name: str) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("Level", "Model", "n", *TABLE_HEAD, "AUC (95% CI)", "Unmatched"))
    rows = []
    for level, block in metrics["levels"].items():
        a = block["auc"]
        cells = [level, model_name, block["n"], *(block["row"][k] for k in TABLE_KEYS),
                 f"{_num(a['auc'])} ({_num(a['ci_low'])}-{_num(a['ci_high'])})", block.get("unmatched", 0)]
        rows.append("<tr>" + "".join(f"<td>{_num(c) if not isinstance(c, str) else html.escape(c)}</td>"
                                     for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _with_interval(value: float, interval: list[float] | None) -> str:
    return _num(value) + (f" ({_num(interval[0])} to {_num(interval[1])})" if interval else "")


def _froc_table(froc: dict[str, Any]) -> str:
    rates = list(froc["all"]["sensitivity_at_fp_per_image"])
    head = "".join(f"<th>{r} FP/image</th>" for r in rates)
    rows = []
    for name in ("all", "malignant"):
        vals = froc[name]["sensitivity_at_fp_per_image"]
        ci = froc[name].get("ci", {})
        cis = ci.get("sensitivity_ci_at_fp_per_image", {})
        rows.append(f"<tr><td>{name} (n={froc[name]['n_lesions']})</td>"
                    + "".join(f"<td>{_with_interval(vals[r], cis.get(r))}</td>" for r in rates)
                    + f"<td>{_with_interval(froc[name]['mean_sensitivity'], ci.get('mean_sensitivity_ci'))}</td></tr>")
    ci = froc["all"].get("ci")
    note = (f" In brackets: {round(100 * ci['level'])}% percentile bootstrap intervals, {ci['n_boot']} resamples of "
            f"{ci['n_groups']} groups of images (patients; for a simulated set, backgrounds)." if ci else "")
    return (f"<table><tr><th>lesions</th>{head}<th>mean</th></tr>{''.join(rows)}</table>"
            f"<p>A box finds a lesion at IoU &ge; {froc['hit_iou']}.{note}</p>")


def _froc_difference_table(froc: dict[str, Any], names: tuple[str, str]) -> str:
    rates = list(froc["difference_at_fp_per_image"])
    cis = froc["sensitivity_ci_at_fp_per_image"]
    share = froc.get("share_of_resamples_not_above", {})
    rows = "".join(f"<tr><td>{r}</td><td>{_with_interval(froc['difference_at_fp_per_image'][r], cis.get(r))}</td>"
                   f"<td>{_num(share.get(r))}</td></tr>" for r in rates)
    return (f"<table><tr><th>FP/image</th><th>sensitivity {html.escape(names[0])} - {html.escape(names[1])} "
            f"(95% CI)</th><th>share of resamples with no gain</th></tr>{rows}</table>"
            f"<p>Paired bootstrap: {froc['n_boot']} resamples of {froc['n_groups']} groups of images, the same images "
            "for both models.</p>")


def _kfold_table(folds: dict[str, Any], model_name: str) -> str:
    keys = list(TABLE_KEYS) + ["auc"]
    head = "".join(f"<th>{h}</th>" for h in ("Level", "Model", "Fold", *TABLE_HEAD, "AUC"))
    rows = []
    for level, table in folds.items():
        for i, row in enumerate(table["folds"], start=1):
            rows.append(f"<tr><td>{level}</td><td>{html.escape(model_name)}</td><td>{i}</td>"
                        + "".join(f"<td>{_num(row[k])}</td>" for k in keys) + "</tr>")
        for stat in ("mean", "sd"):
            rows.append(f"<tr class='stat'><td>{level}</td><td>{html.escape(model_name)}</td><td>{stat}</td>"
                        + "".join(f"<td>{_num(table[stat][k])}</td>" for k in keys) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _delong_table(comparison: dict[str, Any], names: tuple[str, str]) -> str:
    rows = "".join(
        f"<tr><td>{lvl}</td><td>{r['n']}</td><td>{_num(r['auc_a'])}</td><td>{_num(r['auc_b'])}</td>"
        f"<td>{_num(r['difference'])} ({_num(r['ci_low'])} to {_num(r['ci_high'])})</td><td>{_num(r['z'])}</td>"
        f"<td>{_num(r['p_value'])}</td></tr>" for lvl, r in comparison.items() if lvl != "froc")
    return (f"<table><tr><th>Level</th><th>n</th><th>AUC {html.escape(names[0])}</th>"
            f"<th>AUC {html.escape(names[1])}</th><th>difference (95% CI)</th><th>z</th><th>p (DeLong)</th></tr>"
            f"{rows}</table>")


CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px;text-align:right}th{background:#eee}
td:first-child,td:nth-child(2){text-align:left}tr.stat{font-weight:bold;background:#f6f6f6}
img{margin:4px;border:1px solid #ddd}.warn{color:#a00;font-weight:bold}"""


def write_report(metrics: dict[str, Any], out_dir: Path, *, title: str = "mccad evaluation",
                 model_name: str = "model", comparison: dict[str, Any] | None = None,
                 comparison_names: tuple[str, str] = ("A", "B"), warnings: list[str] | None = None) -> Path:
    """Write ``metrics.json``, the figures and ``report.html`` into ``out_dir``; returns the HTML path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figs = write_figures(metrics, out_dir)
    body = [f"<h1>{html.escape(title)}</h1>"]
    for w in warnings or []:
        body.append(f"<p class='warn'>{html.escape(w)}</p>")
    op = metrics.get("operating_point", {})
    body.append(f"<p>{metrics.get('n_images', '?')} images. Operating point: score threshold "
                f"{_num(op.get('score_thresh'))}, cross-class suppression {op.get('cross_class_suppression')} "
                f"(IoU {_num(op.get('cross_class_iou'))}). AUC intervals: percentile bootstrap by patient.</p>")
    body.append("<h2>Classification (Table 2 layout)</h2>" + _table2(metrics, model_name))
    body.append("<p>Breast level: CC and MLO fused by the paper's rule (section 2.7). Lesion level: each "
                "ground-truth lesion matched to the predicted box of highest IoU (&gt; 0); unmatched lesions are "
                "counted, not scored.</p>")
    if "froc" in metrics:
        body.append("<h2>Detection (FROC)</h2>" + _froc_table(metrics["froc"]))
    if comparison:
        body.append("<h2>Model comparison (DeLong)</h2>" + _delong_table(comparison, comparison_names))
        if "froc" in comparison:
            body.append("<h2>Model comparison (FROC)</h2>" + _froc_difference_table(comparison["froc"],
                                                                                   comparison_names))
    if metrics.get("kfold"):
        body.append(f"<h2>{len(next(iter(metrics['kfold'].values()))['folds'])}-fold cross-validation "
                    "(Table 3 layout)</h2>" + _kfold_table(metrics["kfold"], model_name))
    body.append("<h2>Figures</h2>" + "".join(f"<img src='{html.escape(f)}' alt='{html.escape(k)}' title='{k}'>"
                                            for k, f in figs.items()))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
    (out_dir / "metrics.json").write_text(json.dumps(nan_to_none({**metrics, "comparison": comparison,
                                                                 "figures": figs}), indent=1))
    path = out_dir / "report.html"
    path.write_text(page)
    return path
