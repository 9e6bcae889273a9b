"""Choosing which real backgrounds a simulated set uses (``real_images=`` / ``mccad simulate --real-images``), so one
patient's images can train and the other's validate; and the spacing the PNGs carry for training to read back."""
from __future__ import annotations

import json

import pytest

from training.datasets.images import pixel_spacing
from training.datasets.readers import read_dataset
from training.simulate import SimulationError, make_simulated_dataset

# small crops of the real samples at 0.2 mm keep each image a fraction of a second
SMALL = dict(sources=("real",), crop=64, spacing_mm=0.2, clusters_per_image=(0, 1))


def _real_indices(folder) -> list[int]:
    meta = json.loads((folder / "simulated.json").read_text())
    assert all(r["source"] == "real" for r in meta["images"])
    return [r["real_index"] for r in meta["images"]]


def test_only_the_named_real_backgrounds_are_used(tmp_path):
    make_simulated_dataset(tmp_path / "one", 6, seed=2, real_images=[5], **SMALL)
    assert _real_indices(tmp_path / "one") == [5] * 6
    assert json.loads((tmp_path / "one" / "simulated.json").read_text())["real_images"] == [5]
    make_simulated_dataset(tmp_path / "two", 6, seed=2, real_images=(0, 3), **SMALL)
    assert set(_real_indices(tmp_path / "two")) <= {0, 3}
    # the default is all eight
    make_simulated_dataset(tmp_path / "all", 1, seed=2, **SMALL)
    assert json.loads((tmp_path / "all" / "simulated.json").read_text())["real_images"] == list(range(8))


@pytest.mark.parametrize("bad", [[8], [-1], [], [0, 12]])
def test_bad_real_image_indices_are_refused_before_anything_is_written(tmp_path, bad):
    with pytest.raises(SimulationError, match="real_images"):
        make_simulated_dataset(tmp_path / "x", 1, real_images=bad, **SMALL)
    assert not (tmp_path / "x").exists()


def test_mccad_simulate_real_images_option(tmp_path, capsys):
    from mccad.cli import main

    out = tmp_path / "sim"
    assert main(["simulate", "--out", str(out), "--images", "4", "--seed", "3", "--sources", "real",
                 "--real-images", "4,5", "--crop", "48", "--spacing", "0.1", "--clusters", "0-1", "--bits", "8"]) == 0
    csv = capsys.readouterr().out.strip()
    assert set(_real_indices(out)) <= {4, 5}
    assert json.loads((out / "simulated.json").read_text())["real_images"] == [4, 5]
    # the PNGs state their 0.1 mm spacing, which training reads back
    samples = read_dataset(csv)
    assert len(samples) == 4
    for sample in samples:
        assert pixel_spacing(sample) == pytest.approx((0.1, 0.1))

    assert main(["simulate", "--out", str(tmp_path / "bad"), "--images", "1", "--sources", "real",
                 "--real-images", "9"]) == 2
    assert "real_images" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main(["simulate", "--out", str(tmp_path / "bad"), "--real-images", "4,five"])
    assert caught.value.code == 2
    assert "comma separated image indices" in capsys.readouterr().err


def test_each_simulated_image_is_its_own_case_with_its_side_and_view(tmp_path):
    # clusters are drawn per image, so evaluation must bootstrap over images: one patient per image, not per folder
    make_simulated_dataset(tmp_path / "s", 4, seed=3, real_images=[0, 5], **SMALL)
    meta = json.loads((tmp_path / "s" / "simulated.json").read_text())
    samples = read_dataset(tmp_path / "s" / "annotations.csv", "paper_csv")
    assert [s.patient_id for s in samples] == [f"SIM3-{k:06d}" for k in range(4)]
    assert [(s.breast, s.view) for s in samples] == [(r["laterality"], r["view"]) for r in meta["images"]]
    assert [len(s.lesions) for s in samples] == [len(r["lesions"]) for r in meta["images"]]
