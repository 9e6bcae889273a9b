"""Evaluation at image, breast and lesion level: a perfect and a random predictor give the expected numbers, the
paper's breast rule and lesion matching are applied case by case, and the report and CLI write their files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mccad.cli import main
from training.datasets.samples import Lesion, Sample
from training.evaluation.evaluate import (
    EvaluationError,
    ImagePrediction,
    OperatingPoint,
    compare,
    evaluate,
    evaluate_folds,
    level_cases,
    read_predictions,
    write_predictions,
)
from training.datasets.paper_csv import PaperBox, write_paper_csv
from training.evaluation.report import write_report


def _truth(n_patients: int, seed: int = 0) -> list[Sample]:
    """Patients with CC + MLO of both breasts; one lesion per image, malignant breasts on every other patient."""
    rng = np.random.default_rng(seed)
    out = []
    for p in range(n_patients):
        for side in "LR":
            malignant = p % 2 == 0 and side == "L"
            for view in ("CC", "MLO"):
                x, y = float(rng.integers(0, 400)), float(rng.integers(0, 400))
                out.append(Sample(image_id=f"P{p:03d}/{side}{view}.dcm", source=Path(f"P{p:03d}/{side}{view}.dcm"),
                                  patient_id=f"P{p:03d}", breast=side, view=view,
                                  lesions=(Lesion((x, y, x + 30, y + 30), "malignant" if malignant else "benign"),)))
    return out


def _perfect(truth: list[Sample]) -> list[ImagePrediction]:
    return [ImagePrediction(s.image_id, s.boxes.copy(), list(s.labels), np.full(len(s.lesions), 0.9)) for s in truth]


def test_perfect_predictor_scores_one_everywhere():
    truth = _truth(10)
    m = evaluate(truth, _perfect(truth), n_boot=50)
    for level, n in (("image", 40), ("breast", 20), ("lesion", 40)):
        block = m["levels"][level]
        assert block["n"] == n and block["table"]["accuracy"] == 1.0 and block["auc"]["auc"] == 1.0
        assert block["table"]["sensitivity"]["malignant"] == 1.0 and block["table"]["precision"]["benign"] == 1.0
        assert block["table"]["confusion_normalised"] == [[1.0, 0.0], [0.0, 1.0]]
    assert m["levels"]["lesion"]["unmatched"] == 0
    assert m["froc"]["all"]["sensitivity_at_fp_per_image"]["0.25"] == 1.0


def test_random_predictor_is_at_chance():
    rng = np.random.default_rng(7)
    truth = _truth(300, seed=1)
    preds = [ImagePrediction(s.image_id, image_probability=float(rng.random())) for s in truth]
    m = evaluate(truth, preds, n_boot=100)
    assert "lesion" not in m["levels"]  # an image classifier has no boxes
    image = m["levels"]["image"]
    assert image["auc"]["auc"] == pytest.approx(0.5, abs=0.05)
    assert image["auc"]["ci_low"] < image["auc"]["auc"] < image["auc"]["ci_high"]
    assert image["auc"]["ci_high"] - image["auc"]["ci_low"] < 0.15
    assert image["table"]["accuracy"] == pytest.approx(0.5, abs=0.05)
    assert image["table"]["sensitivity"]["malignant"] == pytest.approx(0.5, abs=0.08)


def _one_breast(cc: ImagePrediction, mlo: ImagePrediction, malignant: bool) -> list[Sample]:
    lab = "malignant" if malignant else "benign"
    return [Sample(image_id=cc.image_id, source=Path("cc"), patient_id="P", breast="L", view="CC",
                   lesions=(Lesion((0, 0, 10, 10), lab),)),
            Sample(image_id=mlo.image_id, source=Path("mlo"), patient_id="P", breast="L", view="MLO",
                   lesions=(Lesion((0, 0, 10, 10), lab),))]


@pytest.mark.parametrize("cc_box, mlo_box, label, p_malignant", [
    # agree, both malignant: the breast takes the higher probability
    (("malignant", 0.6), ("malignant", 0.8), 1, 0.8),
    # disagree, malignant view above 0.5: malignant with that view's probability
    (("malignant", 0.7), ("benign", 0.9), 1, 0.7),
    # disagree, malignant view at or below 0.5: benign, the benign view decides (P(malignant) = 1 - 0.6)
    (("malignant", 0.45), ("benign", 0.6), 0, 0.4),
    # agree, both benign: the more confident benign view decides
    (("benign", 0.9), ("benign", 0.5), 0, 0.1),
])
def test_breast_level_follows_section_2_7(cc_box, mlo_box, label, p_malignant):
    cc = ImagePrediction("cc", np.array([[0, 0, 10, 10]]), [cc_box[0]], np.array([cc_box[1]]))
    mlo = ImagePrediction("mlo", np.array([[50, 50, 60, 60]]), [mlo_box[0]], np.array([mlo_box[1]]))
    cases = level_cases(_one_breast(cc, mlo, malignant=True), [cc, mlo])["breast"]
    assert cases.y_true == [1] and cases.y_pred == [label]
    assert cases.y_score[0] == pytest.approx(p_malignant)


def test_lesion_level_matches_by_highest_iou_and_counts_the_unmatched():
    sample = Sample(image_id="a", source=Path("a"), patient_id="P", breast="L", view="CC",
                    lesions=(Lesion((0, 0, 10, 10), "malignant"), Lesion((100, 100, 110, 110), "benign"),
                             Lesion((300, 300, 310, 310), "benign")))
    pred = ImagePrediction("a", np.array([[0, 0, 20, 20], [2, 2, 11, 11], [98, 98, 112, 112], [0, 0, 5, 5]]),
                           ["malignant", "benign", "benign", "malignant"], np.array([0.8, 0.7, 0.6, 0.2]))
    # box 1 (benign 0.7, IoU 0.66) beats box 0 (IoU 0.25) for lesion 1; box 3 is under the 0.3 threshold;
    # lesion 2 -> box 2; lesion 3 overlaps nothing
    cases = level_cases([sample], [pred], OperatingPoint(score_thresh=0.3))["lesion"]
    assert cases.y_true == [1, 0] and cases.y_pred == [0, 0]
    assert cases.y_score == pytest.approx([0.3, 0.4])
    assert cases.unmatched == 1
    # cross-class suppression drops the benign box that overlaps the malignant one (IoU > 0.5)? IoU is 0.2: kept
    image = level_cases([sample], [pred])["image"]
    assert image.y_pred == [1] and image.y_score == [pytest.approx(0.8)]


def test_compare_and_kfold_and_report(tmp_path):
    truth = _truth(12)
    rng = np.random.default_rng(0)
    perfect = _perfect(truth)
    noisy = [ImagePrediction(s.image_id, image_probability=float(np.clip(s.target * 0.3 + rng.random() * 0.7, 0, 1)))
             for s in truth]
    comparison = compare(truth, perfect, noisy)
    assert comparison["image"]["auc_a"] == 1.0 and comparison["image"]["difference"] > 0
    # each detector is read at its own operating point: B's image AUC is the one its own evaluation gives
    boxed = [ImagePrediction(s.image_id, np.array([[0, 0, 10, 10]]), ["malignant"],
                             np.array([0.5 if s.target else 0.45 + 0.1 * (k % 2)]))
             for k, s in enumerate(truth)]
    strict, loose = OperatingPoint(score_thresh=0.52), OperatingPoint(score_thresh=0.3)
    own = evaluate(truth, boxed, op=strict, n_boot=0)["levels"]["image"]["auc"]["auc"]
    assert own != pytest.approx(evaluate(truth, boxed, op=loose, n_boot=0)["levels"]["image"]["auc"]["auc"])
    assert compare(truth, perfect, boxed, op=loose, op_b=strict)["image"]["auc_b"] == pytest.approx(own)
    assert compare(truth, perfect, boxed, op=strict)["image"]["auc_b"] == pytest.approx(own)  # default: A's
    folds = [evaluate(truth[:24], perfect[:24], n_boot=0), evaluate(truth[24:], noisy[24:], n_boot=0)]
    table = evaluate_folds(folds)
    assert table["image"]["folds"][0]["accuracy"] == 1.0
    second = folds[1]["levels"]["image"]["row"]["accuracy"]
    assert table["image"]["mean"]["accuracy"] == pytest.approx((1.0 + second) / 2)
    metrics = evaluate(truth, perfect, n_boot=20)
    metrics["kfold"] = table
    page = write_report(metrics, tmp_path, comparison=comparison, comparison_names=("perfect", "noisy"))
    text = page.read_text()
    for needle in ("Table 2 layout", "Sensitivity malignant", "FROC", "DeLong", "Table 3 layout", "roc.png",
                   "froc.png", "calibration.png", "confusion_lesion.png"):
        assert needle in text
    for name in ("roc.png", "froc.png", "calibration.png", "confusion_image.png", "confusion_breast.png"):
        assert (tmp_path / name).stat().st_size > 1000
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["levels"]["breast"]["auc"]["auc"] == 1.0


def test_cli_evaluates_saved_predictions(tmp_path, capsys):
    truth = _truth(6)
    csv = write_paper_csv(tmp_path / "annotations.csv",
                          {s.image_id: [PaperBox.from_corners(les.box, les.label) for les in s.lesions] for s in truth})
    preds = write_predictions(tmp_path / "pred.json", _perfect(truth), {"name": "perfect",
                                                                      "operating_point": OperatingPoint().__dict__})
    assert read_predictions(preds)[1]["name"] == "perfect"
    assert main(["evaluate", "--predictions", str(preds), "--truth", str(csv), "--out", str(tmp_path / "rep"),
                 "--n-boot", "20"]) == 0
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert saved["levels"]["image"]["table"]["accuracy"] == 1.0 and saved["levels"]["breast"]["n"] == 12
    assert (tmp_path / "rep" / "report.html").is_file()


def test_lesion_level_reads_the_carried_class_split_and_predictions_keep_it(tmp_path):
    """A box scored by lesion-ness (0.9) with a class split of 0.2: the lesion level scores P(malignant) = 0.2, not
    0.9; without the split the paper's reading stands; a predictions file keeps the split and refuses a wrong one."""
    truth = _truth(2)
    sample = next(s for s in truth if s.lesions)
    box = np.asarray([sample.lesions[0].box])
    with_split = ImagePrediction(sample.image_id, box, ["malignant"], np.asarray([0.9]), malignancy=np.asarray([0.2]))
    without = ImagePrediction(sample.image_id, box, ["malignant"], np.asarray([0.9]))
    assert level_cases([sample], [with_split])["lesion"].y_score == [pytest.approx(0.2)]
    assert level_cases([sample], [without])["lesion"].y_score == [pytest.approx(0.9)]
    path = write_predictions(tmp_path / "p.json", [with_split, without])
    again, _ = read_predictions(path)
    assert again[0].malignancy.tolist() == [0.2] and again[1].malignancy is None
    broken = json.loads(path.read_text())
    broken["images"][0]["malignancy"] = [0.2, 0.3]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(EvaluationError, match="malignancy"):
        read_predictions(tmp_path / "broken.json")
