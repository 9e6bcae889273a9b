"""The fewest calcifications of an annotated cluster (``MIN_CLUSTER_CALCIFICATIONS``): a lone calcification is not a
cluster finding, as the unannotated ``solitary`` look-alike says, so no annotated cluster may be one; and the rule of
the sets made up to detector 0.4.0 (``min_calcifications=1``) stays available, draw for draw, so the sets of the
experiment record can be made again."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from training.datasets.paper_csv import read_paper_csv
from training.simulate import (
    MIN_CLUSTER_CALCIFICATIONS,
    PATTERNS,
    SimulationError,
    calcification_count_range,
    make_simulated_dataset,
    simulate_cluster,
)
from training.simulate.morphology import COUNTS


def _counts(pattern: str, n: int, **kwargs) -> list[int]:
    rng = np.random.default_rng(12)
    return [len(simulate_cluster(rng, pattern, 0.1, **kwargs).calcifications) for _ in range(n)]


def test_no_annotated_cluster_is_a_lone_calcification():
    assert MIN_CLUSTER_CALCIFICATIONS == 3
    for pattern in PATTERNS:
        lo, hi = calcification_count_range(pattern)
        assert lo >= 3 and hi >= lo
        assert min(_counts(pattern, 60)) >= 3, pattern


def test_the_old_rule_still_draws_single_coarse_and_rim_calcifications():
    for pattern in ("coarse", "rim"):
        old = _counts(pattern, 200, min_calcifications=1)
        assert min(old) == 1 and max(old) == COUNTS[pattern][1]
        assert calcification_count_range(pattern, 1) == COUNTS[pattern]


def test_patterns_already_above_the_minimum_draw_the_same_clusters_under_either_rule():
    for pattern in ("punctate", "amorphous", "fine_linear_branching"):
        a = simulate_cluster(np.random.default_rng(3), pattern, 0.1)
        b = simulate_cluster(np.random.default_rng(3), pattern, 0.1, min_calcifications=1)
        assert a == b


def test_a_minimum_below_one_is_refused(tmp_path):
    with pytest.raises(SimulationError, match="at least 1 calcification"):
        calcification_count_range("coarse", 0)
    with pytest.raises(SimulationError, match="at least 1 calcification"):
        make_simulated_dataset(tmp_path / "x", 1, sources=("phantom",), min_calcifications=0)


def test_the_dataset_records_its_rule_and_the_cli_sets_it(tmp_path):
    kwargs = dict(sources=("phantom",), spacing_mm=0.2, clusters_per_image=(2, 3), crop=96,
                  patterns=("coarse", "rim"))
    new = make_simulated_dataset(tmp_path / "new", 6, seed=5, **kwargs)
    meta = json.loads((tmp_path / "new" / "simulated.json").read_text())
    assert meta["min_calcifications"] == 3
    assert all(les["n_calcifications"] >= 3 for im in meta["images"] for les in im["lesions"])

    out = tmp_path / "old"
    run = subprocess.run([sys.executable, "-m", "mccad", "simulate", "--out", str(out), "--images", "6", "--seed",
                          "5", "--sources", "phantom", "--spacing", "0.2", "--clusters", "2-3", "--crop", "96",
                          "--patterns", "coarse,rim", "--min-calcifications", "1"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    old = json.loads((out / "simulated.json").read_text())
    assert old["min_calcifications"] == 1
    assert any(les["n_calcifications"] < 3 for im in old["images"] for les in im["lesions"])
    assert read_paper_csv(new) != read_paper_csv(out / "annotations.csv")
