"""The descriptor head the bundles ship: both bundles load the same verified head, its manifest records test figures
that meet its rule (docs/experiments/descriptor-head.md), and the shipped weights tell suspicious from typically
benign clusters on simulated crops none of its sets used (an untrained head would sit near 0.5 and 0.1)."""
from __future__ import annotations

from pathlib import Path

import pytest

from models.registry import bundle_descriptor_head
from training.evaluation.descriptors import crop_set_probabilities, descriptor_metrics
from training.simulate.cluster_crops import CropSetSpec, make_crop_set

WEIGHTS = Path(__file__).resolve().parents[2] / "models" / "weights"
BUNDLES = ("default", "mias-adapted")


@pytest.mark.parametrize("bundle", BUNDLES)
def test_each_bundle_ships_the_head_in_float16_with_figures_that_meet_its_rule(bundle):
    head = bundle_descriptor_head(WEIGHTS / bundle)
    assert head is not None
    manifest = head.manifest
    assert manifest.sha256 == bundle_descriptor_head(WEIGHTS / BUNDLES[0]).manifest.sha256  # one head for both
    assert manifest.dtype == "float16"
    assert (WEIGHTS / bundle / "descriptors" / "model.safetensors").stat().st_size < 1 << 20
    test = manifest.metrics["test"]
    assert test["type_accuracy"] >= 0.50 and test["suspicious_auc"] >= 0.80
    assert manifest.synthetic_only


def test_shipped_head_reads_fresh_simulated_clusters():
    head = bundle_descriptor_head(WEIGHTS / "default")
    spec = CropSetSpec(n=60, seed=31, spacings=(0.1,), real_images=(), phantom_fraction=1.0, phantoms=1,
                       head=head.config)
    crops = make_crop_set(spec)
    types, distributions = crop_set_probabilities(head.net, crops)
    overall = descriptor_metrics(types, distributions, crops, head.config.patterns,
                                 head.config.distributions)["overall"]
    assert overall["n"] >= 40
    assert overall["suspicious_auc"] > 0.75
    assert overall["type_accuracy"] > 0.35
