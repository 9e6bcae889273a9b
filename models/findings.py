"""From the detector's boxes to the findings the product reports: lesions, images, breasts and the exam.

Every level gets its label from its P(malignant) through ``models.results.decide`` and nothing else, so that no
output (``result.json``, the SRs, the GSPS captions, the overlays, the HTML page) can call a finding benign while
giving it a high probability of cancer, or the other way round:

* lesion: P(malignant) of its box (``fusion.box_malignancy``: the box head's class split under lesion scores, the
  paper's two-class reading of the class score otherwise); the detector's own label only chooses that reading.
  When the lesion has BI-RADS descriptors (a bundle with a descriptor head), its P(malignant) is the descriptors'
  (``models.descriptors.MalignancyMapping``) and the box's is kept as the network's own reading; the two are not
  combined, since nothing has yet shown on real cases that combining helps;
* image: the highest P(malignant) of its lesions that are not typically benign by their descriptors (the most
  suspicious cluster decides, as in the paper's "an image is malignant if a malignant box is found"; a coarse, rim
  or milk-of-calcium cluster is reported but is no suspicious finding), 0 without any such lesion;
* breast: the paper's CC/MLO fusion (``fusion.breast_verdict``, section 2.7) over the image findings;
* exam: the most suspicious breast (``fusion.exam_verdict``).

``fusion.image_verdict`` keeps the paper's image rule for the evaluation that reproduces its tables; the product
reports the rule above, which agrees with it on the label whenever the detector's labels agree with their scores.
Pure functions: numbers in, results out, no network.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from models import fusion
from models.descriptors import ClusterDescriptors, MalignancyMapping
from models.results import BoxXYXY, BreastResult, Decision, ExamResult, ImageResult, LesionResult, decide

#: Views read as CC or MLO when a breast's two views are fused.
CC_LIKE_VIEWS = {"CC", "XCCL"}
MLO_LIKE_VIEWS = {"MLO", "ML", "LM", "LMO", "SIO"}
#: Per-lesion fields filled from the patch heads, for lesions called malignant only.
PATCH_HEAD_FIELDS = {"pathotype_incl": "invasive_incl_microinvasion_probability",
                     "pathotype_excl": "invasive_excl_microinvasion_probability",
                     "er": "er_positive_probability"}


def lesion_finding(lesion_id: int, box: Sequence[float], detector_label: int | str, score: float,
                   class_split: float | None = None,
                   patch_probabilities: Mapping[str, float | None] | None = None,
                   descriptors: ClusterDescriptors | None = None,
                   mapping: MalignancyMapping | None = None) -> LesionResult:
    """One lesion from one detector box (``box`` in source pixels, x0 y0 x1 y1); ``patch_probabilities`` maps a
    patch-head role (``PATCH_HEAD_FIELDS``) to its probability for this box, kept when the lesion is malignant.
    With ``descriptors`` (which need the ``mapping``) the lesion's P(malignant) and interval are the descriptors'."""
    network = fusion.box_malignancy(detector_label, float(score), class_split)
    extras: dict = {}
    if descriptors is None:
        decision = decide(network)
    else:
        if mapping is None:
            raise ValueError("descriptors need the MalignancyMapping that turns them into P(malignant)")
        estimate = mapping.estimate(descriptors)
        decision = decide(estimate.probability, descriptors.typically_benign)
        extras = {"descriptors": descriptors, "malignancy_interval": (estimate.low, estimate.high),
                  "network_malignancy_probability": decide(network).malignancy_probability}
    if decision.label == "malignant":
        extras.update({PATCH_HEAD_FIELDS[role]: value for role, value in (patch_probabilities or {}).items()})
    x0, y0, x1, y1 = (float(v) for v in box)
    return LesionResult(lesion_id=lesion_id, box=BoxXYXY(x0=x0, y0=y0, x1=x1, y1=y1), label=decision.label,
                        probability=decision.probability, malignancy_probability=decision.malignancy_probability,
                        score=min(1.0, max(0.0, float(score))), suspicious=decision.suspicious, **extras)


def image_decision(lesions: Sequence[LesionResult]) -> Decision:
    """An image's finding: the highest P(malignant) of its lesions that are not typically benign, 0 without any."""
    return decide(max((lesion.malignancy_probability for lesion in lesions if not lesion.typically_benign),
                      default=0.0))


