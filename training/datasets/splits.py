"""Patient-level splits: a patient's images are all on one side of every split (paper section 2.1 splits 4:1 by
patient; images of one woman are correlated, so an image-level split would leak).

Stratification is by the patient's label (malignant when any of their images is), so that each side holds about
the same share of cancers; k-fold uses scikit-learn's ``StratifiedGroupKFold`` with patients as groups.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from training.datasets.samples import Sample


def patient_labels(samples: Sequence[Sample]) -> dict[str, int]:
    """Patient -> 1 if any of their images is malignant, else 0."""
    out: dict[str, int] = defaultdict(int)
    for s in samples:
        out[s.patient_id] = max(out[s.patient_id], s.target)
    return dict(out)


def split_by_patient(samples: Sequence[Sample], fraction: float, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """(rest, held-out): about ``fraction`` of the patients of each label held out; no patient on both sides.

    At least one patient of a label is held out when that label has two or more patients and ``fraction`` > 0.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    labels = patient_labels(samples)
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    for value in (0, 1):
        patients = sorted(p for p, v in labels.items() if v == value)
        if not patients or fraction == 0.0:
            continue
        n = int(round(fraction * len(patients)))
        if n == 0 and len(patients) >= 2:
            n = 1
        n = min(n, len(patients) - 1) if len(patients) > 1 else n
        held.update(rng.permutation(patients)[:n].tolist())
    rest = [s for s in samples if s.patient_id not in held]
    out = [s for s in samples if s.patient_id in held]
    return rest, out


def kfold_by_patient(samples: Sequence[Sample], k: int, seed: int = 0) -> list[tuple[list[Sample], list[Sample]]]:
    """``k`` (train, test) pairs: every patient is in exactly one test fold; folds stratified by image label."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_patients = len({s.patient_id for s in samples})
    if k < 2 or k > n_patients:
        raise ValueError(f"k-fold needs 2 <= k <= number of patients ({n_patients}), got {k}")
    y = np.asarray([s.target for s in samples])
    groups = np.asarray([s.patient_id for s in samples])
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = []
    for train_idx, test_idx in splitter.split(np.zeros(len(samples)), y, groups):
        folds.append(([samples[i] for i in train_idx], [samples[i] for i in test_idx]))
    return folds
