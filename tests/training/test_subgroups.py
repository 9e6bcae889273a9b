"""``training.evaluation.subgroups``: on a set made by ``mccad simulate``, ``mccad evaluate`` breaks detection down by
background source (FROC per subset), by BI-RADS pattern (clusters found) and by background image (false positives)."""
from __future__ import annotations

import json
from collections import Counter
from itertools import pairwise

import numpy as np
import pytest

from training.datasets.readers import read_dataset
from training.evaluation.evaluate import ImagePrediction, write_predictions
from training.evaluation.froc import FrocImage, froc
from training.simulate import make_simulated_dataset
from training.evaluation.subgroups import CNR_BINS, background_of, simulation_records, subgroup_metrics


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """Eight small crops over real and phantom backgrounds, one or two clusters each, and predictions that find
    every other cluster (score 0.9) and put one false box (score 0.8) on each real background."""
    folder = tmp_path_factory.mktemp("sim")
    csv = make_simulated_dataset(folder, 8, seed=5, crop=96, spacing_mm=0.2, clusters_per_image=(1, 2))
    samples = read_dataset(csv)
    records = simulation_records(csv)
    predictions = []
    for sample in samples:
        boxes = [les.box for k, les in enumerate(sample.lesions) if k % 2 == 0]
        scores = [0.9] * len(boxes)
        if records[sample.image_id]["source"] == "real":
            boxes.append((0.0, 0.0, 1.0, 1.0))  # a pixel in the corner: hits no cluster
            scores.append(0.8)
        predictions.append(ImagePrediction(sample.image_id, np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                                           ["malignant"] * len(boxes), np.asarray(scores)))
    return folder, csv, samples, records, predictions


def test_clusters_are_counted_by_pattern_and_false_positives_by_background(simulated):
    _, _, samples, records, predictions = simulated
    assert {r["source"] for r in records.values()} == {"real", "phantom"}  # the fixture covers both
    result = subgroup_metrics(list(zip(samples, predictions, strict=True)), records, operating_threshold=0.85)
    assert result["thresholds"]["operating_point"] == 0.85

    clusters, found = Counter(), Counter()
    for sample in samples:
        for k, les in enumerate(records[sample.image_id]["lesions"]):
            clusters[les["pattern"]] += 1
            found[les["pattern"]] += k % 2 == 0
    assert {name: g["clusters"] for name, g in result["by_pattern"].items()} == dict(clusters)
    # at 0.85 the 0.9 boxes count and the 0.8 false boxes do not
    assert {name: g["found"]["operating_point"] for name, g in result["by_pattern"].items()} == dict(found)
    for background, row in result["false_positives_by_background"].items():
        assert row["operating_point"] == 0
        assert row["at_1fp"] == (row["images"] if background.startswith("real") else 0)
    assert sum(r["images"] for r in result["false_positives_by_background"].values()) == len(samples)
    assert background_of({"source": "real", "real_index": 3}) == "real 3"
    assert background_of({"source": "real", "real_index": 0, "background_file": "a.dcm"}) == "real 0 (a.dcm)"


def test_froc_by_source_is_the_froc_of_that_sources_images(simulated):
    _, _, samples, records, predictions = simulated
    result = subgroup_metrics(list(zip(samples, predictions, strict=True)), records, operating_threshold=0.3)
    for source in ("real", "phantom"):
        subset = [(s, p) for s, p in zip(samples, predictions, strict=True) if records[s.image_id]["source"] == source]
        curve = froc([FrocImage(s.boxes, p.boxes, p.scores) for s, p in subset])
        row = result["by_source"][source]
        assert (row["images"], row["clusters"]) == (len(subset), curve.n_lesions)
        assert row["sensitivity_at_fp_per_image"] == {str(k): v for k, v in curve.at_rates.items()}