def _as_verdict(decision: Decision, image_id: str) -> fusion.ImageVerdict:
    return fusion.ImageVerdict(label=decision.label, malignancy_probability=decision.malignancy_probability,
                               probability=decision.probability, image_id=image_id)


def _strongest(images: list[ImageResult]) -> ImageResult | None:
    return max(images, key=lambda i: i.malignancy_probability) if images else None


def _image_verdict(img: ImageResult | None) -> fusion.ImageVerdict | None:
    return None if img is None else _as_verdict(decide(img.malignancy_probability), img.sop_instance_uid)


def breast_results(images: Sequence[ImageResult]) -> list[BreastResult]:
    """Group images by laterality and fuse CC with MLO by the paper's rule (section 2.7).

    When a breast has several images of one view (repeats), the one with the higher malignancy probability stands
    for that view: a repeat exists because something needed a second look. Images without laterality form their own
    "breast" of unknown side, fused the same way, so nothing is silently dropped.
    """
    by_side: dict[str | None, list[ImageResult]] = defaultdict(list)
    for img in images:
        by_side[img.laterality].append(img)
    results: list[BreastResult] = []
    for side in sorted(by_side, key=lambda s: (s is None, s or "")):
        group = by_side[side]
        cc = _strongest([i for i in group if (i.view or "").upper() in CC_LIKE_VIEWS])
        mlo = _strongest([i for i in group if (i.view or "").upper() in MLO_LIKE_VIEWS])
        if cc is None and mlo is None:  # views unknown: fuse the two strongest as if CC and MLO
            ranked = sorted(group, key=lambda i: i.malignancy_probability, reverse=True)
            cc, mlo = ranked[0], (ranked[1] if len(ranked) > 1 else None)
        verdict = fusion.breast_verdict(_image_verdict(cc), _image_verdict(mlo))
        decision = decide(verdict.malignancy_probability)
        results.append(BreastResult(laterality=side, label=decision.label,
                                    malignancy_probability=decision.malignancy_probability,
                                    probability=decision.probability, decided_by=verdict.image_id or None,
                                    image_uids=[i.sop_instance_uid for i in group]))
    return results


def exam_result(breasts: Sequence[BreastResult]) -> ExamResult:
    """The exam's finding: the most suspicious breast decides (``fusion.exam_verdict``)."""
    verdict = fusion.exam_verdict([_as_verdict(decide(b.malignancy_probability), b.decided_by or "")
                                   for b in breasts])
    decision = decide(verdict.malignancy_probability)
    return ExamResult(label=decision.label, malignancy_probability=decision.malignancy_probability,
                      probability=decision.probability)


def lesions_of_image(first_id: int, boxes: np.ndarray, labels: Sequence[int | str], scores: Sequence[float],
                     class_splits: Sequence[float] | None = None,
                     patch_probabilities: Mapping[str, Sequence[float | None]] | None = None,
                     descriptors: Sequence[ClusterDescriptors] | None = None,
                     mapping: MalignancyMapping | None = None) -> list[LesionResult]:
    """The lesions of one image's detector boxes (source pixels), numbered from ``first_id``; ``descriptors``, when
    given, has one entry per box."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not len(boxes) == len(labels) == len(scores):
        raise ValueError(f"{len(boxes)} boxes, {len(labels)} labels and {len(scores)} scores must match")
    if descriptors is not None and len(descriptors) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(descriptors)} descriptors")
    return [lesion_finding(first_id + k, box, label, score,
                           None if class_splits is None else float(class_splits[k]),
                           {role: values[k] for role, values in (patch_probabilities or {}).items()},
                           None if descriptors is None else descriptors[k], mapping)
            for k, (box, label, score) in enumerate(zip(boxes, labels, scores, strict=True))]
