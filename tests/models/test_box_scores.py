"""``models.box_scores``: a detector scores boxes per class (torchvision, the paper) or by lesion-ness
(``1 - P(background)``, one box per proposal), chosen by ``DetectorConfig.score_mode`` and kept by the manifest."""
from __future__ import annotations

import math

import pytest
import torch

from models.box_scores import MAX_LOGIT_OFFSET, set_score_mode
from models.detector import DetectorConfig, build_detector, detect

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py

TINY = dict(min_size=128, max_size=128, fpn_channels=16, box_head_size=32, rpn_pre_nms_top_n_test=50,
            rpn_post_nms_top_n_test=20)


def _heads_inputs():
    """Three proposals whose softmax is (background, benign, malignant) = (0.1, 0.45, 0.45), (0.5, 0.1, 0.4) and
    (0.9, 0.06, 0.04), with zero box regression (each class's box is the proposal itself)."""
    probs = torch.tensor([[0.1, 0.45, 0.45], [0.5, 0.1, 0.4], [0.9, 0.06, 0.04]])
    logits = probs.log()
    proposals = [torch.tensor([[10.0, 10.0, 30.0, 30.0], [60.0, 60.0, 90.0, 80.0], [5.0, 70.0, 25.0, 95.0]])]
    return logits, torch.zeros(3, 3 * 4), proposals, [(128, 128)]


def _noise_image_and_loose_config() -> tuple[torch.Tensor, DetectorConfig]:
    """A noise image and a config that keeps every box (no threshold, no suppression): what the network gives."""
    torch.manual_seed(1)
    loose = DetectorConfig(**TINY, score_thresh=0.0, nms_thresh=1.0, cross_class_suppression=False,
                           detections_per_img=1000)
    return torch.rand(1, 128, 128), loose


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_detector(DetectorConfig(**TINY))


def test_class_mode_is_torchvisions_a_box_per_class_scored_by_its_probability(model):
    heads = model.roi_heads
    set_score_mode(model, "class")
    heads.score_thresh, heads.nms_thresh, heads.detections_per_img = 0.3, 0.3, 100
    boxes, scores, labels = heads.postprocess_detections(*_heads_inputs())
    # the ambiguous lesion (0.45 / 0.45) gives two middling boxes; the 0.4 malignant box passes 0.3 too
    assert sorted(zip(labels[0].tolist(), [round(s, 4) for s in scores[0].tolist()], strict=True)) == [
        (1, 0.45), (2, 0.4), (2, 0.45)]


def test_lesion_mode_gives_one_box_per_proposal_scored_by_one_minus_background(model):
    heads = model.roi_heads
    set_score_mode(model, "lesion")
    heads.score_thresh, heads.nms_thresh, heads.detections_per_img = 0.3, 0.3, 100
    boxes, scores, labels = heads.postprocess_detections(*_heads_inputs())
    order = scores[0].argsort(descending=True)
    assert [round(float(s), 4) for s in scores[0][order]] == [0.9, 0.5]  # 1 - P(background); 0.1 is below 0.3
    assert labels[0][order].tolist()[1] == 2  # the likelier class names the box (0.4 malignant over 0.1 benign)
    assert labels[0][order].tolist()[0] in (1, 2)  # a tie: either class, one box
    torch.testing.assert_close(boxes[0][order], torch.tensor([[10.0, 10.0, 30.0, 30.0], [60.0, 60.0, 90.0, 80.0]]))
    # each box keeps its class split P(malignant) / (P(benign) + P(malignant)): 0.45 / 0.9 and 0.4 / 0.5
    torch.testing.assert_close(heads.mccad_malignancy[0][order], torch.tensor([0.5, 0.8]))
    # at 0.6 the ambiguous lesion still stands (0.9); per class it would be gone (0.45 each)
    heads.score_thresh = 0.6
    assert len(heads.postprocess_detections(*_heads_inputs())[0][0]) == 1
    set_score_mode(model, "class")
    assert len(heads.postprocess_detections(*_heads_inputs())[0][0]) == 0
    assert "postprocess_detections" not in vars(heads)  # torchvision's own method again


def test_detect_follows_the_configs_score_mode_and_lesion_scores_bound_class_scores(model):
    image, loose = _noise_image_and_loose_config()
    per_class = detect(model, [image], loose)[0]
    lesion = detect(model, [image], DetectorConfig(**{**loose.to_dict(), "score_mode": "lesion"}))[0]
    assert len(per_class) > 0 and len(lesion) > 0
    # each proposal's lesion score is the sum of its two class scores: the best lesion box beats the best class box
    assert lesion.scores.max() >= per_class.scores.max() - 1e-6
    assert len(lesion) <= len(per_class)  # one box per proposal instead of one per class
    assert model.mccad_config.score_mode == "lesion"  # detect applied the config to the model
    # lesion boxes carry their class split, and it agrees with their label; class boxes carry none (their score is it)
    assert per_class.malignancy is None and lesion.malignancy is not None and len(lesion.malignancy) == len(lesion)
    assert ((lesion.malignancy >= 0.5) == (lesion.labels == 2)).all()
    assert [lesion.malignancy_probability(k) for k in range(len(lesion))] == lesion.malignancy.tolist()
    assert per_class.malignancy_probability(0) == pytest.approx(
        per_class.scores[0] if per_class.labels[0] == 2 else 1 - per_class.scores[0])
    # the cross-class suppression keeps each survivor's own split
    suppressed = detect(model, [image], DetectorConfig(**{**loose.to_dict(), "score_mode": "lesion",
                                                          "cross_class_suppression": True}))[0]
    pairs = {tuple(b.round(3)): m for b, m in zip(lesion.boxes, lesion.malignancy, strict=True)}
    assert all(pairs[tuple(b.round(3))] == m for b, m in zip(suppressed.boxes, suppressed.malignancy, strict=True))


