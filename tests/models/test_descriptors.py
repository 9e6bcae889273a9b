"""BI-RADS descriptors: the vocabulary is the simulator's, every code is the one DICOM's context groups give, the
typed prediction checks itself, and the shipped CBIS-DDSM mapping gives reproducible probabilities with intervals."""
from __future__ import annotations

import json

import numpy as np
import pytest
from pydicom.sr._cid_dict import cid_concepts
from pydicom.sr._concepts_dict import concepts

from models.descriptors import (CALCIFICATION_TYPES, DEFAULT_MAPPING_PATH, DISTRIBUTION_TERMS, DISTRIBUTIONS,
                                TYPE_TERMS, TYPICALLY_BENIGN_TYPES, ClusterDescriptors, MalignancyMapping)
from training.simulate.morphology import BENIGN_PATTERNS, BIRADS_MORPHOLOGY, PATTERNS
from training.simulate.morphology import DISTRIBUTIONS as SIMULATED_DISTRIBUTIONS


def _cid_codes(cid: int) -> dict[tuple[str, str], str]:
    """(code value, scheme) -> meaning for every concept pydicom's bundled tables list in ``cid``."""
    out = {}
    for scheme, keywords in cid_concepts[cid].items():
        for keyword in keywords:
            for value, (meaning, _cids) in concepts[scheme][keyword].items():
                out[(value, scheme)] = meaning
    return out


def test_vocabulary_is_the_simulators_and_benign_types_are_its_benign_patterns():
    assert CALCIFICATION_TYPES == PATTERNS
    assert DISTRIBUTIONS == SIMULATED_DISTRIBUTIONS
    assert set(BENIGN_PATTERNS) == TYPICALLY_BENIGN_TYPES
    assert all(TYPE_TERMS[k].birads in BIRADS_MORPHOLOGY[k] for k in PATTERNS)


@pytest.mark.parametrize(("terms", "cid"), [(TYPE_TERMS, 6010), (DISTRIBUTION_TERMS, 6012)])
def test_every_code_is_in_its_dicom_context_group_with_its_meaning(terms, cid):
    known = _cid_codes(cid)
    for term in terms.values():
        value, scheme, meaning = term.code
        assert known.get((value, scheme)) == meaning, term.key


def test_descriptors_pick_the_most_likely_terms_and_refuse_inconsistent_ones():
    d = ClusterDescriptors.from_probabilities({"coarse": 0.7, "fine_pleomorphic": 0.3}, {"scattered": 1.0})
    assert (d.calcification_type, d.distribution, d.typically_benign) == ("coarse", "scattered", True)
    assert d.caption() == "coarse or popcorn-like, regional"
    assert d.type_vector().sum() == pytest.approx(1.0) and d.type_vector()[CALCIFICATION_TYPES.index("coarse")] == 0.7
    with pytest.raises(ValueError, match="unknown keys"):
        ClusterDescriptors.from_probabilities({"popcorn": 1.0}, {"grouped": 1.0})
    with pytest.raises(ValueError, match="sum to 1"):
        ClusterDescriptors.from_probabilities({"coarse": 0.5}, {"grouped": 1.0})
    with pytest.raises(ValueError, match="not the most likely"):
        ClusterDescriptors(calcification_type="coarse", distribution="grouped",
                           type_probabilities={"coarse": 0.2, "amorphous": 0.8},
                           distribution_probabilities={"grouped": 1})


@pytest.fixture(scope="module")
def mapping() -> MalignancyMapping:
    return MalignancyMapping.load()


def test_shipped_mapping_names_its_data_and_licence():
    data = json.loads(DEFAULT_MAPPING_PATH.read_text())
    assert "CBIS-DDSM" in data["source"] and "CC BY 3.0" in data["source"]
    assert data["findings"] == 1546 and data["test"]["findings"] == 326


def test_mapping_is_reproducible_and_mixes_cells_linearly(mapping):
    again = MalignancyMapping.load()
    d = ClusterDescriptors.from_probabilities({"fine_pleomorphic": 0.5, "rim": 0.5}, {"grouped": 0.8, "linear": 0.2})
    assert mapping.estimate(d) == again.estimate(d) and mapping.sha256 == again.sha256
    cells = {(t, dist): mapping.cell(t, dist).probability for t in ("fine_pleomorphic", "rim")
             for dist in ("grouped", "linear")}
    expected = sum(0.5 * w * cells[(t, dist)] for t in ("fine_pleomorphic", "rim")
                   for dist, w in (("grouped", 0.8), ("linear", 0.2)))
    estimate = mapping.estimate(d)
    assert estimate.probability == pytest.approx(expected, abs=1e-12)
    assert estimate.low <= estimate.probability <= estimate.high


def test_mapping_orders_suspicious_over_benign_and_knows_what_it_does_not_know(mapping):
    flb = mapping.cell("fine_linear_branching", "segmental")
    pleo = mapping.cell("fine_pleomorphic", "grouped")
    rim = mapping.cell("rim", "scattered")
    unseen = mapping.cell("coarse_heterogeneous", "grouped")  # no CBIS-DDSM spelling: the prior only
    assert flb.probability > 0.7 and rim.probability < 0.1 and rim.probability < pleo.probability < flb.probability
    assert pleo.high - pleo.low < 0.15  # 664 training findings of pleomorphic, most of them clustered
    assert unseen.high - unseen.low > 0.8


def test_mapping_refuses_the_wrong_shape():
    with pytest.raises(ValueError, match="cell logits"):
        MalignancyMapping(np.zeros(3), np.eye(3))
