"""Fit the descriptors -> P(malignant) mapping on the CBIS-DDSM calcification tables and check it on the test table.

``python -m training.descriptor_malignancy --tables ../shared/data/cbis-ddsm-csv --out
models/weights/descriptor-malignancy.json`` fits a Bayesian logistic regression with partial pooling over
calcification type, distribution and their combination (Laplace approximation; prior scales by the training table's
marginal likelihood), writes the cell logits' posterior mean and covariance for ``models.descriptors``, and prints
the test table's figures against the naive table rates. The model and its rule: docs/experiments/
descriptor-malignancy-mapping.md.
"""
from __future__ import annotations

import argparse
import itertools
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.descriptors import CALCIFICATION_TYPES, DEFAULT_MAPPING_PATH, DISTRIBUTION_TERMS, DISTRIBUTIONS, TYPE_TERMS
from training.datasets.cbis_ddsm import CbisFinding, read_table
from training.evaluation.metrics import bootstrap_auc

UNSPECIFIED = "unspecified"
#: CBIS-DDSM types the simulator does not draw: levels of the fit, never predicted.
EXTRA_TYPES = {"VASCULAR": "vascular", "DYSTROPHIC": "dystrophic", "LARGE_RODLIKE": "large_rod_like", "SKIN": "skin"}
#: Our type keys whose concept another key already stands for in the table.
SAME_CONCEPT = {"diffuse": "round"}
SOURCE = ("CBIS-DDSM calcification description tables (R. S. Lee et al., Scientific Data 4 (2017) 170177; TCIA), "
          "CC BY 3.0")
GRID_TYPE = (0.5, 1.0, 2.0, 4.0, 8.0)
GRID_DISTRIBUTION = (0.5, 1.0, 2.0, 4.0)
GRID_INTERACTION = (0.1, 0.25, 0.5, 1.0, 2.0)
INTERCEPT_SCALE = 2.5
RELIABILITY_BINS = (0.0, 0.1, 0.3, 0.5, 0.7, 1.0)
LOGLOSS_CLIP = 1e-3


def _type_spellings() -> dict[str, str]:
    out = {spelling: SAME_CONCEPT.get(key, key) for key, term in TYPE_TERMS.items() for spelling in term.cbis}
    return {**out, **EXTRA_TYPES}


TYPE_LEVELS: tuple[str, ...] = tuple(dict.fromkeys(
    [SAME_CONCEPT.get(k, k) for k in CALCIFICATION_TYPES] + list(EXTRA_TYPES.values()) + [UNSPECIFIED]))
DISTRIBUTION_LEVELS: tuple[str, ...] = (*DISTRIBUTIONS, UNSPECIFIED)
_TYPE_OF = _type_spellings()
_DISTRIBUTION_OF = {spelling: key for key, term in DISTRIBUTION_TERMS.items() for spelling in term.cbis}


def levels_of(text: str | None, spellings: dict[str, str]) -> list[str]:
    """The fit levels a table cell names ("PUNCTATE-PLEOMORPHIC" -> two levels; None / NA -> unspecified)."""
    if text is None:
        return [UNSPECIFIED]
    out = []
    for token in text.upper().split("-"):
        if token not in spellings:
            raise ValueError(f"unknown CBIS-DDSM spelling {token!r} in {text!r}")
        out.append(spellings[token])
    return out


@dataclass(frozen=True)
class Design:
    """Column layout: intercept, type levels, distribution levels, every (type, distribution) pair."""

    n_types: int = len(TYPE_LEVELS)
    n_dists: int = len(DISTRIBUTION_LEVELS)

    @property
    def size(self) -> int:
        return 1 + self.n_types + self.n_dists + self.n_types * self.n_dists

    def row(self, types: Sequence[str], dists: Sequence[str]) -> np.ndarray:
        x = np.zeros(self.size)
        x[0] = 1.0
        for t in types:
            x[1 + TYPE_LEVELS.index(t)] += 1.0 / len(types)
        for d in dists:
            x[1 + self.n_types + DISTRIBUTION_LEVELS.index(d)] += 1.0 / len(dists)
        base = 1 + self.n_types + self.n_dists
        share = 1.0 / (len(types) * len(dists))
        for t, d in itertools.product(types, dists):
            x[base + TYPE_LEVELS.index(t) * self.n_dists + DISTRIBUTION_LEVELS.index(d)] += share
        return x

    def prior_precision(self, s_type: float, s_dist: float, s_inter: float) -> np.ndarray:
        return np.concatenate([[INTERCEPT_SCALE ** -2], np.full(self.n_types, s_type ** -2),
                               np.full(self.n_dists, s_dist ** -2),
                               np.full(self.n_types * self.n_dists, s_inter ** -2)])


