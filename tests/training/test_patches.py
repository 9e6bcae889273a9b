"""The patch heads: targets follow the paper's groupings (section 3.4), patches are cut as the pipeline cuts them,
a head trains and exports as a registry classifier with its task as role."""
from __future__ import annotations

import numpy as np
import pytest

from models.registry import load_classifier
from training.datasets.images import prepare_all
from training.datasets.samples import Lesion
from training.export import export_run
from training.trainers.common import TrainingError
from training.trainers.patches import PatchTrainConfig, lesion_patches, patch_target, train_patch_head

from tests.training.tiny_images import write_tiny_samples


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


@pytest.mark.parametrize("pathotype, er, incl, excl, er_target", [
    ("invasive", "positive", 1, 1, 1),
    ("dcis_microinvasion", "negative", 1, 0, 0),
    ("dcis", None, 0, 0, None),
    (None, "positive", None, None, 1),
])
def test_patch_targets_follow_section_3_4(pathotype, er, incl, excl, er_target):
    les = Lesion((0, 0, 5, 5), "malignant", pathotype, er)
    assert (patch_target(les, "pathotype_incl"), patch_target(les, "pathotype_excl"), patch_target(les, "er")) == (
        incl, excl, er_target)
    assert patch_target(Lesion((0, 0, 5, 5), "benign"), "er") is None


def test_patch_head_trains_and_exports(tmp_path):
    samples = write_tiny_samples(tmp_path / "img", 8)
    cfg = PatchTrainConfig(epochs=2, task="er", batch_size=4, max_side=160, classifier={"patch_size": 32})
    items = prepare_all(samples, cfg.standardise_config())
    patches, targets = lesion_patches(items, "er", 32)
    assert len(patches) == 4 and patches[0].shape == (32, 32) and sorted(set(targets)) == [0, 1]
    # the patch holds the lesion: brighter than the image on average
    assert float(np.mean(patches[0])) > float(np.mean(items[0].pixels))
    run = train_patch_head(samples[:6], samples[6:], cfg, tmp_path / "run", progress=False)
    assert run.epochs_completed == 2 and all(np.isfinite(h["train_loss"]) for h in run.history)
    model_dir = export_run(tmp_path / "run", tmp_path / "er", synthetic_only=True)
    model, config, manifest = load_classifier(model_dir)
    assert manifest.role == "er" and config.input_size == 32 and manifest.classes == ["er_negative", "er_positive"]
    with pytest.raises(TrainingError, match="pathotype"):
        train_patch_head([s for s in samples if s.label == "benign"], None, cfg, tmp_path / "none", progress=False)
