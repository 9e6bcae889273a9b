"""Metric code against scikit-learn, against a brute-force DeLong, and on hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve as sk_calibration

from training.evaluation.froc import FrocImage, froc
from training.evaluation.metrics import (
    binary_auc,
    bootstrap_auc,
    calibration_curve,
    classification_table,
    delong_test,
    kfold_table,
)


def test_classification_table_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.where(rng.random(300) < 0.7, y, 1 - y)
    t = classification_table(y, p)
    prec, rec, f1, support = skm.precision_recall_fscore_support(y, p, labels=[0, 1], zero_division=0)
    assert t.accuracy == pytest.approx(skm.accuracy_score(y, p))
    assert [t.precision["benign"], t.precision["malignant"]] == pytest.approx(prec)
    assert [t.sensitivity["benign"], t.sensitivity["malignant"]] == pytest.approx(rec)
    assert [t.f1["benign"], t.f1["malignant"]] == pytest.approx(f1)
    assert [t.support["benign"], t.support["malignant"]] == list(support)
    assert t.confusion == skm.confusion_matrix(y, p).tolist()
    assert np.allclose(t.confusion_normalised, skm.confusion_matrix(y, p, normalize="true"))


def test_classification_table_by_hand():
    # truth: 3 benign, 2 malignant; predictions: one benign called malignant
    t = classification_table([0, 0, 0, 1, 1], [0, 0, 1, 1, 1])
    assert t.accuracy == pytest.approx(0.8)
    assert t.precision["malignant"] == pytest.approx(2 / 3) and t.sensitivity["malignant"] == 1.0
    assert t.precision["benign"] == 1.0 and t.sensitivity["benign"] == pytest.approx(2 / 3)
    assert t.f1["malignant"] == pytest.approx(0.8)
    assert t.confusion_normalised == [[pytest.approx(2 / 3), pytest.approx(1 / 3)], [0.0, 1.0]]


def test_auc_matches_sklearn_including_ties():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * y, 1)  # rounding makes many ties
    assert binary_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s))
    assert np.isnan(binary_auc([1, 1], [0.2, 0.3]))
    assert binary_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_bootstrap_interval_resamples_patients():
    perfect = bootstrap_auc([0, 0, 1, 1, 0, 1], [0.1, 0.2, 0.8, 0.9, 0.3, 0.7], groups=list("aabbcc"), n_boot=200)
    assert (perfect.auc, perfect.low, perfect.high) == (1.0, 1.0, 1.0)
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    s = rng.random(400) + 0.5 * y
    ci = bootstrap_auc(y, s, groups=[f"p{i // 4}" for i in range(400)], n_boot=300, seed=1)
    assert ci.low < ci.auc < ci.high and ci.high - ci.low < 0.2 and ci.n_boot == 300


def _delong_brute_force(y, a, b):
    """DeLong et al. 1988 straight from the definition (psi kernel), to check the midrank algorithm."""
    y = np.asarray(y)
    v10, v01, aucs = [], [], []
    for s in (np.asarray(a), np.asarray(b)):
        x, z = s[y == 1], s[y == 0]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        aucs.append(psi.mean())
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    cov = np.cov(np.vstack(v10)) / len(v10[0]) + np.cov(np.vstack(v01)) / len(v01[0])
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    return aucs[0] - aucs[1], (aucs[0] - aucs[1]) / np.sqrt(var)


def test_delong_matches_the_definition_and_is_antisymmetric():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 120)
    a = np.round(rng.random(120) + 0.8 * y, 2)
    b = np.round(rng.random(120) + 0.3 * y, 2)
    result = delong_test(y, a, b)
    diff, z = _delong_brute_force(y, a, b)
    assert result.difference == pytest.approx(diff) and result.z == pytest.approx(z)
    assert result.auc_a == pytest.approx(skm.roc_auc_score(y, a))
    assert result.p_value < 0.05 and result.ci_low > 0
    swapped = delong_test(y, b, a)
    assert swapped.z == pytest.approx(-result.z) and swapped.p_value == pytest.approx(result.p_value)
    same = delong_test(y, a, a)
    assert same.difference == 0 and same.p_value == 1.0


def test_calibration_matches_sklearn():
    rng = np.random.default_rng(5)
    p = np.round(rng.random(500), 2)  # values on bin edges included
    y = (rng.random(500) < p).astype(int)
    c = calibration_curve(y, p, n_bins=10)
    prob_true, prob_pred = sk_calibration(y, p, n_bins=10)
    assert c.fraction_positive == pytest.approx(prob_true.tolist())
    assert c.mean_predicted == pytest.approx(prob_pred.tolist())
    assert c.brier == pytest.approx(skm.brier_score_loss(y, p))


def test_kfold_table_mean_and_sd():
    rows = [{"accuracy": 0.6, "auc": 0.7}, {"accuracy": 0.8, "auc": 0.9}, {"accuracy": 0.7, "auc": 0.8}]
    t = kfold_table(rows, keys=("accuracy", "auc"))
    assert t["mean"]["accuracy"] == pytest.approx(0.7) and t["sd"]["accuracy"] == pytest.approx(0.1)
    assert t["mean"]["auc"] == pytest.approx(0.8) and len(t["folds"]) == 3


def test_froc_by_hand():
    # image 1: two lesions; a hit at 0.9, a false positive at 0.8, the second lesion hit at 0.3
    # image 2: no lesion; false positives at 0.6 and 0.2
    img1 = FrocImage(gt_boxes=np.array([[0, 0, 10, 10], [50, 50, 60, 60]]),
                     pred_boxes=np.array([[1, 1, 10, 10], [100, 100, 110, 110], [50, 50, 61, 61]]),
                     pred_scores=np.array([0.9, 0.8, 0.3]))
    img2 = FrocImage(gt_boxes=np.zeros((0, 4)), pred_boxes=np.array([[0, 0, 5, 5], [20, 20, 30, 30]]),
                     pred_scores=np.array([0.6, 0.2]))
    curve = froc([img1, img2])
    # thresholds 0.9: sens .5 fp 0; 0.8: .5, .5; 0.6: .5, 1; 0.3: 1, 1; 0.2: 1, 1.5
    assert curve.at_rates == {0.25: 0.5, 0.5: 0.5, 1.0: 1.0, 2.0: 1.0, 4.0: 1.0}
    assert curve.n_lesions == 2 and curve.n_images == 2
    # the operating threshold of each rate: the lowest one within it (0.3 holds 1 FP per image, 0.2 holds 1.5)
    assert curve.threshold_at(1.0) == pytest.approx(0.3) and curve.threshold_at(0.5) == pytest.approx(0.8)
    assert curve.threshold_at(0.25) == pytest.approx(0.9)
    assert curve.to_dict()["threshold_at_fp_per_image"]["1.0"] == pytest.approx(0.3)
    many = FrocImage(gt_boxes=np.zeros((0, 4)), pred_boxes=np.array([[0, 0, 5, 5]]), pred_scores=np.array([0.9]))
    assert froc([many]).threshold_at(0.5) is None  # even the highest threshold makes 1 FP per image
    # a duplicate box on a found lesion is not a false positive
    dup = FrocImage(gt_boxes=np.array([[0, 0, 10, 10]]), pred_boxes=np.array([[0, 0, 10, 10], [0, 0, 9, 9]]),
                    pred_scores=np.array([0.9, 0.5]))
    assert froc([dup]).at_rates[0.25] == 1.0 and froc([dup]).fp_per_image.max() == 0
