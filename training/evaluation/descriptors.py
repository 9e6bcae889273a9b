"""How well a descriptor head names what it sees: type and distribution accuracy, their confusion matrices, and the
AUC of P(suspicious type) between clusters of suspicious and of typically benign types; overall, per pitch and per
background source.

P(suspicious) of a crop is the summed probability of the types ``models.descriptors`` does not call typically
benign (amorphous, coarse heterogeneous, fine pleomorphic, fine linear branching).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from models.descriptor_head import DescriptorNet
from models.descriptors import TYPICALLY_BENIGN_TYPES
from training.evaluation.metrics import binary_auc
from training.simulate.cluster_crops import CropSet


def crop_set_probabilities(net: DescriptorNet, crops: CropSet, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Type and distribution probabilities of every crop of ``crops`` (in batches)."""
    types, distributions = [], []
    for start in range(0, len(crops), batch):
        t, d = net.probabilities(crops.pixels[start:start + batch].astype(np.float32),
                                 crops.context_mm[start:start + batch])
        types.append(t)
        distributions.append(d)
    n_t, n_d = len(net.mccad_config.patterns), len(net.mccad_config.distributions)
    return (np.concatenate(types) if types else np.zeros((0, n_t)),
            np.concatenate(distributions) if distributions else np.zeros((0, n_d)))


def _confusion(truth: np.ndarray, predicted: np.ndarray, k: int) -> list[list[int]]:
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix.tolist()


def _summary(types: np.ndarray, distributions: np.ndarray, crops: CropSet, suspicious: np.ndarray,
             rows: np.ndarray) -> dict[str, Any]:
    t_true, d_true = crops.pattern[rows], crops.distribution[rows]
    is_suspicious = suspicious[t_true].astype(np.int64)
    p_suspicious = types[rows][:, suspicious].sum(axis=1)
    return {"n": int(rows.size),
            "type_accuracy": float(np.mean(types[rows].argmax(1) == t_true)) if rows.size else float("nan"),
            "distribution_accuracy": (float(np.mean(distributions[rows].argmax(1) == d_true)) if rows.size
                                      else float("nan")),
            "suspicious_auc": binary_auc(is_suspicious, p_suspicious) if rows.size else float("nan"),
            "suspicious_accuracy": (float(np.mean((p_suspicious > 0.5) == (is_suspicious == 1))) if rows.size
                                    else float("nan"))}


def descriptor_metrics(types: np.ndarray, distributions: np.ndarray, crops: CropSet,
                       patterns: tuple[str, ...], distribution_names: tuple[str, ...]) -> dict[str, Any]:
    """The figures of one crop set: ``overall``, ``per_pitch`` (keyed by the pitch in mm), ``per_source``, and the
    confusion matrices (rows: truth, columns: prediction, in the order of ``types`` and ``distributions``)."""
    suspicious = np.array([p not in TYPICALLY_BENIGN_TYPES for p in patterns])
    everything = np.arange(len(crops))
    per_pitch = {f"{pitch:g}": _summary(types, distributions, crops, suspicious,
                                        np.flatnonzero(np.isclose(crops.spacing_mm, pitch)))
                 for pitch in sorted(set(np.round(crops.spacing_mm.astype(float), 4)))}
    per_source = {str(s): _summary(types, distributions, crops, suspicious, np.flatnonzero(crops.source == s))
                  for s in sorted(set(crops.source.tolist()))}
    return {"overall": _summary(types, distributions, crops, suspicious, everything),
            "per_pitch": per_pitch, "per_source": per_source,
            "types": list(patterns), "distributions": list(distribution_names),
            "type_confusion": _confusion(crops.pattern, types.argmax(1), len(patterns)),
            "distribution_confusion": _confusion(crops.distribution, distributions.argmax(1),
                                                 len(distribution_names))}
