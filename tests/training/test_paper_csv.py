"""The paper's CSV box format (released code FPNNet/read_csv.py): read, write, exact round trip, hostile cells."""
from __future__ import annotations

import numpy as np
import pytest

from training.datasets.paper_csv import (PaperBox, PaperCSVError, format_paper_csv, parse_paper_csv, read_paper_csv,
                                         write_paper_csv)


def test_random_annotations_round_trip_exactly(tmp_path):
    rng = np.random.default_rng(5)
    annotations = {}
    for i in range(40):
        boxes = []
        for _ in range(int(rng.integers(0, 5))):  # zero boxes: an image without lesions keeps its row
            x, y = (float(v) for v in rng.uniform(0, 3000, size=2))
            w, h = (float(v) for v in rng.uniform(1, 200, size=2))
            if rng.random() < 0.3:
                x, y, w, h = float(round(x)), float(round(y)), float(round(w)), float(round(h))
            boxes.append(PaperBox(x, y, w, h, "malignant" if rng.random() < 0.5 else "benign"))
        annotations[f"patient{i:03d}/{'LR'[i % 2]}{'CC' if i % 3 else 'MLO'}, copy.dcm"] = boxes
    path = write_paper_csv(tmp_path / "annotations.csv", annotations)
    assert read_paper_csv(path) == annotations
    assert list(read_paper_csv(path)) == list(annotations)  # file order kept


def test_reads_the_released_code_style_and_follows_its_conventions():
    # header skipped whatever it says; Python dict literals with single quotes; empty cells ignored;
    # label "0" is benign and "1" malignant; x, y is the top-left corner and x + width the right edge
    text = (
        "name,annotation\n"
        "a.png,\"{'x': 10, 'y': 20, 'width': 30, 'height': 40, 'label': '1'}\","
        ",\"{'label': '0', 'x': 1.5, 'y': 2, 'width': 3, 'height': 4}\"\n"
        "b.png\n"
        "c.png,,\n"
    )
    annotations = parse_paper_csv(text)
    assert list(annotations) == ["a.png", "b.png", "c.png"]
    first, second = annotations["a.png"]
    assert first == PaperBox(10.0, 20.0, 30.0, 40.0, "malignant") and first.corners() == (10.0, 20.0, 40.0, 60.0)
    assert second.label == "benign" and second.corners() == (1.5, 2.0, 4.5, 6.0)
    assert annotations["b.png"] == [] and annotations["c.png"] == []


def test_written_cells_are_what_the_released_reader_expects():
    text = format_paper_csv({"x.png": [PaperBox.from_corners((5, 6, 25.5, 16), "malignant")]})
    header, row = text.splitlines()
    assert header == "image_name,boxes"
    name, cell = row.split(",", 1)
    cell = cell.strip('"').replace('""', '"')
    # the released reader does eval(cell) and reads these keys; label is the string code
    assert name == "x.png" and eval(cell) == {"x": 5, "y": 6, "width": 20.5, "height": 10, "label": "1"}  # noqa: S307


@pytest.mark.parametrize(
    "cell,message",
    [
        ("{'x': 1, 'y': 2, 'width': 3, 'height': 4, 'label': '2'}", "neither"),
        ("{'x': 1, 'y': 2, 'width': 3, 'label': '0'}", "lacks height"),
        ("__import__('os').system('true')", "not a dictionary literal"),
        ("[1, 2, 3]", "not a dictionary"),
        ("{'x': 'a', 'y': 2, 'width': 3, 'height': 4, 'label': '0'}", "numbers"),
        ("{'x': 1, 'y': 2, 'width': -3, 'height': 4, 'label': '0'}", "negative"),
    ],
)
def test_bad_cells_are_refused_with_the_line_number(cell, message):
    text = "image,boxes\nok.png\nbad.png,\"" + cell.replace('"', '""') + "\"\n"
    with pytest.raises(PaperCSVError, match=message) as info:
        parse_paper_csv(text, source="ann.csv")
    assert "ann.csv line 3" in str(info.value)


def test_an_image_listed_twice_is_refused():
    with pytest.raises(PaperCSVError, match="twice"):
        parse_paper_csv("image,boxes\na.png\na.png\n")
