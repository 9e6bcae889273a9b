"""The descriptor head's contract: crops at a fixed physical scale, probabilities over the descriptor vocabulary,
the same output for the same input, and model folders the registry loads (or a bundle without one)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.descriptor_head import (
    ClusterCrop,
    CnnDescriptorHead,
    DescriptorHeadConfig,
    build_descriptor_net,
    crop_cluster,
)
from models.descriptors import CALCIFICATION_TYPES, DISTRIBUTIONS, ClusterDescriptors
from models.errors import ArchitectureMismatch, WeightsTampered
from models.registry import MANIFEST, ModelManifest, bundle_descriptor_head, load_descriptor_head, save_model

CONFIG = DescriptorHeadConfig()


def _speck_image(spacing_mm: float, side_mm: float = 1.0) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A 40 mm flat noisy image with one bright ``side_mm`` square at its centre, and a 4 mm box around it."""
    rng = np.random.default_rng(0)
    n = int(round(40 / spacing_mm))
    image = 0.4 + 0.01 * rng.standard_normal((n, n)).astype(np.float32)
    half = side_mm / spacing_mm / 2
    c = n / 2
    image[int(c - half):int(c + half), int(c - half):int(c + half)] += 0.3
    box_half = 2.0 / spacing_mm
    return image, (c - box_half, c - box_half, c + box_half, c + box_half)


@pytest.mark.parametrize("spacing_mm", [0.05, 0.1, 0.2])
def test_detail_view_is_at_the_head_scale_whatever_the_pitch(spacing_mm):
    image, box = _speck_image(spacing_mm)
    crop = crop_cluster(image, spacing_mm, box, CONFIG)
    assert crop.pixels.shape == (2, CONFIG.size, CONFIG.size) and crop.pixels.dtype == np.float32
    assert crop.context_mm == pytest.approx(CONFIG.detail_mm)  # a 4 mm box: the context is the detail field
    bright = crop.pixels[0] > 10  # tens of noise spreads above the tissue
    rows, cols = np.nonzero(bright)
    # a 1 mm speck is 10 pixels of 0.1 mm, in the middle of the view, at every source pitch
    assert 9 <= rows.max() - rows.min() + 1 <= 11 and 9 <= cols.max() - cols.min() + 1 <= 11
    assert abs((rows.min() + rows.max()) / 2 - CONFIG.size / 2) <= 1.5


def test_context_view_grows_with_the_box_and_pads_outside_the_image():
    image, _ = _speck_image(0.1)
    crop = crop_cluster(image, 0.1, (0, 0, 300, 200), CONFIG)  # a 30 mm box at the image corner
    assert crop.context_mm == pytest.approx(30 * (1 + 2 * CONFIG.context_margin))
    assert np.isfinite(crop.pixels).all()
    with pytest.raises(ValueError):
        crop_cluster(image, 0.1, (10, 10, 10, 20), CONFIG)


def test_probabilities_over_the_vocabulary_and_deterministic():
    torch.manual_seed(0)
    net = build_descriptor_net(CONFIG)
    image, box = _speck_image(0.07)
    head = CnnDescriptorHead(net)
    first = head.predict(image, np.array([box, (100, 100, 400, 300)]), 0.07)
    second = head.predict(image, np.array([box, (100, 100, 400, 300)]), 0.07)
    assert len(first) == 2 and all(isinstance(d, ClusterDescriptors) for d in first)
    assert first == second
    for d in first:
        assert list(d.type_probabilities) == list(CALCIFICATION_TYPES)
        assert list(d.distribution_probabilities) == list(DISTRIBUTIONS)
        assert sum(d.type_probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert head.predict(image, np.zeros((0, 4)), 0.07) == []
    assert net.predict([]) == []


def test_config_refuses_another_vocabulary():
    with pytest.raises(ValueError, match="types"):
        DescriptorHeadConfig(patterns=tuple(reversed(CALCIFICATION_TYPES)))
    with pytest.raises(ValueError, match="unknown"):
        DescriptorHeadConfig.from_dict({"patterns": list(CALCIFICATION_TYPES), "colour": 1})


def _write_head(folder, net):
    cfg = net.mccad_config
    return save_model(folder, net, ModelManifest(name="test-descriptors", version="0.0.1",
                                                 architecture=cfg.architecture, role="descriptors",
                                                 classes=[*cfg.patterns, *cfg.distributions]))


def test_registry_round_trip_and_bundles_with_and_without_the_part(tmp_path):
    torch.manual_seed(1)
    net = build_descriptor_net(DescriptorHeadConfig(widths=(8, 8, 8, 8, 8), hidden=16)).eval()
    bundle = tmp_path / "bundle"
    assert bundle_descriptor_head(bundle) is None  # no descriptors/ part: no head
    written = _write_head(bundle / "descriptors", net)
    assert written.input_spec["descriptors"]["widths"] == [8, 8, 8, 8, 8]
    head = bundle_descriptor_head(bundle)
    assert head is not None and head.manifest.sha256 == written.sha256
    crop = ClusterCrop(np.random.default_rng(2).standard_normal((2, 96, 96)).astype(np.float32), 12.0)
    stored = build_descriptor_net(net.mccad_config)
    stored.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in net.state_dict().items()})
    expected = stored.predict([crop])[0]
    got = head.net.predict([crop])[0]
    for key, value in expected.type_probabilities.items():
        assert got.type_probabilities[key] == pytest.approx(value, abs=1e-5)


def test_registry_refuses_a_changed_or_mislabelled_head(tmp_path):
    net = build_descriptor_net(DescriptorHeadConfig(widths=(8, 8, 8, 8, 8), hidden=16))
    folder = tmp_path / "descriptors"
    _write_head(folder, net)
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "classes": manifest["classes"][:-1]}))
    with pytest.raises(ArchitectureMismatch, match="classes"):
        load_descriptor_head(folder)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with open(folder / manifest["weights_file"], "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(WeightsTampered):
        load_descriptor_head(folder)


def test_the_strict_reader_checks_a_descriptor_head_manifest_like_any_other(tmp_path):
    from models.errors import ManifestInvalid

    folder = tmp_path / "descriptors"
    _write_head(folder, build_descriptor_net(DescriptorHeadConfig(widths=(8, 8, 8, 8, 8), hidden=16)))
    manifest = json.loads((folder / MANIFEST).read_text())
    for bad, message in [({"input_spec": {**manifest["input_spec"], "tiling": {"tile": 512}}}, "tiling"),
                         ({"thresholds": {"score_thresh": 0.5}}, "thresholds"),
                         ({"input_spec": {"descriptors": {**manifest["input_spec"]["descriptors"], "depth": 3}}},
                          "input_spec.descriptors")]:
        (folder / MANIFEST).write_text(json.dumps({**manifest, **bad}))
        with pytest.raises(ManifestInvalid, match=message):
            load_descriptor_head(folder)
