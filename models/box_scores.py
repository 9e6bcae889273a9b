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
either way runs either way. Measured on the shipped model: ``models/weights/default/MODEL_CARD.md``.

Not yet carried: the class split of a lesion box. The pipeline reads a box's probability of malignancy as its score
(malignant box) or one minus it (benign box), the two-class reading that suits ``class`` scores; under ``lesion``
scores that reading is rough (a malignant box of lesion score 0.9 may be 0.5 / 0.4 malignant / benign): to be carried
through before a model ships with ``lesion`` scores.
"""
from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import boxes as box_ops

SCORE_MODES = ("class", "lesion")


def lesion_postprocess(self: RoIHeads, class_logits: torch.Tensor, box_regression: torch.Tensor,
                       proposals: list[torch.Tensor], image_shapes: list[tuple[int, int]],
                       ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """``RoIHeads.postprocess_detections`` with one box per proposal scored ``1 - P(background)``; thresholds,
    small-box removal, per-class NMS and the detections cap as torchvision applies them."""
    counts = [len(p) for p in proposals]
    decoded = self.box_coder.decode(box_regression, proposals)
    probabilities = F.softmax(class_logits, -1)
    all_boxes, all_scores, all_labels = [], [], []
    for boxes, probs, shape in zip(decoded.split(counts, 0), probabilities.split(counts, 0), image_shapes):
        boxes = box_ops.clip_boxes_to_image(boxes, shape)
        labels = probs[:, 1:].argmax(dim=1) + 1
        scores = 1.0 - probs[:, 0]
        boxes = boxes[torch.arange(len(boxes), device=boxes.device), labels]
        keep = torch.where(scores > self.score_thresh)[0]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = box_ops.batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
        all_boxes.append(boxes[keep])
        all_scores.append(scores[keep])
        all_labels.append(labels[keep])
    return all_boxes, all_scores, all_labels


def set_score_mode(model: FasterRCNN, mode: str) -> None:
    """Make ``model`` score its boxes by ``mode`` (``SCORE_MODES``); holds no weights, so it can change any time."""
    if mode not in SCORE_MODES:
        raise ValueError(f"unknown score_mode {mode!r}; choose one of {', '.join(SCORE_MODES)}")
    heads = model.roi_heads
    if mode == "lesion":
        heads.postprocess_detections = types.MethodType(lesion_postprocess, heads)
    else:
        heads.__dict__.pop("postprocess_detections", None)  # torchvision's own method again
