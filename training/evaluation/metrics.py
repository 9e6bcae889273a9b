"""Classification metrics as the paper reports them (section 2.8, Tables 2-3), with confidence intervals.

- Table 2 layout: overall accuracy, and per class (benign, malignant) precision, sensitivity (recall) and F1, the
  quantities of scikit-learn's ``classification_report`` that the paper used.
- AUC with a 95% confidence interval by bootstrap over patients (images of one patient are not independent, so the
  patient is the unit resampled), and DeLong's test for two models scored on the same cases (DeLong, DeLong and
  Clarke-Pearson 1988, with the fast midrank algorithm of Sun and Xu 2014).
- Normalised confusion matrices (rows = truth, each row sums to 1, as the paper's Fig. 5 shows them).
- Calibration curve (reliability diagram bins) and the Brier score.
- The k-fold table (Table 3 layout): per fold rows plus mean and standard deviation.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CLASS_NAMES: tuple[str, str] = ("benign", "malignant")
TABLE_KEYS: tuple[str, ...] = (
    "accuracy", "precision_benign", "precision_malignant", "sensitivity_benign", "sensitivity_malignant",
    "f1_benign", "f1_malignant",
)


def _arrays(y_true: Sequence[int], y_score: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    yt = np.asarray(y_true, dtype=np.int64).reshape(-1)
    ys = np.asarray(y_score, dtype=np.float64).reshape(-1)
    if yt.shape != ys.shape:
        raise ValueError(f"{yt.size} labels but {ys.size} scores")
    if yt.size and not np.isin(yt, (0, 1)).all():
        raise ValueError("labels must be 0 (benign) or 1 (malignant)")
    return yt, ys


def binary_auc(y_true: Sequence[int], y_score: Sequence[float]) -> float:
    """Area under the ROC curve (ties count one half, as the Mann-Whitney statistic); NaN with one class only."""
    yt, ys = _arrays(y_true, y_score)
    n_pos, n_neg = int(yt.sum()), int((1 - yt).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(ys)
    return float((ranks[yt == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve_points(y_true: Sequence[int], y_score: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) of the ROC curve, from (0, 0) to (1, 1)."""
    from sklearn.metrics import roc_curve

    yt, ys = _arrays(y_true, y_score)
    if len(set(yt.tolist())) < 2:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    fpr, tpr, _ = roc_curve(yt, ys)
    return fpr, tpr


@dataclass
class ClassificationTable:
    """One row of the paper's Table 2 plus the counts behind it."""

    accuracy: float
    precision: dict[str, float]
    sensitivity: dict[str, float]
    f1: dict[str, float]
    support: dict[str, int]
    confusion: list[list[int]]  # rows truth (benign, malignant), columns prediction
    confusion_normalised: list[list[float]]

    def row(self) -> dict[str, float]:
        out = {"accuracy": self.accuracy}
        for name in CLASS_NAMES:
            out[f"precision_{name}"] = self.precision[name]
            out[f"sensitivity_{name}"] = self.sensitivity[name]
            out[f"f1_{name}"] = self.f1[name]
        return out

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "precision": self.precision, "sensitivity": self.sensitivity,
                "f1": self.f1, "support": self.support, "confusion": self.confusion,
                "confusion_normalised": self.confusion_normalised}


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


def classification_table(y_true: Sequence[int], y_pred: Sequence[int]) -> ClassificationTable:
    """Accuracy and per-class precision, sensitivity, F1 from hard labels (0 benign, 1 malignant).

    A class never predicted has precision 0 (scikit-learn's ``zero_division=0``); with no cases of a class its
    sensitivity is 0 as well.
    """
    yt = np.asarray(y_true, dtype=np.int64).reshape(-1)
    yp = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if yt.shape != yp.shape:
        raise ValueError(f"{yt.size} labels but {yp.size} predictions")
    cm = np.zeros((2, 2), dtype=np.int64)
    for t, p in zip(yt, yp, strict=True):
        cm[int(t), int(p)] += 1
    precision, sensitivity, f1, support = {}, {}, {}, {}
    for k, name in enumerate(CLASS_NAMES):
        tp = cm[k, k]
        p = _ratio(tp, cm[:, k].sum())
        r = _ratio(tp, cm[k, :].sum())
        precision[name], sensitivity[name] = p, r
        f1[name] = _ratio(2 * p * r, p + r)
        support[name] = int(cm[k, :].sum())
    rows = cm.sum(axis=1, keepdims=True)
    normalised = np.divide(cm, rows, out=np.zeros((2, 2), dtype=np.float64), where=rows > 0)
    return ClassificationTable(accuracy=_ratio(np.trace(cm), cm.sum()), precision=precision,
                               sensitivity=sensitivity, f1=f1, support=support, confusion=cm.tolist(),
                               confusion_normalised=normalised.tolist())


@dataclass
class AucInterval:
    auc: float
    low: float
    high: float
    n_boot: int
    level: float = 0.95

    def to_dict(self) -> dict:
        return {"auc": self.auc, "ci_low": self.low, "ci_high": self.high, "n_boot": self.n_boot,
                "level": self.level}