def design_matrix(findings: Sequence[CbisFinding], design: Design = Design()) -> tuple[np.ndarray, np.ndarray]:
    x = np.stack([design.row(levels_of(f.calc_type, _TYPE_OF), levels_of(f.distribution, _DISTRIBUTION_OF))
                  for f in findings])
    y = np.array([1.0 if f.label == "malignant" else 0.0 for f in findings])
    return x, y


@dataclass
class Fit:
    mean: np.ndarray
    cov: np.ndarray
    log_evidence: float
    scales: tuple[float, float, float]


def laplace_fit(x: np.ndarray, y: np.ndarray, precision: np.ndarray, iterations: int = 100) -> Fit:
    """MAP of the penalised logistic likelihood by Newton's method, its inverse Hessian and the Laplace evidence."""
    theta = np.zeros(x.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ theta)))
        grad = x.T @ (y - p) - precision * theta
        hessian = (x.T * (p * (1 - p))) @ x + np.diag(precision)
        step = np.linalg.solve(hessian, grad)
        theta += step
        if np.max(np.abs(step)) < 1e-10:
            break
    eta = x @ theta
    p = 1.0 / (1.0 + np.exp(-eta))
    hessian = (x.T * (p * (1 - p))) @ x + np.diag(precision)
    loglik = float(np.sum(y * eta - np.logaddexp(0.0, eta)))
    _, logdet_h = np.linalg.slogdet(hessian)
    evidence = loglik - 0.5 * float(theta @ (precision * theta)) + 0.5 * float(np.sum(np.log(precision))) \
        - 0.5 * logdet_h
    return Fit(theta, np.linalg.inv(hessian), evidence, (0.0, 0.0, 0.0))


def choose_fit(x: np.ndarray, y: np.ndarray, design: Design = Design()) -> tuple[Fit, list[dict]]:
    """The grid's fit of highest Laplace evidence, and every grid point's evidence."""
    best, table = None, []
    for scales in itertools.product(GRID_TYPE, GRID_DISTRIBUTION, GRID_INTERACTION):
        fit = laplace_fit(x, y, design.prior_precision(*scales))
        fit.scales = scales
        table.append({"scales": scales, "log_evidence": fit.log_evidence})
        if best is None or fit.log_evidence > best.log_evidence:
            best = fit
    return best, table


def product_cells(design: Design = Design()) -> np.ndarray:
    """Rows of the design for every (type, distribution) cell the product reports, CALCIFICATION_TYPES major."""
    return np.stack([design.row([SAME_CONCEPT.get(t, t)], [d]) for t in CALCIFICATION_TYPES for d in DISTRIBUTIONS])


def posterior_mean_probability(x: np.ndarray, fit: Fit, draws: int = 4000, seed: int = 0) -> np.ndarray:
    mean = x @ fit.mean
    sd = np.sqrt(np.einsum("ij,jk,ik->i", x, fit.cov, x))
    z = np.random.default_rng(seed).standard_normal(draws)
    return (1.0 / (1.0 + np.exp(-(mean[:, None] + sd[:, None] * z[None])))).mean(axis=1)


def naive_rates(train: Sequence[CbisFinding], test: Sequence[CbisFinding]) -> np.ndarray:
    """The training table's malignant rate of each test finding's exact (type, distribution) spelling, else its
    type's, else the overall rate."""
    pair, by_type = defaultdict(list), defaultdict(list)
    for f in train:
        y = 1.0 if f.label == "malignant" else 0.0
        pair[(f.calc_type, f.distribution)].append(y)
        by_type[f.calc_type].append(y)
    overall = float(np.mean([1.0 if f.label == "malignant" else 0.0 for f in train]))
    out = []
    for f in test:
        values = pair.get((f.calc_type, f.distribution)) or by_type.get(f.calc_type)
        out.append(float(np.mean(values)) if values else overall)
    return np.array(out)


def scores(y: np.ndarray, p: np.ndarray, groups: Sequence[str], n_boot: int = 2000) -> dict:
    auc = bootstrap_auc(y.astype(int), p, groups, n_boot=n_boot, seed=0)
    clipped = np.clip(p, LOGLOSS_CLIP, 1 - LOGLOSS_CLIP)
    reliability = []
    for low, high in zip(RELIABILITY_BINS[:-1], RELIABILITY_BINS[1:], strict=True):
        inside = (p >= low) & ((p < high) if high < 1.0 else (p <= high))
        reliability.append({"bin": [low, high], "n": int(inside.sum()),
                            "mean_predicted": float(p[inside].mean()) if inside.any() else None,
                            "observed": float(y[inside].mean()) if inside.any() else None})
    return {"auc": auc.to_dict(), "brier": float(np.mean((p - y) ** 2)),
            "log_loss": float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))),
            "reliability": reliability}