def test_clusters_are_counted_by_contrast_to_noise_when_the_noise_is_recorded(simulated):
    _, _, samples, records, predictions = simulated
    pairs = list(zip(samples, predictions, strict=True))
    assert all(r["noise_sigma"] > 0 for r in records.values())  # the simulator records its background's noise
    result = subgroup_metrics(pairs, records, operating_threshold=0.85)
    expected, found = Counter(), Counter()
    for sample in samples:
        record = records[sample.image_id]
        for k, les in enumerate(record["lesions"]):
            ratio = les["peak_contrast"] / record["noise_sigma"]
            name = next(f"{lo:g}-{hi:g}" if hi != float("inf") else f">={lo:g}"
                        for lo, hi in pairwise(CNR_BINS) if lo <= ratio < hi)
            expected[name] += 1
            found[name] += k % 2 == 0
    rows = result["by_contrast_to_noise"]
    assert {name: row["clusters"] for name, row in rows.items()} == dict(expected)
    assert {name: row["found"]["operating_point"] for name, row in rows.items()} == dict(found)
    # a set written before the noise was recorded gets no such row, the rest of the breakdown stays
    older = {k: {f: v for f, v in r.items() if f != "noise_sigma"} for k, r in records.items()}
    assert "by_contrast_to_noise" not in subgroup_metrics(pairs, older, 0.85)


def test_records_that_do_not_describe_the_images_give_no_breakdown(simulated, tmp_path):
    _, _, samples, records, predictions = simulated
    pairs = list(zip(samples, predictions, strict=True))
    edited = {k: dict(v, lesions=v["lesions"] + [{"pattern": "round"}]) for k, v in records.items()}
    assert subgroup_metrics(pairs, edited, 0.5) is None  # an extra cluster the CSV does not hold
    assert subgroup_metrics(pairs, {}, 0.5) is None
    (tmp_path / "simulated.json").write_text("not json")
    assert simulation_records(tmp_path / "annotations.csv") is None
    assert simulation_records(tmp_path / "elsewhere" / "annotations.csv") is None


def test_mccad_evaluate_writes_the_breakdown_for_a_simulated_set_only(simulated, tmp_path, capsys):
    from mccad.cli import main
    from tests.training.tiny_images import write_tiny_samples
    from training.datasets.paper_csv import PaperBox, write_paper_csv

    _, csv, _, _, predictions = simulated
    path = write_predictions(tmp_path / "pred.json", predictions)
    assert main(["evaluate", "--predictions", str(path), "--truth", str(csv), "--score-thresh", "0.85",
                 "--out", str(tmp_path / "rep"), "--n-boot", "10"]) == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["subgroups"]["thresholds"]["operating_point"] == 0.85
    low, high = metrics["froc"]["all"]["ci"]["sensitivity_ci_at_fp_per_image"]["1.0"]
    assert printed["froc_sensitivity"]["1.0"] == (
        f"{metrics['froc']['all']['sensitivity_at_fp_per_image']['1.0']:.3f} ({low:.3f} to {high:.3f})")
    assert printed["clusters_found_by_pattern"] == {name: f"{g['found']['operating_point']}/{g['clusters']}"
                                                    for name, g in metrics["subgroups"]["by_pattern"].items()}
    assert printed["clusters_found_by_contrast_to_noise"] == {
        name: f"{g['found']['operating_point']}/{g['clusters']}"
        for name, g in metrics["subgroups"]["by_contrast_to_noise"].items()}

    # a detector compared with itself: no difference, in every resample
    assert main(["evaluate", "--predictions", str(path), "--compare", str(path), "--truth", str(csv),
                 "--out", str(tmp_path / "rep-same"), "--n-boot", "10"]) == 0
    assert set(json.loads(capsys.readouterr().out)["froc_difference"].values()) == {"0.000 (0.000 to 0.000)"}

    tiny = write_tiny_samples(tmp_path / "tiny", 2)  # an annotated set of another origin: no simulated.json
    tiny_csv = write_paper_csv(tmp_path / "tiny" / "annotations.csv", {
        s.image_id: [PaperBox.from_corners(les.box, les.label) for les in s.lesions] for s in tiny})
    tiny_pred = write_predictions(tmp_path / "tiny-pred.json", [
        ImagePrediction(s.image_id, np.asarray([s.lesions[0].box]), ["benign"], np.asarray([0.7])) for s in tiny])
    assert main(["evaluate", "--predictions", str(tiny_pred), "--truth", str(tiny_csv), "--out",
                 str(tmp_path / "rep2"), "--n-boot", "10"]) == 0
    assert "clusters_found_by_pattern" not in json.loads(capsys.readouterr().out)
    assert "subgroups" not in json.loads((tmp_path / "rep2" / "metrics.json").read_text())


