"""``training/recipes/gpu-detector.sh``, the recipe that trains the shipped detector on a GPU host, run end to end on
this CPU at a toy size: it makes crops and whole validation images from a kit's background folders, trains each
experiment it is given on the crops with whole-image validation, and leaves per experiment an fp16 model, its
manifest (tiling, breast gate) and the epoch log, plus data.json. The kit's backgrounds are made once, as
``make_gpu_kit`` makes them, and shared by the tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.training.test_trainer_budget_tiling import TINY_DETECTOR

REPO = Path(__file__).resolve().parents[2]
#: the package images of the shared kit: patient 1's second for training, patient 2's third for validation
KIT_TRAIN, KIT_VAL = 1, 6


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A kit's background folders as ``make_gpu_kit`` writes them (2 x 2 block-averaged to 0.1 mm, JPEG-LS), and the
    files written; read-only for the tests (each writes its data and models elsewhere)."""
    from training.recipes.make_gpu_kit import make_backgrounds

    root = tmp_path_factory.mktemp("kit")
    return root, make_backgrounds(root, [KIT_TRAIN], [KIT_VAL], 2)


@pytest.mark.slow
def test_the_gpu_recipe_makes_data_trains_and_exports_from_a_kit(tmp_path, kit):
    kit, _ = kit
    # the recipe's own backbone (training/experiments/sim-detector-lite0-gpu.toml), randomly initialised, at toy size
    detector = 'backbone = "efficientnet_lite0"\n' + "".join(
        f"{k} = {v}\n" for k, v in TINY_DETECTOR.items() if k not in ("min_size", "max_size"))
    config = tmp_path / "toy.toml"
    config.write_text('kind = "detector"\n[train]\nepochs = 1\nsamples_per_epoch = 2\nbatch_size = 2\nmax_side = 0\n'
                      'spacing_mm = 0.1\ntile = 512\ntile_overlap = 64\ntile_batch = 4\nthreads = 1\nnum_workers = 1\n'
                      f'monitor = "val_froc_sens_at_1fp"\n[train.detector]\nmin_size = 256\nmax_size = 256\n{detector}')
    out = tmp_path / "out"
    env = dict(os.environ, KIT=str(kit), OUT=str(out), WORK=str(tmp_path / "work"), N_TRAIN="4", N_VAL="1",
               WORKERS="1", CONFIGS=str(config), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               TRAIN_TIMEOUT="100000", DEADLINE="100000")  # the deadline, less the export's reserve, wins
    done = subprocess.run(["bash", str(REPO / "training/recipes/gpu-detector.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    data = json.loads((out / "data.json").read_text())
    assert data["train_crops"] == 4 and data["val_images"] == 1 and data["workers"] == 1
    assert data["min_calcifications"] == 3
    assert 100000 - 40 - 300 < data["train_timeout_s"] <= 100000 - 40 - data["train_seconds"]
    made = json.loads((tmp_path / "work" / "train" / "simulated.json").read_text())
    assert made["backgrounds"] == str((kit / "bg-train").resolve())
    assert {r["source"] for r in made["images"]} <= {"real", "phantom"}
    assert all(r["crop_window"] for r in made["images"])

    model = out / "toy"
    assert sorted(p.name for p in model.iterdir()) == ["manifest.json", "metrics.jsonl", "model.safetensors"]
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["input_spec"]["tiling"]["tile"] == 512 and manifest["input_spec"]["breast_gate"] is not None
    assert manifest["input_spec"]["tiling"]["batch"] == 2  # exported for CPU workers; the run itself used 4
    assert manifest["input_spec"]["standardise"]["spacing_mm"] == 0.1
    (row,) = [json.loads(line) for line in (model / "metrics.jsonl").read_text().splitlines()]
    assert row["val_whole_images"] == 1.0  # the validation image was run whole, tile by tile
    # the operating point is the one whole validation found (or the run's own when it found none)
    expected = row["val_threshold_at_1fp"] if 0 < row["val_threshold_at_1fp"] < 1 else 0.3
    assert manifest["thresholds"]["score_thresh"] == pytest.approx(expected)

    from safetensors import safe_open

    with safe_open(str(model / "model.safetensors"), "pt") as f:
        dtypes = {str(f.get_tensor(k).dtype) for k in f.keys()}  # noqa: SIM118 - a safe_open handle is not iterable
    assert "torch.float16" in dtypes and "torch.float32" not in dtypes


def test_the_gpu_recipe_stops_before_training_when_the_data_leaves_no_time(tmp_path, kit):
    """A deadline the data already used up: no training that a machine's command limit would cut before the export,
    but a clear message and the data record."""
    kit, _ = kit
    out = tmp_path / "out"
    env = dict(os.environ, KIT=str(kit), OUT=str(out), WORK=str(tmp_path / "work"), N_TRAIN="1", N_VAL="1",
               WORKERS="1", CONFIGS="training/experiments/sim-detector-lite0-gpu-min3-ft.toml", DEADLINE="30",
               EXPORT_RESERVE="30", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    done = subprocess.run(["bash", str(REPO / "training/recipes/gpu-detector.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]
    assert "no time left to train" in done.stderr and "DEADLINE=30" in done.stderr
    assert json.loads((out / "data.json").read_text())["train_timeout_s"] <= 0
    assert not (tmp_path / "work" / "sim-detector-lite0-gpu-min3-ft").exists()


def test_the_gpu_recipe_draws_its_data_at_the_pitches_and_acquisition_it_is_given(tmp_path, kit):
    """SPACING and ACQUISITION reach ``mccad simulate`` for the training and validation data (the deadline stops it
    before training); unset, the data carry no acquisition."""
    kit, _ = kit
    env = dict(os.environ, KIT=str(kit), OUT=str(tmp_path / "out"), WORK=str(tmp_path / "work"), N_TRAIN="4",
               N_VAL="1", WORKERS="1", CONFIGS="training/experiments/sim-detector-lite0-gpu-min3-ft.toml",
               DEADLINE="1", SPACING="0.1,0.2", ACQUISITION="mixed",
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    done = subprocess.run(["bash", str(REPO / "training/recipes/gpu-detector.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]
    for part in ("train", "val"):
        made = json.loads((tmp_path / "work" / part / "simulated.json").read_text())
        assert made["acquisition"] == "mixed" and made["spacing_mm"] == [0.1, 0.2]
        assert {r["acquisition"] for r in made["images"]} <= {"film", "digital"}


def test_block_average_means_whole_blocks_in_the_stored_type():
    from training.recipes.make_gpu_kit import block_average

    stored = np.arange(30, dtype=np.uint16).reshape(5, 6)
    got = block_average(stored, 2)
    assert got.dtype == np.uint16 and got.shape == (2, 3)  # the fifth row fills no block
    assert got.tolist() == [[4, 6, 8], [16, 18, 20]]  # (0 + 1 + 6 + 7) / 4 = 3.5 rounds to 4 (half to even)
    assert np.array_equal(block_average(stored, 1), stored)
    with pytest.raises(ValueError, match="factor"):
        block_average(stored, 0)


def test_the_kits_backgrounds_read_at_the_new_spacing_as_the_simulator_would_have_resampled_them(kit):
    """A kit background is the package image block-averaged to 0.1 mm, stated as such: the simulator reads it at
    0.1 mm without resampling, and gets what it would have made from the package image itself, up to rounding."""
    from training.simulate.dataset import _real_background

    root, written = kit
    assert [p.relative_to(root).as_posix() for p in written] == ["bg-train/bg0.dcm", "bg-val/bg0.dcm"]
    for folder, index in (("bg-train", KIT_TRAIN), ("bg-val", KIT_VAL)):
        kit, lat, view, spacing = _real_background(0, 0.1, str(root / folder))
        package, lat0, view0, _ = _real_background(index, 0.1)
        assert spacing == pytest.approx((0.1, 0.1)) and (lat, view) == (lat0, view0)
        assert kit.shape == package.shape
        assert float(np.abs(kit - package).max()) < 0.01 and float(np.abs(kit - package).mean()) < 0.001
