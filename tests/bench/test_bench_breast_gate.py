"""``bench.inference`` on a bundle whose manifest has the breast gate: the gate runs on each image's boxes inside the
timed detection call, as ``Pipeline.analyze`` runs it, and the report says so."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_gated_bundle_is_timed_with_its_gate(tiny_model_dir: Path, tmp_path: Path) -> None:
    from bench import inference
    from models.breast_gate import BreastGate

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_model_dir / "detector", bundle / "detector")
    manifest = json.loads((bundle / "detector" / "manifest.json").read_text())
    manifest["input_spec"]["breast_gate"] = {"margin_mm": 0.0}
    manifest["thresholds"]["detections_per_img"] = 100  # the random detector's boxes fall everywhere
    (bundle / "detector" / "manifest.json").write_text(json.dumps(manifest))

    models = inference.load_models(bundle, quick=True)
    assert models.breast_gate == BreastGate() and models.source["breast_gate"] == {"margin_mm": 0.0}
    image = inference.phantom_mammogram(256, 160, seed=0)
    image[:, :, 70:] = 0.0  # a narrower breast: background beyond x = 70, where some random boxes fall
    images = [image]
    (case,) = inference.detector_cases(models, ["default"], images, [])
    assert case.fields["breast_gate"] is True and case.breast_gate == BreastGate()
    (gated,) = case.run(models.detector, images)
    (every,) = dataclasses.replace(case, breast_gate=None).run(models.detector, images)
    expected = BreastGate().apply(every, images[0][0].numpy(), case.spacing_mm)
    assert 0 < len(gated) < len(every)
    np.testing.assert_array_equal(gated.boxes, expected.boxes)