def test_false_positives_at_the_same_place_of_a_real_background_are_counted_as_recurring(tmp_path):
    """Whole images over one real background, flipped or not: a false box drawn at one place of the background on
    every image recurs (flip undone); boxes each at a place of their own, 10 mm apart, do not."""
    csv = make_simulated_dataset(tmp_path / "s", 5, seed=3, sources=("real",), real_images=[5], spacing_mm=0.4,
                                 clusters_per_image=(0, 1))
    samples, records = read_dataset(csv), simulation_records(csv)
    assert len({r["flipped"] for r in records.values()}) == 2  # both orientations take part
    predictions = []
    for k, sample in enumerate(samples):
        record = records[sample.image_id]
        x = 100.0 if not record["flipped"] else record["columns"] - 100.0  # the background's column 100
        own = 150.0 + 25 * k  # 10 mm apart at 0.4 mm
        boxes = np.asarray([[x - 0.5, 200.0, x + 0.5, 201.0], [own, own, own + 1.0, own + 1.0]])
        predictions.append(ImagePrediction(sample.image_id, boxes, ["benign"] * 2, np.asarray([0.9, 0.9])))
    result = subgroup_metrics(list(zip(samples, predictions, strict=True)), records, operating_threshold=0.5)
    (row,) = result["false_positives_by_background"].values()
    assert row["images"] == 5 and row["operating_point"] == 10
    assert row["recurring_at_operating_point"] == 5 and result["recur_mm"] == 2.0
    # below the operating point nothing counts
    above = subgroup_metrics(list(zip(samples, predictions, strict=True)), records, 0.95)
    assert above["false_positives_by_background"][
        background_of(next(iter(records.values())))]["recurring_at_operating_point"] == 0


def test_mccad_evaluate_pools_several_simulated_sets(tmp_path, capsys):
    """Two sets made by `mccad simulate` both name their images images/000000.png ...: pooled, each image is named by
    its set's folder, the breakdown covers both, and a real background both sets use is one resampling group."""
    from mccad.cli import main

    csvs, predictions = [], []
    for name, seed in (("val-a", 5), ("val-b", 6)):
        # min_visible=0: at 0.4 mm pixels few clusters stand out of the texture, and this test needs one per image
        csv = make_simulated_dataset(tmp_path / name, 4, seed=seed, sources=("real",), real_images=[5],
                                     spacing_mm=0.4, clusters_per_image=(1, 1), min_visible=0)
        csvs.append(str(csv))
        predictions += [ImagePrediction(f"{name}/{s.image_id}", np.asarray([s.lesions[0].box]), ["malignant"],
                                        np.asarray([0.9])) for s in read_dataset(csv)]
    path = write_predictions(tmp_path / "pooled.json", predictions)
    assert main(["evaluate", "--predictions", str(path), "--truth", *csvs, "--out", str(tmp_path / "rep"),
                 "--n-boot", "10"]) == 0
    capsys.readouterr()
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["n_images"] == 8 and metrics["froc"]["all"]["n_lesions"] == 8
    assert metrics["froc"]["all"]["ci"]["n_groups"] == 1  # both sets drew every image from real background 5
    assert metrics["subgroups"]["false_positives_by_background"]["real 5"]["images"] == 8
    # predictions named as one set names its images do not match the pooled sets
    single = write_predictions(tmp_path / "single.json", [
        ImagePrediction(p.image_id.split("/", 1)[1], p.boxes, p.labels, p.scores) for p in predictions[:4]])
    assert main(["evaluate", "--predictions", str(single), "--truth", *csvs, "--out", str(tmp_path / "rep2")]) == 2
    assert "no prediction" in capsys.readouterr().err
    assert main(["evaluate", "--kfold", str(tmp_path), "--truth", *csvs, "--out", str(tmp_path / "rep3")]) == 2
    assert "give one --data" in capsys.readouterr().err


