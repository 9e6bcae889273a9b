"""``mccad evaluate`` on a set made with an image-formation stage (``mccad simulate --acquisition``): FROC per
acquisition source (film, digital) and per pitch and source, false positives on the film's scanner artefacts, and
none of it for a set without the stage."""
from __future__ import annotations

import json

import numpy as np
import pytest

from training.datasets.readers import read_dataset
from training.evaluation.evaluate import ImagePrediction, write_predictions
from training.evaluation.froc import hit_scores
from training.evaluation.subgroups import simulation_records, subgroup_metrics
from training.simulate import make_simulated_dataset


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Eight whole phantom images at 0.2 and 0.4 mm, film or digital drawn per image, one cluster each; predictions
    box every film cluster (0.9) and put a false box (0.8) on each film image's first artefact, and find nothing on
    digital images."""
    folder = tmp_path_factory.mktemp("mixed")
    csv = make_simulated_dataset(folder, 8, seed=4, sources=("phantom",), spacing_mm=(0.2, 0.4),
                                 clusters_per_image=(1, 1), acquisition="mixed")
    samples, records = read_dataset(csv), simulation_records(csv)
    predictions = []
    for sample in samples:
        record = records[sample.image_id]
        boxes, scores = [], []
        if record["acquisition"] == "film":
            boxes = [les.box for les in sample.lesions]
            scores = [0.9] * len(boxes)
            if record["artefacts"]:
                boxes.append(tuple(record["artefacts"][0]["box"]))
                scores.append(0.8)
        predictions.append(ImagePrediction(sample.image_id, np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                                           ["malignant"] * len(boxes), np.asarray(scores, dtype=np.float64)))
    return folder, csv, samples, records, predictions


def test_froc_is_given_per_acquisition_source_and_per_pitch_and_source(mixed):
    _, _, samples, records, predictions = mixed
    assert {r["acquisition"] for r in records.values()} == {"film", "digital"}  # the seed draws both
    result = subgroup_metrics(list(zip(samples, predictions, strict=True)), records, operating_threshold=0.5)
    rows = result["by_acquisition"]
    assert set(rows) == {"film", "digital"}
    assert rows["film"]["sensitivity_at_fp_per_image"]["1.0"] == 1.0
    assert rows["digital"]["sensitivity_at_fp_per_image"]["1.0"] == 0.0
    assert rows["film"]["images"] == sum(r["acquisition"] == "film" for r in records.values())
    crossed = result["by_pixel_spacing_and_acquisition"]
    expected = {f"{records[s.image_id]['spacing_mm']:g} mm {records[s.image_id]['acquisition']}" for s in samples}
    assert set(crossed) == expected
    assert sum(r["images"] for r in crossed.values()) == len(samples)


def test_false_positives_on_film_artefacts_are_counted_by_kind(mixed):
    _, _, samples, records, predictions = mixed
    expected: dict[str, int] = {}
    for sample, pred in zip(samples, predictions, strict=True):
        record = records[sample.image_id]
        if record["acquisition"] != "film" or not record["artefacts"]:
            continue
        _, false = hit_scores(sample.boxes, pred.boxes, pred.scores, 0.1)
        if false[-1]:  # the artefact's box is a false positive unless it hits the cluster
            kind = record["artefacts"][0]["kind"]
            expected[kind] = expected.get(kind, 0) + 1
    assert expected  # the fixture placed some
    result = subgroup_metrics(list(zip(samples, predictions, strict=True)), records, operating_threshold=0.5)
    counted = {kind: row["operating_point"] for kind, row in result["false_positives_on_artefacts"].items()}
    for kind, count in expected.items():
        assert counted[kind] >= count


def test_a_set_without_the_stage_has_no_acquisition_breakdown(tmp_path):
    csv = make_simulated_dataset(tmp_path, 2, seed=4, sources=("phantom",), spacing_mm=0.2, crop=64,
                                 clusters_per_image=(1, 1))
    samples, records = read_dataset(csv), simulation_records(csv)
    predictions = [ImagePrediction(s.image_id, s.boxes, ["malignant"] * len(s.boxes), np.full(len(s.boxes), 0.9))
                   for s in samples]
    result = subgroup_metrics(list(zip(samples, predictions, strict=True)), records, operating_threshold=0.5)
    assert "by_acquisition" not in result and "false_positives_on_artefacts" not in result


def test_mccad_evaluate_prints_the_figures_per_source_and_per_pitch(mixed, tmp_path, capsys):
    from mccad.cli import main

    _, csv, _, _, predictions = mixed
    path = write_predictions(tmp_path / "pred.json", predictions)
    assert main(["evaluate", "--predictions", str(path), "--truth", str(csv), "--score-thresh", "0.5",
                 "--out", str(tmp_path / "rep"), "--n-boot", "10"]) == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert set(printed["froc_sensitivity_by_acquisition"]) == {"film", "digital"}
    assert printed["froc_sensitivity_by_acquisition"]["film"] == (
        metrics["subgroups"]["by_acquisition"]["film"]["sensitivity_at_fp_per_image"])
    assert set(printed["froc_sensitivity_by_pixel_spacing"]) == {"0.2 mm", "0.4 mm"}
    assert set(printed["froc_sensitivity_by_pixel_spacing_and_acquisition"]) == set(
        metrics["subgroups"]["by_pixel_spacing_and_acquisition"])