def _markdown(name: str, result: dict) -> list[str]:
    auc = result["auc"]
    lines = [f"**{name}**: AUC {auc['auc']:.3f} ({auc['ci_low']:.3f}-{auc['ci_high']:.3f}), Brier "
             f"{result['brier']:.4f}, log loss {result['log_loss']:.4f}", "",
             "| predicted P | findings | mean predicted | observed |", "|---|---|---|---|"]
    for row in result["reliability"]:
        mp = "-" if row["mean_predicted"] is None else f"{row['mean_predicted']:.3f}"
        ob = "-" if row["observed"] is None else f"{row['observed']:.3f}"
        lines.append(f"| {row['bin'][0]:.1f}-{row['bin'][1]:.1f} | {row['n']} | {mp} | {ob} |")
    return lines + [""]


def cell_table(mean: np.ndarray, cov: np.ndarray) -> list[str]:
    from models.descriptors import MalignancyMapping
    mapping = MalignancyMapping(mean, cov)
    lines = ["| type \\ distribution | " + " | ".join(DISTRIBUTIONS) + " |", "|---" * (len(DISTRIBUTIONS) + 1) + "|"]
    for t in CALCIFICATION_TYPES:
        cells = []
        for d in DISTRIBUTIONS:
            e = mapping.cell(t, d)
            cells.append(f"{e.probability:.2f} ({e.low:.2f}-{e.high:.2f})")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return lines


def fit_mapping(train: Sequence[CbisFinding], test: Sequence[CbisFinding],
                n_boot: int = 2000) -> tuple[dict, list[str]]:
    """The mapping file's content and the report's markdown lines."""
    x, y = design_matrix(train)
    fit, grid = choose_fit(x, y)
    a = product_cells()
    cell_mean, cell_cov = a @ fit.mean, a @ fit.cov @ a.T
    xt, yt = design_matrix(test)
    groups = [f.patient_id for f in test]
    model = scores(yt, posterior_mean_probability(xt, fit), groups, n_boot)
    naive = scores(yt, naive_rates(train, test), groups, n_boot)
    mapping = {
        "source": SOURCE, "fitted_on": "calc_case_description_train_set.csv",
        "findings": len(train), "malignant": int(y.sum()),
        "model": "logit P = a + b[type] + c[distribution] + g[type, distribution], Gaussian priors, Laplace",
        "prior_scales": {"type": fit.scales[0], "distribution": fit.scales[1], "interaction": fit.scales[2],
                         "intercept": INTERCEPT_SCALE},
        "log_evidence": round(fit.log_evidence, 4),
        "types": list(CALCIFICATION_TYPES), "distributions": list(DISTRIBUTIONS),
        "logit_mean": [round(float(v), 6) for v in cell_mean],
        "logit_cov": [[float(f"{v:.6g}") for v in row] for row in cell_cov],
        "test": {"findings": len(test), "model": model, "naive_table": naive},
    }
    counts = Counter(f"{f.calc_type}|{f.distribution}" for f in train)
    lines = [f"Training table: {len(train)} findings ({int(y.sum())} malignant), {len(counts)} distinct (type, "
             f"distribution) spellings. Prior scales chosen (type, distribution, interaction): {fit.scales}, "
             f"log evidence {fit.log_evidence:.2f} (grid of {len(grid)}).", "",
             f"Test table: {len(test)} findings ({int(yt.sum())} malignant).", "",
             *_markdown("Mapping (posterior mean)", model), *_markdown("Naive table rates", naive),
             "P(malignant | type, distribution), posterior mean (95 % interval):", "",
             *cell_table(np.array(mapping["logit_mean"]), np.array(mapping["logit_cov"]))]
    return mapping, lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.descriptor_malignancy", description=__doc__)
    parser.add_argument("--tables", type=Path, required=True, help="folder with the two CBIS-DDSM calc tables")
    parser.add_argument("--out", type=Path, default=DEFAULT_MAPPING_PATH)
    parser.add_argument("--boot", type=int, default=2000, help="bootstrap resamples of the test AUC's interval")
    args = parser.parse_args(argv)
    train = read_table(args.tables / "calc_case_description_train_set.csv")
    test = read_table(args.tables / "calc_case_description_test_set.csv")
    mapping, lines = fit_mapping(train, test, args.boot)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(mapping, indent=1) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