def test_mccad_evaluate_draws_the_strongest_false_positives(simulated, tmp_path, capsys):
    """The fixture puts one false box (0.8) on each real background: at 0.5 the sheet shows exactly those, best
    first, each tile centred on its box; boxes on clusters are never on it; above every false box there is no sheet."""
    from PIL import Image

    from mccad.cli import main
    from training.evaluation.false_positive_sheet import TILE_PX, false_positives, write_false_positive_sheet

    _, csv, samples, records, predictions = simulated
    pairs = list(zip(samples, predictions, strict=True))
    expected = sum(records[s.image_id]["source"] == "real" for s in samples)
    entries = false_positives(pairs, 0.5, limit=100)
    assert len(entries) == expected > 0 and all(e["score"] == pytest.approx(0.8) for e in entries)
    assert len(false_positives(pairs, 0.5, limit=1)) == 1
    info = write_false_positive_sheet(pairs, 0.5, tmp_path / "fp.png", columns=3)
    with Image.open(tmp_path / "fp.png") as sheet:
        assert sheet.size[0] == 3 * (TILE_PX + 4) and sheet.size[1] == -(-expected // 3) * (TILE_PX + 4)
        tile = np.asarray(sheet)[:TILE_PX, :TILE_PX]
    assert info["false_positives"] == entries and info["file"] == "fp.png"
    assert tile.max() == 255 and tile.std() > 0  # image content and the white outline
    assert write_false_positive_sheet(pairs, 0.85, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()

    path = write_predictions(tmp_path / "pred.json", predictions)
    assert main(["evaluate", "--predictions", str(path), "--truth", str(csv), "--score-thresh", "0.5",
                 "--out", str(tmp_path / "rep"), "--n-boot", "0", "--false-positives", "2"]) == 0
    capsys.readouterr()
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert len(metrics["false_positive_sheet"]["false_positives"]) == min(2, expected)
    assert metrics["figures"]["false_positives"] == "false_positives.png"
    assert "false_positives.png" in (tmp_path / "rep" / "report.html").read_text()


def test_froc_by_pixel_spacing_is_the_froc_of_the_images_made_at_that_spacing(tmp_path):
    """A set rendered at two pitches (digital 0.1 mm, film 0.2 mm) is broken down by the pitch each image was made
    at, so that a model's figures are read per acquisition, not pooled over it."""
    csv = make_simulated_dataset(tmp_path, 8, seed=9, sources=("phantom",), crop=64, spacing_mm=(0.1, 0.2),
                                 clusters_per_image=(1, 1))
    samples, records = read_dataset(csv), simulation_records(csv)
    spacings = {records[s.image_id]["spacing_mm"] for s in samples}
    assert spacings == {0.1, 0.2}  # the seed draws both
    predictions = [ImagePrediction(s.image_id, s.boxes if records[s.image_id]["spacing_mm"] == 0.1 else
                                   np.zeros((0, 4)), ["malignant"] * (len(s.boxes) if records[s.image_id]
                                                                       ["spacing_mm"] == 0.1 else 0),
                                   np.full(len(s.boxes) if records[s.image_id]["spacing_mm"] == 0.1 else 0, 0.9))
                   for s in samples]
    result = subgroup_metrics(list(zip(samples, predictions, strict=True)), records, operating_threshold=0.5)
    rows = result["by_pixel_spacing"]
    assert set(rows) == {"0.1 mm", "0.2 mm"}
    assert rows["0.1 mm"]["sensitivity_at_fp_per_image"]["1.0"] == 1.0  # every 0.1 mm cluster boxed
    assert rows["0.2 mm"]["sensitivity_at_fp_per_image"]["1.0"] == 0.0  # none of the 0.2 mm ones
    assert sum(r["images"] for r in rows.values()) == len(samples)
