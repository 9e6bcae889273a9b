"""The spot detector as a model folder: a manifest without weights loads through
``training.evaluation.predict.load_model`` (strictly: stray weights, unknown parameters or thresholds are refused),
predicts one box per cluster in the source image's pixels at the pitch each file states, and ``mccad evaluate`` scores
it beside another model with ``--compare``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.errors import ArchitectureMismatch
from models.registry import ModelManifest, load_manifest, write_manifest
from models.spot_detector import SpotDetectorConfig
from tests.models.spot_scenes import scene
from training.datasets.paper_csv import PaperBox, write_paper_csv
from training.evaluation.predict import load_model, predict

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "weights" / "spots-dog"


def spots_manifest(**changes: object) -> ModelManifest:
    base = dict(name="spots-test", version="1.0.0", architecture="spots-dog", role="detector",
                classes=["benign", "malignant"], input_spec={"spots": {"min_snr": 4.0}},
                thresholds={"score_thresh": 0.4}, training_data="none")
    return ModelManifest(**{**base, **changes})  # type: ignore[arg-type]


def write_spots(folder: Path, manifest: ModelManifest) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(folder, manifest)
    return folder


def _write_png(path: Path, pixels: np.ndarray, pitch_mm: float) -> None:
    """16-bit PNG with its pixel pitch as dpi, as ``mccad simulate`` writes its images."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dpi = 25.4 / pitch_mm
    Image.fromarray(np.round(np.clip(pixels, 0, 1) * 65535).astype(np.uint16)).save(path, dpi=(dpi, dpi))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict[str, list[tuple[float, float]]]]:
    """Three images: a cluster at 0.1 mm, the same kind of breast with its cluster at 0.2 mm, and a breast with
    isolated spots only; the CSV annotates each cluster with the box around its spots (+1 mm)."""
    root = tmp_path_factory.mktemp("spots-data")
    boxes, clusters = {}, {}
    for name, pitch, seed, cluster_at in (("c01.png", 0.1, 0, (25.0, 40.0)), ("c02.png", 0.2, 1, (22.0, 30.0)),
                                          ("normal.png", 0.2, 2, None)):
        s = scene(pitch, seed, cluster_at=cluster_at)
        _write_png(root / name, s.pixels, pitch)
        pts = np.asarray(s.cluster_mm).reshape(-1, 2) / pitch
        clusters[name] = [tuple(p) for p in pts]
        boxes[name] = [PaperBox.from_corners((*(pts.min(0) - 1 / pitch), *(pts.max(0) + 1 / pitch)), "malignant")] \
            if len(pts) else []
    return write_paper_csv(root / "annotations.csv", boxes), clusters


def test_a_manifest_without_weights_loads_and_predicts_clusters_in_source_pixels(tmp_path: Path, dataset) -> None:
    from training.datasets.readers import read_dataset

    folder = tmp_path / "spots"
    write_spots(folder, spots_manifest())
    loaded = load_model(folder)
    assert loaded.kind == "spots" and loaded.model is None
    assert loaded.network_config == SpotDetectorConfig(min_snr=4.0)
    op = loaded.operating_point
    assert op.score_thresh == 0.4 and not op.cross_class_suppression
    csv, clusters = dataset
    samples = read_dataset(csv)
    preds = {p.image_id: p for p in predict(loaded, samples)}
    for name in ("c01.png", "c02.png"):
        p = preds[name]
        assert len(p.boxes) == 1 and p.labels == ["malignant"] and 0 < p.scores[0] < 1
        x0, y0, x1, y1 = p.boxes[0]  # source pixels of that image's own pitch
        assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in clusters[name])
    assert len(preds["normal.png"].boxes) == 0


def test_the_shipped_baseline_folder_loads() -> None:
    loaded = load_model(SHIPPED)
    manifest = load_manifest(SHIPPED)
    assert loaded.kind == "spots" and manifest.architecture == "spots-dog" and not manifest.sha256
    assert loaded.network_config == SpotDetectorConfig.from_dict(manifest.input_spec["spots"])
    assert set(manifest.input_spec["spots"]) == set(SpotDetectorConfig().to_dict())  # every parameter written out
    assert loaded.operating_point.score_thresh == manifest.thresholds["score_thresh"]


@pytest.mark.parametrize("problem, change, match", [
    ("unknown parameter", {"input_spec": {"spots": {"min_snrr": 4.0}}}, "unknown spots parameter"),
    ("another network's config", {"input_spec": {"spots": {}, "detector": {}}}, "holds only 'spots'"),
    ("a detector threshold", {"thresholds": {"score_thresh": 0.4, "nms_thresh": 0.5}}, "nothing else"),
    ("no operating point", {"thresholds": {}}, "nothing else"),
    ("a weights hash", {"sha256": "ab" * 32}, "has no weights"),
    ("another role", {"role": "sppnet"}, "role is detector"),
])
def test_a_wrong_spots_folder_is_refused(tmp_path: Path, problem: str, change: dict, match: str) -> None:
    write_manifest(tmp_path, spots_manifest(**change))
    with pytest.raises(ArchitectureMismatch, match=match):
        load_model(tmp_path)


def test_a_weights_file_beside_the_manifest_is_refused(tmp_path: Path) -> None:
    write_manifest(tmp_path, spots_manifest())
    (tmp_path / "model.safetensors").write_bytes(b"not used")
    with pytest.raises(ArchitectureMismatch, match="has no weights"):
        load_model(tmp_path)


def test_the_pipeline_loader_refuses_a_spots_folder(tmp_path: Path) -> None:
    from models.registry import load_detector

    write_manifest(tmp_path, spots_manifest())
    with pytest.raises(ArchitectureMismatch):
        load_detector(tmp_path)


def test_mccad_evaluate_scores_it_beside_another_model(tmp_path: Path, dataset) -> None:
    """Two spot detectors, the second unable to make a cluster of three (``min_spots`` 50), compared on the same
    images: the evaluation of the first finds both clusters; the comparison is the FROC difference."""
    from mccad.cli import main

    csv, _ = dataset
    write_spots(tmp_path / "a", spots_manifest())
    write_spots(tmp_path / "b", spots_manifest(input_spec={"spots": {"min_spots": 50}}))
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(tmp_path / "a"), "--data", str(csv), "--out", str(out),
                 "--compare", str(tmp_path / "b"), "--n-boot", "20", "--false-positives", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["operating_point"]["score_thresh"] == 0.4
    assert metrics["froc"]["all"]["sensitivity_at_fp_per_image"]["1.0"] == 1.0
    a = json.loads((out / "predictions.json").read_text())
    b = json.loads((out / "predictions_compare.json").read_text())
    assert a["meta"]["name"] == "spots-test" and b["meta"]["name"] == "spots-test"
    assert sum(len(im["boxes"]) for im in a["images"]) == 2 and sum(len(im["boxes"]) for im in b["images"]) == 0
