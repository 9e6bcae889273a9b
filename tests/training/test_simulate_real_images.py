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


def _reencoded_copy(folder, indices) -> None:
    """The package's images ``indices`` as JPEG-LS lossless files (the pixels unchanged) in ``folder``, named so
    that sorting keeps their order: how a user's own normal mammograms arrive, in another transfer syntax."""
    import pydicom
    from pydicom.uid import JPEGLSLossless

    from training.simulate.dataset import real_sample_paths

    pytest.importorskip("jpeg_ls", reason="JPEG-LS encoding needs pyjpegls")
    folder.mkdir(parents=True, exist_ok=True)
    for k, index in enumerate(indices):
        ds = pydicom.dcmread(real_sample_paths()[index])
        ds.decompress()
        ds.compress(JPEGLSLossless)
        ds.save_as(folder / f"bg{k}.dcm")


def test_a_folder_of_backgrounds_replaces_the_package_with_the_same_pixels(tmp_path):
    """``backgrounds=``: a folder of DICOM files indexed by sorted name. The package's own images, re-encoded, give
    the package's simulated images byte for byte; the folder and each image's file are recorded."""
    _reencoded_copy(tmp_path / "bg", [5, 2])
    make_simulated_dataset(tmp_path / "pkg", 4, seed=7, real_images=[5, 2], **SMALL)
    make_simulated_dataset(tmp_path / "own", 4, seed=7, real_images=[0, 1], backgrounds=tmp_path / "bg", **SMALL)
    pkg = json.loads((tmp_path / "pkg" / "simulated.json").read_text())
    own = json.loads((tmp_path / "own" / "simulated.json").read_text())
    assert own["backgrounds"] == str((tmp_path / "bg").resolve()) and pkg["backgrounds"] == "mammograms package"
    for a, b in zip(pkg["images"], own["images"], strict=True):
        assert {5: 0, 2: 1}[a["real_index"]] == b["real_index"]
        assert b["background_file"] == f"bg{b['real_index']}.dcm" and b["background_spacing_mm"] == [0.05, 0.05]
        assert (tmp_path / "pkg" / a["image"]).read_bytes() == (tmp_path / "own" / b["image"]).read_bytes()
    assert (tmp_path / "pkg" / "annotations.csv").read_text() == (tmp_path / "own" / "annotations.csv").read_text()


def test_a_background_is_read_at_its_stated_pixel_spacing(tmp_path):
    import pydicom

    _reencoded_copy(tmp_path / "bg", [1])
    ds = pydicom.dcmread(tmp_path / "bg" / "bg0.dcm")
    ds.ImagerPixelSpacing = [0.1, 0.1]  # twice the assumed 0.05 mm: half as many pixels at a 0.2 mm target
    ds.save_as(tmp_path / "bg" / "bg0.dcm")
    make_simulated_dataset(tmp_path / "s", 1, seed=1, backgrounds=tmp_path / "bg", sources=("real",),
                           spacing_mm=0.2, clusters_per_image=(0, 0))
    (record,) = json.loads((tmp_path / "s" / "simulated.json").read_text())["images"]
    assert record["background_spacing_mm"] == pytest.approx([0.1, 0.1])
    assert (record["rows"], record["columns"]) == (round(ds.Rows / 2), round(ds.Columns / 2))


def test_bad_background_folders_are_refused(tmp_path, capsys):
    from mccad.cli import main

    with pytest.raises(SimulationError, match="does not exist"):
        make_simulated_dataset(tmp_path / "x", 1, backgrounds=tmp_path / "nowhere", **SMALL)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(SimulationError, match="no .dcm file"):
        make_simulated_dataset(tmp_path / "x", 1, backgrounds=tmp_path / "empty", **SMALL)
    (tmp_path / "empty" / "broken.dcm").write_bytes(b"\x00" * 300)
    with pytest.raises(SimulationError, match="broken.dcm"):
        make_simulated_dataset(tmp_path / "x", 1, backgrounds=tmp_path / "empty", **SMALL)
    with pytest.raises(SimulationError, match="real_images"):  # one file: index 1 does not exist
        make_simulated_dataset(tmp_path / "x", 1, backgrounds=tmp_path / "empty", real_images=[1], **SMALL)
    assert main(["simulate", "--out", str(tmp_path / "y"), "--images", "1", "--sources", "real",
                 "--backgrounds", str(tmp_path / "empty")]) == 2
    assert "broken.dcm" in capsys.readouterr().err


def test_a_background_much_coarser_than_the_target_spacing_is_refused(tmp_path):
    from training.recipes.make_gpu_kit import write_background
    from training.simulate.dataset import real_sample_paths

    write_background(real_sample_paths()[0], tmp_path / "bg" / "coarse.dcm", 10, 0.05)  # 0.5 mm pixels
    with pytest.raises(SimulationError, match="coarse.dcm.*0.5 mm pixels"):
        make_simulated_dataset(tmp_path / "s", 1, backgrounds=tmp_path / "bg", sources=("real",), spacing_mm=0.1)
    # twice the target is still accepted
    make_simulated_dataset(tmp_path / "ok", 1, backgrounds=tmp_path / "bg", sources=("real",), spacing_mm=0.25,
                           clusters_per_image=(0, 0))