def test_a_malignant_offset_moves_the_class_split_in_both_modes_and_leaves_the_logits_alone(model):
    heads = model.roi_heads
    heads.score_thresh, heads.nms_thresh, heads.detections_per_img = 0.3, 0.3, 100
    logits, regression, proposals, shapes = _heads_inputs()
    before = logits.clone()
    # log 0.5 halves every proposal's malignant odds: (0.1, 0.45, 0.45) -> (0.129, 0.581, 0.290), and
    # (0.5, 0.1, 0.4) -> (0.625, 0.125, 0.25): only the first proposal's benign box passes 0.3
    set_score_mode(model, "class", math.log(0.5))
    boxes, scores, labels = heads.postprocess_detections(logits, regression, proposals, shapes)
    assert labels[0].tolist() == [1] and scores[0].tolist() == pytest.approx([0.45 / 0.775], abs=1e-5)
    torch.testing.assert_close(logits, before)  # the caller's logits are not shifted in place
    # under lesion scores the offset changes both the lesion-ness and the split: 1 - 0.1 / 0.775, and 0.225 / 0.675
    set_score_mode(model, "lesion", math.log(0.5))
    boxes, scores, labels = heads.postprocess_detections(logits, regression, proposals, shapes)
    first = int(scores[0].argmax())
    assert float(scores[0][first]) == pytest.approx(1 - 0.1 / 0.775, abs=1e-5)
    assert int(labels[0][first]) == 1 and float(heads.mccad_malignancy[0][first]) == pytest.approx(1 / 3, abs=1e-5)
    # a positive offset calls more malignant; 0 is torchvision's own method again
    set_score_mode(model, "class", 1.0)
    assert set(heads.postprocess_detections(logits, regression, proposals, shapes)[2][0].tolist()) == {2}
    set_score_mode(model, "class", 0.0)
    assert "postprocess_detections" not in vars(heads)


def test_detect_applies_the_configs_malignant_offset(model):
    image, loose = _noise_image_and_loose_config()
    plain = detect(model, [image], loose)[0]
    benign_leaning = detect(model, [image], DetectorConfig(**{**loose.to_dict(), "malignant_logit_offset": -3.0}))[0]
    assert model.mccad_config.malignant_logit_offset == -3.0
    share = lambda det: float((det.labels == 2).mean())  # noqa: E731
    top = lambda det, label: float(det.scores[det.labels == label].max())  # noqa: E731
    assert top(benign_leaning, 2) < top(plain, 2) and top(benign_leaning, 1) > top(plain, 1)
    assert share(benign_leaning) <= share(plain)
    set_score_mode(model, "class")


def test_score_mode_travels_through_the_manifest_and_older_manifests_mean_class(tmp_path):
    from models.registry import ModelManifest, load_detector, save_model

    config = DetectorConfig(**TINY, score_mode="lesion")
    torch.manual_seed(0)
    net = build_detector(config)
    manifest = ModelManifest(name="t", version="0", architecture=config.architecture, role="detector",
                             classes=["background", "benign", "malignant"], input_spec={"detector": config.to_dict()})
    save_model(tmp_path / "m", net, manifest)
    _, loaded, _ = load_detector(tmp_path / "m")
    assert loaded.score_mode == "lesion"
    without = {k: v for k, v in config.to_dict().items() if k != "score_mode"}
    assert DetectorConfig.from_dict(without).score_mode == "class"
    with pytest.raises(ValueError, match="score_mode"):
        DetectorConfig(score_mode="objectness")
    with pytest.raises(ValueError, match="score_mode"):
        set_score_mode(net, "max")
    # the malignant offset travels alike; older manifests mean none; absurd ones are refused
    assert loaded.malignant_logit_offset == 0.0
    older = {k: v for k, v in config.to_dict().items() if k != "malignant_logit_offset"}
    assert DetectorConfig.from_dict(older).malignant_logit_offset == 0.0
    assert DetectorConfig.from_dict({**config.to_dict(), "malignant_logit_offset": -1}).malignant_logit_offset == -1.0
    for absurd in (float("nan"), float("inf"), MAX_LOGIT_OFFSET + 1):
        with pytest.raises(ValueError, match="malignant_logit_offset"):
            DetectorConfig(malignant_logit_offset=absurd)
        with pytest.raises(ValueError, match="malignant_logit_offset"):
            set_score_mode(net, "class", absurd)
    assert math.isclose(loaded.score_thresh, config.score_thresh)


def test_the_cli_offers_exactly_the_score_modes():
    """``mccad evaluate`` spells the modes out (importing torch to parse arguments would slow every command); they
    must stay the modes the detector knows. (``mccad export --set detector.score_mode=...`` is checked by
    ``DetectorConfig`` itself.)"""
    from mccad.cli import build_parser
    from models.box_scores import SCORE_MODES

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    option = next(a for a in sub.choices["evaluate"]._actions if a.dest == "score_mode")
    assert tuple(option.choices) == SCORE_MODES
    assert any(a.dest == "malignant_offset" for a in sub.choices["evaluate"]._actions)
