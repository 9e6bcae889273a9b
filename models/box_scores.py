"""What a detector's box score means: torchvision's per-class probability, or the probability of a lesion.

Faster R-CNN's box head gives each proposal a softmax over background, benign and malignant. torchvision (and the
paper, section 2.6) turns every proposal into one box per class, scored by that class's probability
(``score_mode = "class"``). A cluster whose look sits between the two classes, as faint suspicious ones often do,
then gets two boxes of middling score (benign 0.45, malignant 0.45 say) although the network is 90 % sure there is a
lesion: at a threshold chosen for few false positives both are dropped, and the lesion is missed.

``score_mode = "lesion"`` scores each proposal by ``1 - P(background)``, the probability that it holds a lesion of
either class, and gives it one box: the likelier class's label and that class's box regression. Detection (boxes,
FROC) then ranks by lesion-ness; the benign/malignant call stays the likelier class, as the paper's image rule ("an
image is malignant if a malignant box is found") needs. The mode is a setting of the detector's manifest
(``DetectorConfig.score_mode``): the network is the same, only its post-processing differs, so a model trained
either way runs either way. Measured on the shipped model: ``docs/experiments/default-bundle-record.md``.

The class split of a lesion box is carried with it: ``lesion_postprocess`` keeps each box's
``P(malignant) / (P(benign) + P(malignant))`` (the network's malignancy reading of a proposal it believes is a lesion)
in ``roi_heads.mccad_malignancy``, which ``models.detector.detect`` attaches to the ``Detections``
(``malignancy``), tiling and the breast gate carry, and the pipeline reports as a lesion's
``malignancy_probability``. Under ``class`` scores the paper's two-class reading of the score stays (the score if
malignant, one minus it if benign). Why not that reading under ``lesion`` scores too: there a box's score is its
lesion-ness, so a proposal at (background, benign, malignant) = (0.1, 0.44, 0.46) would be reported as a 0.90
probability of cancer where the network says 0.51 (the two readings compared: the default bundle's record in
``docs/experiments/``).

``malignant_logit_offset`` (``DetectorConfig``; 0 by default) adds a constant to the malignant logit of every
proposal before either mode's softmax: the prior-shift correction ("logit adjustment") for a network whose training
data made it call too much malignant (or benign). A fine-tune on clusters whose suspicious patterns are all visible
moved the shipped detector's calls towards malignant (``docs/experiments/default-bundle-record.md``, "0.6.2"); the
offset puts the split back without
retraining, chosen on validation images like the operating point, and like it a setting of the manifest. It acts at
inference only (``postprocess_detections``), so training losses are unchanged.
"""
from __future__ import annotations

import math
import types
from typing import Callable

import torch
import torch.nn.functional as F
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import boxes as box_ops

SCORE_MODES = ("class", "lesion")
MALIGNANT = 2  # the box head's class index of malignant (0 background, 1 benign)
MAX_LOGIT_OFFSET = 10.0  # beyond this a class is all but switched off: a typo, not a calibration


def lesion_postprocess(self: RoIHeads, class_logits: torch.Tensor, box_regression: torch.Tensor,
                       proposals: list[torch.Tensor], image_shapes: list[tuple[int, int]],
                       ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """``RoIHeads.postprocess_detections`` with one box per proposal scored ``1 - P(background)``; thresholds,
    small-box removal, per-class NMS and the detections cap as torchvision applies them."""
    counts = [len(p) for p in proposals]
    decoded = self.box_coder.decode(box_regression, proposals)
    probabilities = F.softmax(class_logits, -1)
    all_boxes, all_scores, all_labels, all_malignancy = [], [], [], []
    for boxes, probs, shape in zip(decoded.split(counts, 0), probabilities.split(counts, 0), image_shapes, strict=True):
        boxes = box_ops.clip_boxes_to_image(boxes, shape)
        labels = probs[:, 1:].argmax(dim=1) + 1
        scores = 1.0 - probs[:, 0]
        malignancy = probs[:, 2] / (probs[:, 1] + probs[:, 2]).clamp_min(torch.finfo(probs.dtype).tiny)
        boxes = boxes[torch.arange(len(boxes), device=boxes.device), labels]
        keep = torch.where(scores > self.score_thresh)[0]
        boxes, scores, labels, malignancy = boxes[keep], scores[keep], labels[keep], malignancy[keep]
        keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
        boxes, scores, labels, malignancy = boxes[keep], scores[keep], labels[keep], malignancy[keep]
        keep = box_ops.batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
        all_boxes.append(boxes[keep])
        all_scores.append(scores[keep])
        all_labels.append(labels[keep])
        all_malignancy.append(malignancy[keep])
    self.mccad_malignancy = all_malignancy  # read by models.detector.detect: the forward pass returns three lists
    return all_boxes, all_scores, all_labels


def with_malignant_offset(postprocess: Callable, offset: float) -> Callable:
    """``postprocess`` (torchvision's or ``lesion_postprocess``) run on class logits whose malignant column is
    shifted by ``offset``; the logits the caller passed are left as they are."""
    def shifted(self: RoIHeads, class_logits: torch.Tensor, box_regression: torch.Tensor,
                proposals: list[torch.Tensor], image_shapes: list[tuple[int, int]]):
        adjusted = class_logits.clone()
        adjusted[:, MALIGNANT] += offset
        return postprocess(self, adjusted, box_regression, proposals, image_shapes)
    return shifted


def check_malignant_offset(offset: float) -> float:
    """``offset`` as a float, refused when it is not finite or larger than ``MAX_LOGIT_OFFSET`` either way."""
    offset = float(offset)
    if not math.isfinite(offset) or abs(offset) > MAX_LOGIT_OFFSET:
        raise ValueError(f"malignant_logit_offset must be finite and within +-{MAX_LOGIT_OFFSET:g}, got {offset}")
    return offset


def set_score_mode(model: FasterRCNN, mode: str, malignant_logit_offset: float = 0.0) -> None:
    """Make ``model`` score its boxes by ``mode`` (``SCORE_MODES``), its malignant logits shifted by
    ``malignant_logit_offset``; holds no weights, so it can change any time."""
    if mode not in SCORE_MODES:
        raise ValueError(f"unknown score_mode {mode!r}; choose one of {', '.join(SCORE_MODES)}")
    offset = check_malignant_offset(malignant_logit_offset)
    heads = model.roi_heads
    heads.__dict__.pop("postprocess_detections", None)  # torchvision's own method again
    postprocess = lesion_postprocess if mode == "lesion" else RoIHeads.postprocess_detections
    if offset:
        postprocess = with_malignant_offset(postprocess, offset)
    if postprocess is not RoIHeads.postprocess_detections:
        heads.postprocess_detections = types.MethodType(postprocess, heads)
