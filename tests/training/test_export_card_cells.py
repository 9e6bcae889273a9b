"""The generated model card's table cells keep small settings readable: a learning rate of 5e-05 is not 0.0001."""
from __future__ import annotations

from training.export import _fmt


def test_card_cells_keep_four_significant_digits():
    assert _fmt(5e-05) == "5e-05" and _fmt(0.0001) == "0.0001" and _fmt(0.005) == "0.005"
    assert _fmt(0.95945945) == "0.9595" and _fmt(0.9) == "0.9" and _fmt(386.707) == "386.7"
    assert _fmt(float("nan")) == "n/a" and _fmt(None) == "n/a" and _fmt(3) == "3" and _fmt(True) == "True"
