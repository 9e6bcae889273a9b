"""The CBIS-DDSM descriptor mapping's fit: table spellings become levels, partial pooling keeps rare cells finite, and
the command writes a mapping the product loads."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from models.descriptors import MalignancyMapping
from training.descriptor_malignancy import UNSPECIFIED, Design, laplace_fit, levels_of, main
from training.descriptor_malignancy import _DISTRIBUTION_OF as DISTRIBUTION_SPELLINGS
from training.descriptor_malignancy import _TYPE_OF as TYPE_SPELLINGS

COLUMNS = ["patient_id", "breast density", "left or right breast", "image view", "abnormality id",
           "abnormality type", "calc type", "calc distribution", "assessment", "pathology", "subtlety",
           "image file path", "cropped image file path", "ROI mask file path"]


def test_table_spellings_become_levels():
    assert levels_of("PUNCTATE-PLEOMORPHIC", TYPE_SPELLINGS) == ["punctate", "fine_pleomorphic"]
    assert levels_of("LUCENT_CENTERED", TYPE_SPELLINGS) == ["rim"] == levels_of("EGGSHELL", TYPE_SPELLINGS)
    assert levels_of("VASCULAR", TYPE_SPELLINGS) == ["vascular"]
    assert levels_of(None, DISTRIBUTION_SPELLINGS) == [UNSPECIFIED]
    assert levels_of("CLUSTERED-LINEAR", DISTRIBUTION_SPELLINGS) == ["grouped", "linear"]
    with pytest.raises(ValueError, match="unknown CBIS-DDSM spelling"):
        levels_of("POPCORN", TYPE_SPELLINGS)


def test_design_row_averages_the_levels_a_finding_lists():
    design = Design()
    row = design.row(["punctate", "fine_pleomorphic"], ["grouped"])
    assert row[0] == 1.0 and row[1:1 + design.n_types].sum() == pytest.approx(1.0)
    assert row[1 + design.n_types:].sum() == pytest.approx(2.0)  # distribution + interaction shares


def test_pooling_keeps_a_benign_only_level_finite_and_low():
    design = Design()
    rows = [design.row(["rim"], ["grouped"])] * 30 + [design.row(["fine_pleomorphic"], ["grouped"])] * 30
    y = np.array([0.0] * 30 + [1.0] * 20 + [0.0] * 10)
    fit = laplace_fit(np.stack(rows), y, design.prior_precision(2.0, 1.0, 0.5))
    p = 1 / (1 + np.exp(-(np.stack([rows[0], rows[-1]]) @ fit.mean)))
    assert np.all(np.isfinite(fit.mean)) and np.isfinite(fit.log_evidence)
    assert p[0] < 0.1 and 0.5 < p[1] < 0.7  # 0/30 pulled off zero; 20/30 shrunk a little towards the mean


def _table(path, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for k, (calc_type, distribution, pathology) in enumerate(rows):
            writer.writerow({"patient_id": f"P_{k:05d}", "left or right breast": "LEFT", "image view": "CC",
                             "abnormality id": "1", "abnormality type": "calcification", "calc type": calc_type,
                             "calc distribution": distribution, "pathology": pathology, "assessment": "4",
                             "subtlety": "3", "breast density": "2", "image file path": f"a/{k}.dcm",
                             "cropped image file path": f"b/{k}.dcm", "ROI mask file path": f"c/{k}.dcm"})


def test_command_writes_a_mapping_the_product_loads(tmp_path, capsys):
    rows = ([("PLEOMORPHIC", "CLUSTERED", "MALIGNANT")] * 6 + [("PLEOMORPHIC", "CLUSTERED", "BENIGN")] * 4
            + [("LUCENT_CENTER", "NA", "BENIGN_WITHOUT_CALLBACK")] * 6 + [("AMORPHOUS", "SEGMENTAL", "BENIGN")] * 3
            + [("FINE_LINEAR_BRANCHING", "LINEAR", "MALIGNANT")] * 4)
    _table(tmp_path / "calc_case_description_train_set.csv", rows)
    _table(tmp_path / "calc_case_description_test_set.csv", rows[::2])
    out = tmp_path / "mapping.json"
    assert main(["--tables", str(tmp_path), "--out", str(out), "--boot", "100"]) == 0
    data = json.loads(out.read_text())
    assert data["findings"] == len(rows) and data["test"]["findings"] == len(rows[::2])
    assert "AUC" in capsys.readouterr().out
    mapping = MalignancyMapping.load(out)
    assert mapping.cell("fine_linear_branching", "linear").probability > mapping.cell("rim", "grouped").probability