def bootstrap_auc(y_true: Sequence[int], y_score: Sequence[float], groups: Sequence[str] | None = None,
                  n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> AucInterval:
    """AUC with a percentile bootstrap interval, resampling whole ``groups`` (patients) with replacement.

    Resamples that hold only one class are skipped (their AUC is undefined); ``n_boot`` reports how many counted.
    """
    yt, ys = _arrays(y_true, y_score)
    auc = binary_auc(yt, ys)
    if math.isnan(auc):
        return AucInterval(auc, float("nan"), float("nan"), 0, level)
    keys = np.asarray(groups if groups is not None else np.arange(yt.size)).astype(str)
    uniq, inverse = np.unique(keys, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(uniq), len(uniq))
        idx = np.concatenate([members[g] for g in pick])
        value = binary_auc(yt[idx], ys[idx])
        if not math.isnan(value):
            values.append(value)
    if not values:
        return AucInterval(auc, float("nan"), float("nan"), 0, level)
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return AucInterval(auc, float(low), float(high), len(values), level)


def _midrank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    n = len(x)
    ranks = np.zeros(n, dtype=np.float64)
    i = 0
    while i < n:
        j = i
        while j < n and sorted_x[j] == sorted_x[i]:
            j += 1
        ranks[i:j] = 0.5 * (i + j - 1) + 1
        i = j
    out = np.empty(n, dtype=np.float64)
    out[order] = ranks
    return out


@dataclass
class DelongResult:
    auc_a: float
    auc_b: float
    difference: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def delong_test(y_true: Sequence[int], score_a: Sequence[float], score_b: Sequence[float]) -> DelongResult:
    """DeLong's test of two correlated AUCs on the same cases; two-sided p-value and 95% CI of the difference."""
    yt, sa = _arrays(y_true, score_a)
    _, sb = _arrays(y_true, score_b)
    pos, neg = yt == 1, yt == 0
    m, n = int(pos.sum()), int(neg.sum())
    if m == 0 or n == 0:
        raise ValueError("DeLong's test needs both benign and malignant cases")
    v10, v01, aucs = [], [], []
    for s in (sa, sb):
        x, y = s[pos], s[neg]
        tx, ty, tz = _midrank(x), _midrank(y), _midrank(np.concatenate([x, y]))
        auc = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
        v10.append((tz[:m] - tx) / n)
        v01.append(1.0 - (tz[m:] - ty) / m)
        aucs.append(auc)
    s10 = np.cov(np.vstack(v10)) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(np.vstack(v01)) if n > 1 else np.zeros((2, 2))
    cov = s10 / m + s01 / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = float(aucs[0] - aucs[1])
    if var <= 0:
        z = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        p = 1.0 if diff == 0 else 0.0
        half = 0.0
    else:
        z = diff / math.sqrt(var)
        p = float(2 * stats.norm.sf(abs(z)))
        half = 1.959963984540054 * math.sqrt(var)
    return DelongResult(float(aucs[0]), float(aucs[1]), diff, float(z), p, diff - half, diff + half)


@dataclass
class CalibrationCurve:
    bin_edges: list[float]
    mean_predicted: list[float]
    fraction_positive: list[float]
    counts: list[int]
    brier: float
    expected_calibration_error: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def calibration_curve(y_true: Sequence[int], y_score: Sequence[float], n_bins: int = 10) -> CalibrationCurve:
    """Equal-width reliability bins over [0, 1] (empty bins omitted, as scikit-learn's ``calibration_curve``),
    the Brier score and the expected calibration error."""
    yt, ys = _arrays(y_true, y_score)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.searchsorted(edges[1:-1], ys)  # scikit-learn's binning: a value on an edge goes to the lower bin
    mean_pred, frac_pos, counts = [], [], []
    ece = 0.0
    for b in range(n_bins):
        sel = which == b
        if not sel.any():
            continue
        mean_pred.append(float(ys[sel].mean()))
        frac_pos.append(float(yt[sel].mean()))
        counts.append(int(sel.sum()))
        ece += sel.sum() / max(yt.size, 1) * abs(ys[sel].mean() - yt[sel].mean())
    brier = float(np.mean((ys - yt) ** 2)) if yt.size else float("nan")
    return CalibrationCurve(edges.tolist(), mean_pred, frac_pos, counts, brier, float(ece))


def kfold_table(fold_rows: Sequence[dict[str, float]], keys: Sequence[str] = TABLE_KEYS + ("auc",)) -> dict:
    """Table 3 layout: one row per fold, then the mean and the sample standard deviation (ddof=1) of each column."""
    rows = [{k: float(r.get(k, float("nan"))) for k in keys} for r in fold_rows]
    mean, sd = {}, {}
    for k in keys:
        values = np.asarray([r[k] for r in rows], dtype=np.float64)
        mean[k] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        sd[k] = float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else float("nan")
    return {"folds": rows, "mean": mean, "sd": sd, "keys": list(keys)}
