"""FROC bootstrap intervals: they hold the point estimate, resample whole groups of images (a background's repeated
false positives move together), and a paired comparison draws the same images for both models."""
from __future__ import annotations

import numpy as np
import pytest

from training.datasets.samples import Lesion, Sample
from training.evaluation.evaluate import ImagePrediction, compare, evaluate
from training.evaluation.froc import FP_RATES, FrocImage, froc, froc_bootstrap
from training.evaluation.subgroups import resampling_group

LESION = [10.0, 10.0, 30.0, 30.0]
ELSEWHERE = [60.0, 60.0, 80.0, 80.0]


def _image(found: float | None, false: float | None) -> FrocImage:
    """One lesion, hit by a box of score ``found`` (None: missed), and a false box of score ``false`` (None: none)."""
    boxes, scores = [], []
    if found is not None:
        boxes.append(LESION)
        scores.append(found)
    if false is not None:
        boxes.append(ELSEWHERE)
        scores.append(false)
    return FrocImage(gt_boxes=np.asarray([LESION]), pred_boxes=np.asarray(boxes).reshape(-1, 4),
                     pred_scores=np.asarray(scores))


def _mixed(n: int = 40, seed: int = 0) -> list[FrocImage]:
    rng = np.random.default_rng(seed)
    return [_image(float(rng.random()) if rng.random() < 0.8 else None,
                   float(rng.random()) if rng.random() < 0.7 else None) for _ in range(n)]


def test_intervals_hold_the_point_estimate_and_repeat_with_the_seed():
    images = _mixed()
    point = froc(images).at_rates
    interval = froc_bootstrap(images, n_boot=300, seed=1)
    assert interval.n_boot == 300 and interval.n_groups == len(images)
    for rate in FP_RATES:
        low, high = interval.at_rates[rate]
        assert 0.0 <= low <= point[rate] <= high <= 1.0
    assert low < high  # 40 varied images: the interval is not a point
    assert froc_bootstrap(images, n_boot=300, seed=1) == interval
    assert froc_bootstrap(images, n_boot=300, seed=2) != interval
    saved = interval.to_dict()
    assert saved["sensitivity_ci_at_fp_per_image"]["1.0"] == list(interval.at_rates[1.0])
    assert "share_of_resamples_not_above" not in saved


def test_whole_groups_are_resampled():
    """Two backgrounds of ten images each: on one every lesion is found and nothing else boxed, on the other every
    lesion is missed and one false box is drawn. Image by image, a resample keeps about half of each; background by
    background, a quarter of the resamples hold only the second background (sensitivity 0) and a quarter only the
    first (sensitivity 1)."""
    images = [_image(0.9, None) for _ in range(10)] + [_image(None, 0.95) for _ in range(10)]
    groups = ["real 4"] * 10 + ["real 5"] * 10
    by_image = froc_bootstrap(images, n_boot=400, seed=0)
    by_group = froc_bootstrap(images, groups, n_boot=400, seed=0)
    assert by_group.n_groups == 2
    assert by_group.at_rates[1.0] == (0.0, 1.0)
    low, high = by_image.at_rates[1.0]
    assert 0.2 < low < 0.5 < high < 0.8
    with pytest.raises(ValueError, match="group keys"):
        froc_bootstrap(images, groups[:5], n_boot=10)


def test_paired_difference():
    images = _mixed()
    same = froc_bootstrap(images, compare_to=images, n_boot=100)
    assert all(v == (0.0, 0.0) for v in same.at_rates.values()) and same.share_not_above[1.0] == 1.0
    # B misses the lesion of the first ten images that A finds; everything else is the same
    worse = [_image(None, img.pred_scores[1] if len(img.pred_scores) == 2 else None) if k < 10 else img
             for k, img in enumerate(_mixed())]
    better = [_image(0.99, None) if k < 10 else img for k, img in enumerate(_mixed())]
    gain = froc_bootstrap(better, compare_to=worse, n_boot=200)
    assert gain.at_rates[4.0][0] > 0 and gain.share_not_above[4.0] == 0.0
    assert "share_of_resamples_not_above" in gain.to_dict()
    with pytest.raises(ValueError, match="same images"):
        froc_bootstrap(images, compare_to=images[:-1], n_boot=10)


def test_no_resamples_no_interval():
    interval = froc_bootstrap(_mixed(), n_boot=0)
    assert interval.n_boot == 0 and all(np.isnan(v).all() for v in interval.at_rates.values())


def _sample(k: int) -> Sample:
    return Sample(image_id=f"images/{k:06d}.png", source=None, patient_id=f"SIM-{k}", breast="L", view="CC",
                  lesions=(Lesion(box=tuple(LESION), label="malignant"),))


def test_simulated_images_are_grouped_by_background_and_others_by_patient():
    records = {"images/000000.png": {"source": "real", "real_index": 5},
               "images/000001.png": {"source": "real", "real_index": 5, "flipped": True},
               "images/000002.png": {"source": "phantom", "phantom_patient": 77}}
    groups = [resampling_group(_sample(k), records) for k in range(4)]
    assert groups == ["real 5", "real 5", "phantom 77", "patient SIM-3"]
    assert resampling_group(_sample(0), None) == "patient SIM-0"


def test_evaluate_and_compare_report_froc_intervals_over_backgrounds(tmp_path):
    truth = [_sample(k) for k in range(12)]
    records = {s.image_id: {"source": "real", "real_index": k % 2} for k, s in enumerate(truth)}
    finds = [ImagePrediction(s.image_id, np.asarray([LESION]), ["malignant"], np.asarray([0.9])) for s in truth]
    misses = [ImagePrediction(s.image_id, np.asarray([ELSEWHERE]), ["malignant"], np.asarray([0.9]))
              if k % 2 else p for k, (s, p) in enumerate(zip(truth, finds, strict=True))]
    metrics = evaluate(truth, misses, n_boot=200, simulation=records)
    ci = metrics["froc"]["all"]["ci"]
    assert ci["n_groups"] == 2  # two backgrounds, not twelve images
    assert ci["sensitivity_ci_at_fp_per_image"]["1.0"] == [0.0, 1.0]
    assert "ci" in metrics["froc"]["malignant"]
    assert "ci" not in evaluate(truth, misses, n_boot=0)["froc"]["all"]
    comparison = compare(truth, finds, misses, n_boot=200, simulation=records)["froc"]
    assert comparison["difference_at_fp_per_image"]["1.0"] == pytest.approx(0.5)
    assert comparison["n_groups"] == 2 and comparison["sensitivity_ci_at_fp_per_image"]["1.0"][0] >= 0.0
    from training.evaluation.report import write_report

    page = write_report(metrics, tmp_path, comparison=compare(truth, finds, misses, n_boot=50, simulation=records),
                        comparison_names=("finds", "misses")).read_text()
    assert "bootstrap intervals, 200 resamples of 2 groups" in page and "(0.0000 to 1.0000)" in page
    assert "Model comparison (FROC)" in page and "sensitivity finds - misses" in page
