"""Site adaptation (``mccad adapt``): normals read by woman, split by woman, false positives on normals counted as
the product shows boxes, the operating point chosen on them, and the command end to end on real normal films."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.training.dicom_tree import write_dicom
from training.adapt import (AdaptSettings, AdaptationError, carry_bundle_parts, choose, derived_version, load_split,
                            sensitivity_at, site_model_name)
from training.datasets.normals import read_normals_folder, split_women
from training.datasets.samples import DatasetError, Lesion, Sample
from training.evaluation.evaluate import (ImagePrediction, OperatingPoint, evaluate, fp_interval_by_woman, fp_per_image,
                               threshold_for_fp_rate)

MIAS_NORMALS = Path(__file__).resolve().parents[3] / "shared" / "data" / "mias-normals"


def _tree(root: Path) -> Path:
    """Three women laid out three ways: per woman, per study below her, and flat; plus a README."""
    pixels = np.full((32, 24), 100, dtype=np.uint8)
    write_dicom(root / "W1" / "a.dcm", pixels, patient_id="W1", laterality="L", view="MLO")
    write_dicom(root / "W1" / "b.dcm", pixels, patient_id="W1", laterality="R", view="MLO")
    write_dicom(root / "W2" / "study" / "series" / "a.dcm", pixels, patient_id="W2", laterality="R", view="CC")
    write_dicom(root / "c.dcm", pixels, patient_id="W3")
    (root / "README.md").write_text("not an image")
    return root


def test_every_dicom_under_the_folder_is_a_normal_sample_of_its_woman(tmp_path):
    samples = read_normals_folder(_tree(tmp_path / "normals"))
    assert [s.image_id for s in samples] == ["W1/a.dcm", "W1/b.dcm", "W2/study/series/a.dcm", "c.dcm"]
    assert [s.patient_id for s in samples] == ["W1", "W1", "W2", "W3"]
    assert [s.breast for s in samples] == ["L", "R", "R", None]
    assert [s.view for s in samples] == ["MLO", "MLO", "CC", None]
    assert all(not s.lesions and s.label == "benign" for s in samples)


def test_a_normal_without_its_woman_or_a_folder_without_images_is_refused(tmp_path):
    write_dicom(tmp_path / "anon" / "x.dcm", np.zeros((8, 8), np.uint8), patient_id="")
    with pytest.raises(DatasetError, match="x.dcm: no PatientID"):
        read_normals_folder(tmp_path / "anon")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="holds no DICOM file"):
        read_normals_folder(tmp_path / "empty")


def _women(n: int, images_each: int = 2) -> list[Sample]:
    return [Sample(image_id=f"W{w:03d}/{k}.dcm", source=Path(f"/x/W{w:03d}/{k}.dcm"), patient_id=f"W{w:03d}")
            for w in range(n) for k in range(images_each)]


def test_split_by_woman_is_disjoint_deterministic_and_independent_of_order():
    samples = _women(20)
    parts = split_women(samples, {"adapt": 0.5, "calibrate": 0.2, "test": 0.3}, seed=7)
    women = {name: {s.patient_id for s in part} for name, part in parts.items()}
    assert [len(w) for w in women.values()] == [10, 4, 6]
    assert not (women["adapt"] & women["calibrate"]) and not (women["adapt"] & women["test"])
    assert not (women["calibrate"] & women["test"])
    assert sum(len(p) for p in parts.values()) == len(samples)
    again = split_women(list(reversed(samples)), {"adapt": 0.5, "calibrate": 0.2, "test": 0.3}, seed=7)
    assert {k: [s.image_id for s in v] for k, v in again.items()} == {k: [s.image_id for s in v]
                                                                       for k, v in parts.items()}
    other = split_women(samples, {"adapt": 0.5, "calibrate": 0.2, "test": 0.3}, seed=8)
    assert {s.patient_id for s in other["test"]} != women["test"]


@pytest.mark.parametrize("fractions, message", [({"a": 0.5, "b": 0.6}, "sum to 1"), ({"a": 1.0, "b": 0.0}, "positive"),
                                                ({"a": 0.98, "b": 0.01, "c": 0.01}, "would be empty")])
def test_bad_split_fractions_are_refused(fractions, message):
    with pytest.raises(DatasetError, match=message):
        split_women(_women(5), fractions, seed=0)


def _pred(image_id: str, scores: list[float], label: str = "benign") -> ImagePrediction:
    boxes = np.asarray([[10.0 * i, 0.0, 10.0 * i + 5, 5.0] for i in range(len(scores))]).reshape(-1, 4)
    return ImagePrediction(image_id, boxes, [label] * len(scores), np.asarray(scores, dtype=np.float64))


def test_the_operating_point_is_the_lowest_threshold_within_the_false_positive_rate():
    op = OperatingPoint(score_thresh=0.3)
    normals = [_pred("a", [0.9, 0.5, 0.2]), _pred("b", [0.6]), _pred("c", []), _pred("d", [0.4, 0.05])]
    # 4 images: at most 1 box in all (0.25 per image) -> 0.9 only; at most 2 -> down to 0.6; 0.5 makes 3
    assert threshold_for_fp_rate(normals, op, 0.25) == 0.9
    assert threshold_for_fp_rate(normals, op, 0.5) == 0.6
    assert threshold_for_fp_rate(normals, op, 1.0) == pytest.approx(0.4)
    assert fp_per_image(normals, OperatingPoint(score_thresh=0.4)) == 1.0
    assert threshold_for_fp_rate(normals, op, 10.0) == 0.01  # every recorded box fits: the recording floor
    assert 0.9 < threshold_for_fp_rate([_pred("a", [0.9, 0.8])], op, 0.5) < 1.0  # even the top box is too many


def test_false_positives_are_counted_after_cross_class_suppression():
    two_labels = ImagePrediction("a", np.asarray([[0, 0, 10, 10], [0, 0, 10, 10.5]], dtype=np.float64),
                                 ["benign", "malignant"], np.asarray([0.8, 0.7]))
    assert fp_per_image([two_labels], OperatingPoint(0.5, cross_class_suppression=True)) == 1.0
    assert fp_per_image([two_labels], OperatingPoint(0.5, cross_class_suppression=False)) == 2.0


def test_the_interval_resamples_women_not_images():
    op = OperatingPoint(score_thresh=0.5)
    # one woman with two busy films, three quiet women: resampling women moves both films together
    preds = [_pred("a1", [0.9, 0.9]), _pred("a2", [0.9, 0.9]), _pred("b", []), _pred("c", []), _pred("d", [])]
    women = ["A", "A", "B", "C", "D"]
    low, high = fp_interval_by_woman(preds, women, op, n_boot=500, seed=1)
    assert low == 0.0 and high > 1.5
    assert fp_interval_by_woman(preds[2:], women[2:], op, n_boot=100) == (0.0, 0.0)


def test_evaluate_reports_false_positives_per_image_on_the_normal_images():
    truth = [Sample("n1", Path("n1.dcm"), "A"), Sample("n2", Path("n2.dcm"), "B"),
             Sample("c1", Path("c1.dcm"), "C", lesions=(Lesion((0, 0, 10, 10), "malignant"),))]
    preds = [_pred("n1", [0.8, 0.2]), _pred("n2", [0.7, 0.6]), _pred("c1", [0.9], "malignant")]
    metrics = evaluate(truth, preds, op=OperatingPoint(score_thresh=0.5), n_boot=50)
    block = metrics["normal_images"]
    assert (block["images"], block["women"], block["false_positives"], block["images_with_a_box"]) == (2, 2, 3, 2)
    assert block["fp_per_image"] == 1.5 and block["fp_per_image_ci95"][0] <= 1.5 <= block["fp_per_image_ci95"][1]
    classifier = [ImagePrediction(s.image_id, image_probability=0.5) for s in truth]
    assert "normal_images" not in evaluate(truth, classifier, n_boot=0)


def test_clusters_found_at_the_operating_point_and_the_choice_between_candidates():
    truth = [Sample("i1", Path("i1.png"), "S1", lesions=(Lesion((0, 0, 10, 10), "benign"),
                                                         Lesion((100, 100, 120, 120), "malignant")))]
    pred = ImagePrediction("i1", np.asarray([[1, 1, 10, 10], [100, 100, 121, 119]], dtype=np.float64),
                           ["benign", "malignant"], np.asarray([0.9, 0.4]))
    assert sensitivity_at(truth, [pred], OperatingPoint(0.5)) == (1, 2)
    assert sensitivity_at(truth, [pred], OperatingPoint(0.3)) == (2, 2)
    a = {"calibrate": {"clusters_found": 10}}
    assert choose({"A": a, "B": {"calibrate": {"clusters_found": 11}}}) == "B"
    assert choose({"A": a, "B": {"calibrate": {"clusters_found": 10}}}) == "A"  # a tie keeps the simpler
    assert choose({"A": a}) == "A"


def test_a_work_folder_of_another_adaptation_is_refused(tmp_path):
    normals = _tree(tmp_path / "normals")
    for k in range(4, 8):  # enough women for three parts
        write_dicom(normals / f"W{k}" / "a.dcm", np.full((32, 24), 90, np.uint8), patient_id=f"W{k}")
    load_split(normals, tmp_path / "work", seed=1)
    assert load_split(normals, tmp_path / "work", seed=1)  # the same adaptation resumes
    with pytest.raises(AdaptationError, match="another adaptation"):
        load_split(normals, tmp_path / "work", seed=2)


@pytest.mark.slow
@pytest.mark.skipif(not MIAS_NORMALS.is_dir(), reason="needs ../shared/data/mias-normals beside the repository")
def test_mccad_adapt_on_real_normal_films_writes_a_bundle_with_its_site_operating_point(tmp_path, tiny_model_dir,
                                                                                       capsys, one_torch_thread):
    from mccad.cli import main
    from models.registry import load_manifest

    normals = tmp_path / "normals"
    normals.mkdir()
    for woman in sorted(p for p in MIAS_NORMALS.iterdir() if p.is_dir())[:6]:
        (normals / woman.name).symlink_to(woman)
    out = tmp_path / "bundle"
    code = main(["adapt", "--normals", str(normals), "--out", str(out), "--model", str(tiny_model_dir / "detector"),
                 "--no-fine-tune", "--target-fp", "1", "--workers", "1", "--no-progress", "--version", "0.0.1"])
    assert code == 0
    captured = capsys.readouterr()
    assert "it/s" not in captured.err and "%|" not in captured.err  # --no-progress: no progress bar anywhere
    printed = json.loads(captured.out)
    report = json.loads((out / "adaptation.json").read_text())
    assert printed["kept"] == report["kept"] == "A" and report["pitch_mm"] == pytest.approx(0.2)
    films = sum(1 for woman in normals.iterdir() for _ in woman.glob("*.dcm"))
    assert sum(p["images"] for p in report["split"].values()) == films
    a = report["candidates"]["A"]
    assert a["calibrate"]["fp_per_image"] <= 1.0
    assert a["test"]["clusters"] > 0 and 0 <= a["test"]["clusters_found"] <= a["test"]["clusters"]
    manifest = load_manifest(out / "detector")
    assert manifest.version == "0.0.1" and manifest.thresholds["score_thresh"] == pytest.approx(a["score_thresh"])
    # the base kept as it was learned nothing of the site: its training data is the base's own
    assert manifest.training_data == load_manifest(tiny_model_dir / "detector").training_data
    card = (out / "detector" / "MODEL_CARD.md").read_text()
    assert "## Site adaptation" in card and "| A (kept) |" in card
    # the calibration copies hold each calibration image exactly twice (every judging image gets its copies)
    sim = json.loads((tmp_path / "bundle.work" / "sim" / "calibrate" / "simulated.json").read_text())
    files = [r["background_file"] for r in sim["images"]]
    assert files and all(files.count(f) == 2 for f in files)
    assert len(set(files)) == report["split"]["calibrate"]["images"]
    assert main(["adapt", "--normals", str(normals), "--out", str(out), "--model",
                 str(tiny_model_dir / "detector"), "--no-fine-tune"]) == 2  # a bundle is never overwritten


def test_fine_tuning_starts_from_the_base_and_moves_its_weights(tmp_path, one_torch_thread):
    """Candidate B's step on a few crops: the run starts from the shipped detector and trains it."""
    import torch

    from training.adapt import fine_tune
    from training.datasets.paper_csv import read_paper_dataset
    from training.simulate.dataset import make_simulated_dataset

    base = Path(__file__).resolve().parents[2] / "models" / "weights" / "default" / "detector"
    csv = make_simulated_dataset(tmp_path / "sim", 4, seed=3, sources=("phantom",), crop=128, spacing_mm=0.2,
                                 clusters_per_image=(1, 1))
    run = fine_tune(base, read_paper_dataset(csv), tmp_path, AdaptSettings(epochs=1, samples_per_epoch=2), False)
    state = torch.load(run / "best.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 1
    from safetensors.torch import load_file

    shipped = load_file(str(base / "model.safetensors"))
    trained = state["model"]
    moved = [k for k in shipped if k in trained and not torch.allclose(shipped[k].float(), trained[k].float())]
    assert moved, "fine-tuning left every weight of the base as it was"

    # B is judged on the weights a bundle ships (the run's last epoch, rounded to the bundle's dtype), and the
    # bundle holds exactly those weights at B's operating point
    from models.registry import load_manifest
    from training.adapt import export_candidate, write_bundle

    candidate = export_candidate(run, tmp_path, base)
    # a resumed adaptation keeps the export its cached readings were made with, unless the run trained further
    exported_at = (candidate / "manifest.json").stat().st_mtime_ns
    assert export_candidate(run, tmp_path, base) == candidate
    assert (candidate / "manifest.json").stat().st_mtime_ns == exported_at
    os.utime(run / "last.pt", ns=(exported_at + 10**9, exported_at + 10**9))
    export_candidate(run, tmp_path, base)
    assert (candidate / "manifest.json").stat().st_mtime_ns > exported_at
    exported = load_file(str(candidate / "model.safetensors"))
    assert all(torch.equal(exported[k], trained[k].to(exported[k].dtype)) for k in exported)
    figures = {"calibrate": {"fp_per_image": 0.2, "clusters_found": 3, "clusters": 4},
               "test": {"fp_per_image": 0.2, "fp_per_image_ci95": [0.1, 0.3], "clusters_found": 3, "clusters": 4,
                        "froc_sensitivity_at_fp_per_image": {"1": 0.75}}}
    report = {"kept": "B", "command": "", "normals": "N", "base": str(base), "pitch_mm": 0.2,
              "settings": {"seed": 1, "target_fp_per_image": 0.25}, "inserted": {},
              "split": {"adapt": {"images": 4, "women": 2}},
              "candidates": {"B": {"score_thresh": 0.61, "model": str(candidate), **figures}}}
    target = write_bundle(report, tmp_path / "bundle", base, candidate, "9.9.9")
    shipped_b = load_manifest(target)
    assert shipped_b.sha256 == load_manifest(candidate).sha256 and shipped_b.thresholds["score_thresh"] == 0.61
    assert shipped_b.training_data.startswith("site adaptation of ") and "2 women" in shipped_b.training_data


def test_normals_of_a_public_dataset_are_its_images_without_any_finding(tmp_path):
    from tests.training.test_vindr_cmmd_readers import build_vindr
    from training.adapt import read_normals

    build_vindr(tmp_path / "vindr")
    normals = read_normals(tmp_path / "vindr", "vindr_mammo")
    ids = {Path(s.image_id).stem for s in normals}
    assert "s1img0" not in ids and "s1img2" not in ids  # a calcification; a mass
    assert {"s1img1", "s1img3", "s2img0", "s3img3"} <= ids and all(not s.lesions for s in normals)
    with pytest.raises(AdaptationError, match="not 'cmmd'"):
        read_normals(tmp_path / "vindr", "cmmd")


def test_a_bundle_adapted_again_names_itself_once_and_keeps_a_valid_version():
    assert site_model_name("mccad-sim-fpnnet-lite0") == "mccad-sim-fpnnet-lite0-site"
    assert site_model_name("mccad-sim-fpnnet-lite0-site") == "mccad-sim-fpnnet-lite0-site"
    assert derived_version("0.6.2", "site") == "0.6.2+site"
    assert derived_version("0.6.2+mias.2", "site") == "0.6.2+mias.2.site"
    assert derived_version("0.6.2+mias.2", "candidate").count("+") == 1


def test_an_adapted_bundle_carries_the_base_bundles_other_parts(tmp_path):
    base = tmp_path / "base"
    for part in ("detector", "sppnet", "descriptors"):
        (base / part).mkdir(parents=True)
        (base / part / "manifest.json").write_text(f'{{"role": "{part}"}}')
    (base / "er").mkdir()  # no manifest: not a model folder, not carried
    out = tmp_path / "out"
    out.mkdir()
    assert carry_bundle_parts(base / "detector", out) == ["sppnet", "descriptors"]
    assert json.loads((out / "descriptors" / "manifest.json").read_text()) == {"role": "descriptors"}
    assert not (out / "detector").exists() and not (out / "er").exists()
    lone = tmp_path / "lone-detector"
    lone.mkdir()
    assert carry_bundle_parts(lone, tmp_path / "elsewhere") == []
