"""One detector path (``models.detect``): what evaluation keeps at the operating point is what the pipeline shows,
whole-image or tiled, behind the breast gate; the gate runs before the cross-class suppression."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.types import ImageMeta, MammogramImage

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROWS, COLS = 300, 200


def _detector_folder(tiny_model_dir: Path, folder: Path, tiling: dict | None) -> Path:
    """The tiny bundle's detector (random weights) with the breast gate, ``tiling`` and at most 100 boxes."""
    shutil.copytree(tiny_model_dir / "detector", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["thresholds"]["detections_per_img"] = 100
    manifest["input_spec"]["breast_gate"] = {"margin_mm": 0.0}
    manifest["input_spec"].pop("tiling", None)
    if tiling is not None:
        manifest["input_spec"]["tiling"] = tiling
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _sample(folder: Path):
    """A left CC as an 8-bit PNG: a breast half-ellipse against the chest wall and a bright film label outside it."""
    from training.datasets.samples import Sample

    yy, xx = np.mgrid[0:ROWS, 0:COLS]
    breast = (xx / 130.0) ** 2 + ((yy - 150) / 100.0) ** 2 < 1
    pixels = np.where(breast, 0.5, 0.0) + breast * np.random.default_rng(0).random((ROWS, COLS)) * 0.1
    pixels[10:30, 150:170] = 0.95
    path = folder / "image.png"
    Image.fromarray((pixels * 255).round().astype(np.uint8)).save(path)
    return Sample(image_id=path.name, source=path, patient_id="P1", breast="L", view="CC")


@pytest.mark.parametrize("tiling", [None, {"tile": 160, "overlap": 32, "batch": 4}], ids=["whole", "tiled"])
def test_evaluation_at_the_operating_point_keeps_what_the_pipeline_shows(tiny_model_dir, tmp_path, tiling) -> None:
    from models.pipeline import Pipeline
    from models.registry import load_manifest
    from training.datasets.images import load_pixels
    from training.evaluation.evaluate import OperatingPoint, kept_boxes
    from training.evaluation.predict import load_model, predict

    folder = _detector_folder(tiny_model_dir, tmp_path / "detector", tiling)
    sample = _sample(tmp_path)
    loaded = load_model(folder)
    (every,) = predict(loaded, [sample])
    # an operating point inside the random detector's scores, so that the threshold has boxes to drop (and, on the
    # whole image, the cross-class suppression too)
    thresh = float(np.median(every.scores))
    op = OperatingPoint(thresh, True, loaded.network_config.cross_class_iou)
    boxes, labels, scores = kept_boxes(every, op)
    assert 0 < len(scores) < len(every.scores)
    unsuppressed = kept_boxes(every, dataclasses.replace(op, cross_class_suppression=False))[2]
    assert len(scores) < len(unsuppressed) or tiling is not None

    config = dataclasses.replace(loaded.network_config, score_thresh=thresh)
    pipeline = Pipeline(loaded.model, config, load_manifest(folder), explain=False)
    assert pipeline.breast_gate is not None and (pipeline.tiling is None) == (tiling is None)
    meta = ImageMeta(sop_instance_uid="1.2.3.4.1", sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
                     study_instance_uid="1.2.3", series_instance_uid="1.2.3.4", exam_key="1.2.3", laterality="L",
                     view="CC", rows=ROWS, columns=COLS)
    lesions = pipeline.analyze([MammogramImage(pixels=load_pixels(sample), meta=meta)]).result.images[0].lesions
    shown = np.array([[les.box.x0, les.box.y0, les.box.x1, les.box.y1] for les in lesions]).reshape(-1, 4)
    expected = boxes.copy()
    expected[:, [0, 2]] = expected[:, [0, 2]].clip(0, COLS)
    expected[:, [1, 3]] = expected[:, [1, 3]].clip(0, ROWS)
    assert [les.label for les in lesions] == labels
    np.testing.assert_allclose([les.score for les in lesions], scores, atol=1e-5)
    np.testing.assert_allclose(shown, expected, atol=1e-3)


def test_the_gate_runs_before_the_cross_class_suppression() -> None:
    """A malignant box just outside the breast overlapping a benign one just inside: suppressing first would drop the
    benign box, and the gate the malignant one, leaving nothing where evaluation (gate, then suppression) keeps the
    benign box."""
    import torch

    from models.breast_gate import BreastGate, standardised_breast_mask
    from models.detect import DetectorRunner, at_operating_point
    from models.detector import DetectorConfig, Detections

    image = np.zeros((400, 300), np.float32)
    yy, xx = np.mgrid[:400, :300]
    image[((yy - 200) / 180.0) ** 2 + (xx / 150.0) ** 2 <= 1.0] = 0.6  # breast on the left, edge at x = 150 on row 200
    edge = int(np.flatnonzero(standardised_breast_mask(image, 0.1)[200])[-1])
    benign = [edge - 14, 190, edge + 6, 210]  # centre 4 px inside the breast
    malignant = [edge - 6, 190, edge + 14, 210]  # centre 4 px outside; IoU 12 / 28 = 0.43 > 0.4, the IoU used here
    det = Detections(boxes=np.array([malignant, benign], np.float32), labels=np.array([2, 1]),
                     scores=np.array([0.9, 0.8], np.float32))
    config = DetectorConfig(cross_class_iou=0.4)
    runner = DetectorRunner(torch.nn.Identity(), config, breast_gate=BreastGate(), spacing_mm=0.1)
    tensor = torch.from_numpy(image)[None]
    kept = runner.gate(det, tensor)
    assert kept.labels.tolist() == [1] and kept.boxes.tolist() == [benign]
    assert runner.gate(det, tensor, keep_all=True).labels.tolist() == [1]  # evaluation: the gate alone
    # without a gate it is the released code's rule alone: the malignant box wins
    assert at_operating_point(det, config).labels.tolist() == [2]
    assert at_operating_point(det, dataclasses.replace(config, cross_class_suppression=False)).labels.tolist() == [2, 1]
    assert at_operating_point(det, dataclasses.replace(config, score_thresh=0.85)).labels.tolist() == [2]
