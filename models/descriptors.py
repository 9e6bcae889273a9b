"""BI-RADS descriptors of a calcification cluster: the vocabulary, the coded concepts DICOM uses for it, the typed
prediction of a descriptor head and the mapping from descriptors to a calibrated P(malignant).

Vocabulary. The calcification types are the simulator's patterns (``training.simulate.morphology.PATTERNS``) and the
distributions its ``DISTRIBUTIONS``, under the same keys, so that a head trained on simulated clusters predicts
them directly. Each key names its BI-RADS words (ACR BI-RADS Atlas, 5th ed.), its code in PS3.16 CID 6010
"Mammography Calcification Type" or CID 6012 "Calcification Distribution Modifier" (code values and meanings as
pydicom's bundled CID tables give them; a test checks every one against those tables), and the spellings of the
CBIS-DDSM description tables that denote the same concept (``training.descriptor_malignancy`` fits the mapping on
them). Two keys share a concept: the simulator's ``diffuse`` pattern draws round calcifications (its distribution is
what makes it diffuse), so its type is "round"; ``scattered`` is BI-RADS "regional". ``coarse_heterogeneous`` has
no CBIS-DDSM spelling (its lexicon predates the term), so the mapping knows it only through its prior.

A type is *typically benign* when the atlas puts it under "typically benign" (punctate is counted with round, as
the 5th edition does). Such a cluster is reported with its descriptors but is not a suspicious finding
(``models.results.decide``).

The mapping (``MalignancyMapping``) holds, for every (type, distribution) pair, posterior draws of P(malignant |
type, distribution); for a cluster whose descriptors are probabilities it gives
P(malignant) = sum over (t, d) of p(t) p(d) P(malignant | t, d), with a 95 % interval from the same draws.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

#: The mapping shipped with the package (written by ``python -m training.descriptor_malignancy``).
DEFAULT_MAPPING_PATH = Path(__file__).parent / "weights" / "descriptor-malignancy.json"
#: How far a descriptor's probabilities may sum away from 1.
_SUM_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Term:
    """One descriptor value: our key, the BI-RADS words, its coded concept (value, scheme, meaning) and the
    CBIS-DDSM table spellings of the same concept."""

    key: str
    birads: str
    code: tuple[str, str, str]
    cbis: tuple[str, ...] = ()
    typically_benign: bool = False


#: Calcification types, in the order of the simulator's PATTERNS (CID 6010 codes).
TYPE_TERMS: dict[str, Term] = {t.key: t for t in (
    Term("punctate", "punctate", ("129755006", "SCT", "Punctate calcification"), ("PUNCTATE",), True),
    Term("round", "round", ("129756007", "SCT", "Round shaped calcification"), ("ROUND_AND_REGULAR",), True),
    Term("coarse", "coarse or popcorn-like", ("129749001", "SCT", "Coarse (popcorn-like) calcification"),
         ("COARSE",), True),
    Term("rim", "rim", ("129751002", "SCT", "Eggshell calcification"),
         ("EGGSHELL", "LUCENT_CENTER", "LUCENT_CENTERED"), True),
    Term("milk_of_calcium", "milk of calcium", ("129753004", "SCT", "Milk of calcium calcification"),
         ("MILK_OF_CALCIUM",), True),
    Term("diffuse", "round", ("129756007", "SCT", "Round shaped calcification"), ("ROUND_AND_REGULAR",), True),
    Term("amorphous", "amorphous", ("129760005", "SCT", "Amorphous calcification"), ("AMORPHOUS",)),
    Term("coarse_heterogeneous", "coarse heterogeneous", ("129763007", "SCT", "Heterogeneous calcification")),
    Term("fine_pleomorphic", "fine pleomorphic", ("111344", "DCM", "Fine pleomorphic calcification"),
         ("PLEOMORPHIC",)),
    Term("fine_linear_branching", "fine linear or fine-linear branching",
         ("129762002", "SCT", "Fine linear, branching (casting) calcification"), ("FINE_LINEAR_BRANCHING",)),
)}
#: Distributions, in the order of the simulator's DISTRIBUTIONS (CID 6012 codes).
DISTRIBUTION_TERMS: dict[str, Term] = {t.key: t for t in (
    Term("grouped", "grouped", ("129766004", "SCT", "Grouped calcification distribution"), ("CLUSTERED",)),
    Term("linear", "linear", ("129765000", "SCT", "Linear calcification distribution"), ("LINEAR",)),
    Term("segmental", "segmental", ("129768003", "SCT", "Segmental calcification distribution"), ("SEGMENTAL",)),
    Term("scattered", "regional", ("129767008", "SCT", "Regional calcification distribution"), ("REGIONAL",)),
    Term("diffuse", "diffuse", ("129764001", "SCT", "Diffuse calcification distribution"),
         ("DIFFUSELY_SCATTERED",)),
)}
CALCIFICATION_TYPES: tuple[str, ...] = tuple(TYPE_TERMS)
DISTRIBUTIONS: tuple[str, ...] = tuple(DISTRIBUTION_TERMS)
TYPICALLY_BENIGN_TYPES: frozenset[str] = frozenset(k for k, t in TYPE_TERMS.items() if t.typically_benign)


def _check_probabilities(name: str, probabilities: dict[str, float], vocabulary: tuple[str, ...]) -> None:
    unknown = sorted(set(probabilities) - set(vocabulary))
    if unknown:
        raise ValueError(f"{name} has unknown keys {unknown}; known: {', '.join(vocabulary)}")
    values = np.array(list(probabilities.values()), dtype=np.float64)
    if values.size == 0 or np.any(~np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"{name} must be finite, non-negative probabilities, got {probabilities}")
    if abs(values.sum() - 1.0) > _SUM_TOLERANCE:
        raise ValueError(f"{name} must sum to 1, got {values.sum():.6f}")


def _most_likely(probabilities: dict[str, float], vocabulary: tuple[str, ...]) -> str:
    """The key of the highest probability; ties go to the earlier key of the vocabulary."""
    return max(vocabulary, key=lambda k: (probabilities.get(k, 0.0), -vocabulary.index(k)))


class ClusterDescriptors(BaseModel):
    """A descriptor head's reading of one cluster: probabilities over ``CALCIFICATION_TYPES`` and over
    ``DISTRIBUTIONS`` (keys left out have probability 0), and the most likely of each. Build it with
    :meth:`from_probabilities`, which picks the most likely terms."""

    model_config = ConfigDict(frozen=True)

    calcification_type: str = Field(description="most likely calcification type (a CALCIFICATION_TYPES key)")
    distribution: str = Field(description="most likely distribution (a DISTRIBUTIONS key)")
    type_probabilities: dict[str, float]
    distribution_probabilities: dict[str, float]

    @model_validator(mode="after")
    def _consistent(self):
        _check_probabilities("type_probabilities", self.type_probabilities, CALCIFICATION_TYPES)
        _check_probabilities("distribution_probabilities", self.distribution_probabilities, DISTRIBUTIONS)
        for name, key, probs in (("calcification_type", self.calcification_type, self.type_probabilities),
                                 ("distribution", self.distribution, self.distribution_probabilities)):
            if probs.get(key, 0.0) < max(probs.values()):
                raise ValueError(f"{name} {key!r} is not the most likely of {probs}")
        return self

    @classmethod
    def from_probabilities(cls, type_probabilities: dict[str, float],
                           distribution_probabilities: dict[str, float]) -> "ClusterDescriptors":
        types = {k: float(v) for k, v in type_probabilities.items()}
        dists = {k: float(v) for k, v in distribution_probabilities.items()}
        return cls(calcification_type=_most_likely(types, CALCIFICATION_TYPES),
                   distribution=_most_likely(dists, DISTRIBUTIONS),
                   type_probabilities=types, distribution_probabilities=dists)

    @property
    def typically_benign(self) -> bool:
        """True when the most likely type is one the atlas calls typically benign."""
        return self.calcification_type in TYPICALLY_BENIGN_TYPES

    def type_vector(self) -> np.ndarray:
        return np.array([self.type_probabilities.get(k, 0.0) for k in CALCIFICATION_TYPES], dtype=np.float64)

    def distribution_vector(self) -> np.ndarray:
        return np.array([self.distribution_probabilities.get(k, 0.0) for k in DISTRIBUTIONS], dtype=np.float64)

    def caption(self) -> str:
        """The descriptors in words, e.g. "fine pleomorphic, grouped"."""
        return f"{TYPE_TERMS[self.calcification_type].birads}, {DISTRIBUTION_TERMS[self.distribution].birads}"


@runtime_checkable
class DescriptorHead(Protocol):
    """What the pipeline calls when a bundle ships a descriptor head.

    ``predict`` takes one source image as the reader decodes it (``models.types.MammogramImage.pixels``: float32 in
    [0, 1], bright = dense, the image's own orientation), its detector boxes in those pixels (N x 4, float, x0 y0 x1
    y1) and the pixel spacing in millimetres, and returns one ``ClusterDescriptors`` per box, in order. The head
    crops and resamples as it was trained. A head may carry a ``manifest`` (``models.registry.ModelManifest``): the
    result then names it among its models."""

    def predict(self, pixels: np.ndarray, boxes: np.ndarray, spacing_mm: float) -> list[ClusterDescriptors]:
        ...


class MalignancyEstimate(BaseModel):
    """P(malignant) of a cluster from its descriptors, with its 95 % credible interval."""

    model_config = ConfigDict(frozen=True)

    probability: float = Field(ge=0.0, le=1.0)
    low: float = Field(ge=0.0, le=1.0)
    high: float = Field(ge=0.0, le=1.0)


class MalignancyMapping:
    """Descriptors -> P(malignant), from the mapping file ``training.descriptor_malignancy`` writes.

    The file holds, for every (type, distribution) cell in the order of ``CALCIFICATION_TYPES`` x ``DISTRIBUTIONS``,
    the posterior mean and covariance of the cell's logit. ``draws`` posterior draws are taken once, with a fixed
    seed, so that the same descriptors always give the same figures. The estimate is the mean over draws of the
    mixture sum p(t) p(d) P(malignant | t, d); the interval its 2.5 and 97.5 percentiles."""

    #: How results name the mapping among their models (``version``: the mapping file's format and fitting script).
    name = "cbis-ddsm-descriptor-malignancy"
    version = "1"

    def __init__(self, logit_mean: np.ndarray, logit_cov: np.ndarray, *, draws: int = 4000, seed: int = 0,
                 source: str = "") -> None:
        n = len(CALCIFICATION_TYPES) * len(DISTRIBUTIONS)
        mean = np.asarray(logit_mean, dtype=np.float64).reshape(-1)
        cov = np.asarray(logit_cov, dtype=np.float64)
        if mean.shape != (n,) or cov.shape != (n, n):
            raise ValueError(f"a mapping needs {n} cell logits and a {n} x {n} covariance, got {mean.shape} and "
                             f"{cov.shape}")
        self.source = source
        self.logit_mean = mean
        #: identifies the fitted values (part of output UIDs through the result's model list)
        self.sha256 = hashlib.sha256(mean.tobytes() + cov.tobytes()).hexdigest()
        rng = np.random.default_rng(seed)
        # eigh, not cholesky: a covariance made of a product A S A^T is only positive semi-definite
        values, vectors = np.linalg.eigh((cov + cov.T) / 2)
        root = vectors * np.sqrt(np.clip(values, 0.0, None))
        logits = mean + rng.standard_normal((draws, n)) @ root.T
        self.cell_draws = 1.0 / (1.0 + np.exp(-logits))  # draws x cells

    @classmethod
    def load(cls, path: Path | str = DEFAULT_MAPPING_PATH) -> "MalignancyMapping":
        data = json.loads(Path(path).read_text())
        if list(data["types"]) != list(CALCIFICATION_TYPES) or list(data["distributions"]) != list(DISTRIBUTIONS):
            raise ValueError(f"{path} was fitted for types {data['types']} and distributions "
                             f"{data['distributions']}, not this vocabulary")
        return cls(np.array(data["logit_mean"]), np.array(data["logit_cov"]), source=str(data.get("source", "")))

    def cell(self, calcification_type: str, distribution: str) -> MalignancyEstimate:
        """The estimate for a cluster known to be of one type and one distribution."""
        probs = ClusterDescriptors.from_probabilities({calcification_type: 1.0}, {distribution: 1.0})
        return self.estimate(probs)

    def estimate(self, descriptors: ClusterDescriptors) -> MalignancyEstimate:
        weights = np.outer(descriptors.type_vector(), descriptors.distribution_vector()).reshape(-1)
        weights = weights / weights.sum()
        mixture = self.cell_draws @ weights
        low, high = np.quantile(mixture, [0.025, 0.975])
        point = float(np.clip(mixture.mean(), 0.0, 1.0))
        return MalignancyEstimate(probability=point, low=float(min(low, point)), high=float(max(high, point)))
