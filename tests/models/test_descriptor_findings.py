"""Descriptors in the findings: the reported P(malignant) of a cluster comes from its descriptors when the pipeline
has a descriptor head (the network's reading kept beside it), and a typically benign cluster is reported but is no
suspicious finding for the image, breast and exam verdicts."""
from __future__ import annotations

import numpy as np
import pytest

from models.descriptors import CALCIFICATION_TYPES, DISTRIBUTIONS, ClusterDescriptors, MalignancyMapping
from models.findings import breast_results, exam_result, image_decision, lesion_finding
from models.pipeline import Pipeline
from models.results import LesionResult, decide
from tests.models.test_pipeline import _breast_with_label, _gated_bundle

BENIGN = ClusterDescriptors.from_probabilities({"coarse": 0.8, "fine_pleomorphic": 0.2}, {"scattered": 1.0})
SUSPICIOUS = ClusterDescriptors.from_probabilities({"fine_linear_branching": 0.9, "amorphous": 0.1},
                                                   {"segmental": 0.6, "linear": 0.4})


def _mapping(logit_by_type: dict[str, float]) -> MalignancyMapping:
    """A mapping with chosen cell logits (by type, the same for every distribution) and almost no uncertainty."""
    mean = np.array([logit_by_type.get(t, 0.0) for t in CALCIFICATION_TYPES for _ in DISTRIBUTIONS])
    return MalignancyMapping(mean, np.eye(mean.size) * 1e-6)


def test_decide_keeps_the_label_rule_and_says_what_is_suspicious():
    assert decide(0.7) == ("malignant", 0.7, 0.7, True)
    assert decide(0.7, typically_benign=True) == ("malignant", 0.7, 0.7, False)
    assert decide(0.3).suspicious is False and decide(0.3, True).label == "benign"


def test_lesion_probability_comes_from_the_descriptors_and_the_networks_is_kept():
    mapping = MalignancyMapping.load()
    lesion = lesion_finding(1, (0, 0, 10, 10), "benign", 0.9, descriptors=SUSPICIOUS, mapping=mapping)
    estimate = mapping.estimate(SUSPICIOUS)
    assert lesion.malignancy_probability == estimate.probability and lesion.label == "malignant"
    assert lesion.malignancy_interval == (estimate.low, estimate.high)
    assert lesion.network_malignancy_probability == pytest.approx(0.1)  # a benign box scored 0.9
    assert lesion.suspicious and lesion.caption().endswith(": fine linear or fine-linear branching, segmental")
    plain = lesion_finding(1, (0, 0, 10, 10), "benign", 0.9)
    assert plain.descriptors is None and plain.network_malignancy_probability is None
    assert plain.malignancy_probability == pytest.approx(0.1) and plain.caption() == "benign, P(cancer) 0.10"
    with pytest.raises(ValueError, match="MalignancyMapping"):
        lesion_finding(1, (0, 0, 10, 10), "benign", 0.9, descriptors=SUSPICIOUS)


def test_a_typically_benign_cluster_is_reported_but_does_not_decide_the_image_breast_or_exam():
    # a mapping that (unlike the real one) calls coarse calcifications likely malignant: the label follows the
    # probability, but the cluster is still no suspicious finding
    mapping = _mapping({"coarse": 3.0, "fine_linear_branching": -1.0})
    benign = lesion_finding(1, (0, 0, 10, 10), "malignant", 0.99, descriptors=BENIGN, mapping=mapping)
    other = lesion_finding(2, (20, 20, 30, 30), "malignant", 0.99, descriptors=SUSPICIOUS, mapping=mapping)
    assert benign.label == "malignant" and not benign.suspicious and benign.typically_benign
    assert benign.caption().endswith("(typically benign)")
    assert image_decision([benign]) == decide(0.0)
    assert image_decision([benign, other]).malignancy_probability == other.malignancy_probability < 0.5
    with pytest.raises(ValueError, match="suspicious"):
        LesionResult(**{**benign.model_dump(), "suspicious": True})


@pytest.mark.usefixtures("one_torch_thread")
def test_pipeline_calls_the_descriptor_head_on_every_box(tiny_model_dir, tmp_path):
    class HalfAndHalf:
        """Boxes centred in the left half of the image are coarse and regional, the others fine linear branching."""

        def __init__(self):
            self.calls = []

        def predict(self, pixels, boxes, spacing_mm):
            self.calls.append((pixels.shape, np.array(boxes), spacing_mm))
            return [BENIGN if (b[0] + b[2]) / 2 < pixels.shape[1] / 2 else SUSPICIOUS for b in boxes]

    image, _ = _breast_with_label()
    plain = Pipeline.from_model_dir(_gated_bundle(tiny_model_dir, tmp_path / "b", {"margin_mm": 0.0}), device="cpu",
                                    explain=False)
    head = HalfAndHalf()
    described = Pipeline(plain.detector, plain.detector_config, plain.detector_manifest, explain=False,
                         descriptor_head=head)
    before, after = plain.analyze([image]).result, described.analyze([image]).result
    lesions = after.images[0].lesions
    assert len(lesions) >= 2 and [les.box for les in lesions] == [les.box for les in before.images[0].lesions]
    ((shape, boxes, spacing),) = head.calls
    assert shape == image.pixels.shape and spacing == 0.05  # the source image, at the spacing assumed without one
    np.testing.assert_allclose(boxes, [les.box.as_tuple() for les in lesions])
    mapping = described.malignancy_mapping
    for les, plain_les in zip(lesions, before.images[0].lesions, strict=True):
        assert les.malignancy_probability == mapping.estimate(les.descriptors).probability
        assert les.network_malignancy_probability == plain_les.malignancy_probability
    counted = [les.malignancy_probability for les in lesions if not les.typically_benign]
    assert after.images[0].malignancy_probability == max(counted, default=0.0)
    assert after.exam == exam_result(breast_results(after.images))
    roles = {m.role for m in after.models}
    assert "descriptor_mapping" in roles and "descriptor_mapping" not in {m.role for m in before.models}
    assert "descriptors" in after.timings_s and "descriptors" not in before.timings_s


@pytest.mark.usefixtures("one_torch_thread")
def test_a_bundle_with_a_descriptors_part_reports_descriptors(tiny_model_dir, tmp_path):
    import torch

    from models.descriptor_head import DescriptorHeadConfig, build_descriptor_net
    from models.registry import ModelManifest, save_model

    bundle = _gated_bundle(tiny_model_dir, tmp_path / "b", {"margin_mm": 0.0})
    assert Pipeline.from_model_dir(bundle, device="cpu", explain=False).descriptor_head is None
    torch.manual_seed(0)
    net = build_descriptor_net(DescriptorHeadConfig(widths=(8, 8, 8, 8, 8), hidden=16))
    cfg = net.mccad_config
    save_model(bundle / "descriptors", net, ModelManifest(
        name="tiny-descriptors", version="0.0.1", architecture=cfg.architecture, role="descriptors",
        classes=[*cfg.patterns, *cfg.distributions]))
    pipeline = Pipeline.from_model_dir(bundle, device="cpu", explain=False)
    image, _ = _breast_with_label()
    result = pipeline.analyze([image]).result
    lesions = result.images[0].lesions
    assert lesions and all(les.descriptors is not None and les.malignancy_interval is not None for les in lesions)
    assert {"descriptors", "descriptor_mapping"} <= {m.role for m in result.models}
