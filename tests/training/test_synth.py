"""The synthetic study generator: deterministic, plausible, annotated, and written as valid MG DICOM."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.simulate.synth import PATHOTYPES, VIEWS, lesion_free_views, synth_study, write_synthetic_dataset


def test_same_seed_gives_identical_pixels_and_another_seed_does_not():
    first = synth_study(7, 3, rows=256, cols=160)
    again = synth_study(7, 3, rows=256, cols=160)
    assert [im.pixels.tobytes() for im in first] == [im.pixels.tobytes() for im in again]
    assert [[les.box for les in im.lesions] for im in first] == [[les.box for les in im.lesions] for im in again]
    other = synth_study(8, 3, rows=256, cols=160)
    assert all(a.pixels.tobytes() != b.pixels.tobytes() for a, b in zip(first, other, strict=True))


def test_four_views_with_12_bit_pixels_and_consistent_lesions():
    for patient in range(6):
        images = synth_study(1, patient, rows=256, cols=160)
        assert [(im.laterality, im.view) for im in images] == list(VIEWS)
        for im in images:
            assert im.pixels.dtype == np.uint16 and im.pixels.shape == (256, 160) and int(im.pixels.max()) < 4096
            for lesion in im.lesions:
                x0, y0, x1, y1 = lesion.box
                assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 256
                if lesion.label == "malignant":
                    assert lesion.pathotype in PATHOTYPES and isinstance(lesion.er_positive, bool)
                else:
                    assert lesion.label == "benign" and lesion.pathotype is None and lesion.er_positive is None
        for lat in "LR":
            cc, mlo = (im for im in images if im.laterality == lat)
            assert [les.lesion_id for les in cc.lesions] == [les.lesion_id for les in mlo.lesions]
            for a, b in zip(cc.lesions, mlo.lesions, strict=True):
                # the same cluster seen twice: about the same distance from the nipple in both views
                assert abs(nipple_distance(cc, a.box) - nipple_distance(mlo, b.box)) < 0.08 * 160


def nipple_distance(image, box) -> float:
    """Horizontal distance from the box centre to the breast's farthest tissue column (the nipple)."""
    tissue = image.pixels[image.pixels.shape[0] // 8:] > 0.05 * 4095  # below the marker rows
    cols = np.nonzero(tissue.any(axis=0))[0]
    centre = (box[0] + box[2]) / 2
    return centre - cols.min() if image.laterality == "R" else cols.max() + 1 - centre


def test_patients_mix_benign_and_malignant_and_some_images_have_no_lesion():
    kinds, empty = set(), 0
    for patient in range(16):
        images = synth_study(2, patient, rows=128, cols=80)
        labels = {les.label for im in images for les in im.lesions}
        assert labels, "every synthetic patient has at least one lesion"
        kinds.add("malignant" if "malignant" in labels else "benign")
        empty += sum(not im.lesions for im in images)
    assert kinds == {"benign", "malignant"} and empty >= 8


def test_anatomy_at_the_default_size_chest_wall_side_pectoral_and_visible_clusters():
    images = synth_study(0, 2)  # default 1024 x 640
    for im in images:
        px = im.pixels.astype(np.float32) / 4095.0
        h, w = px.shape
        wall = slice(0, w // 8) if im.laterality == "L" else slice(w - w // 8, w)
        far = slice(w - w // 12, w) if im.laterality == "L" else slice(0, w // 12)
        assert px[h // 3: 2 * h // 3, wall].mean() > 0.25  # tissue along the chest wall
        assert px[h // 2:, far].mean() < 0.01  # background beyond the nipple (the marker is near the top)
        if im.view == "MLO":  # pectoral muscle: the brightest region, upper chest-wall corner
            corner = px[: h // 10, wall]
            assert corner.mean() > px[h // 2: 3 * h // 4, wall].mean() + 0.05
        for lesion in im.lesions:
            x0, y0, x1, y1 = lesion.box
            assert 12 <= x1 - x0 <= 100 and 12 <= y1 - y0 <= 100
            inside = px[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))]
            # calcifications stand out of the parenchyma around them
            assert inside.max() - np.median(inside) > 0.12


def test_malignant_clusters_have_more_and_smaller_calcifications_than_benign():
    from training.simulate.synth import _sample_cluster

    rng = np.random.default_rng(0)
    malignant = [_sample_cluster(rng, "malignant", "m", 1.0) for _ in range(30)]
    benign = [_sample_cluster(rng, "benign", "b", 1.0) for _ in range(30)]
    assert min(len(c.calcs) for c in malignant) > max(len(c.calcs) for c in benign)
    size = lambda clusters: np.mean([c.semi_minor for cl in clusters for c in cl.calcs])  # noqa: E731
    assert size(malignant) < 0.6 * size(benign)
    elongation = lambda clusters: np.mean([c.semi_major / c.semi_minor for cl in clusters for c in cl.calcs])  # noqa: E731
    assert elongation(malignant) > elongation(benign) + 0.5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    csv_path = write_synthetic_dataset(out, 2, seed=4, rows=256, cols=160)
    assert csv_path == out / "annotations.csv"
    return out


def test_dataset_files_pass_dciodvfy_and_read_back_with_laterality_and_view(dataset):
    from dicom_io.reader import read_mammogram
    from tests.dicom_io.test_mg_writer import dciodvfy_problems

    files = sorted(dataset.glob("*/*.dcm"))
    assert [f.relative_to(dataset).as_posix() for f in files] == [
        f"SYN0000{p}/{lat}{view}.dcm" for p in (0, 1) for lat, view in sorted(VIEWS)
    ]
    for path in files:
        errors, warnings = dciodvfy_problems(path)
        assert errors == [] and warnings == [], path
        image = read_mammogram(path)
        assert f"{image.meta.laterality}{image.meta.view}" == path.stem


def test_dataset_annotations_match_the_generator(dataset):
    from training.datasets.paper_csv import read_paper_csv

    annotations = read_paper_csv(dataset / "annotations.csv")
    lesions = json.loads((dataset / "lesions.json").read_text())
    assert len(annotations) == 8 and len(lesions["images"]) == 8
    for index in range(2):
        for image in synth_study(4, index, rows=256, cols=160):
            name = f"SYN{index:05d}/{image.laterality}{image.view}.dcm"
            boxes = annotations[name]
            assert [b.label for b in boxes] == [les.label for les in image.lesions]
            assert np.allclose([b.corners() for b in boxes], [les.box for les in image.lesions], atol=1e-9)
            record = next(r for r in lesions["images"] if r["image"] == name)
            assert [(r["pathotype"], r["er_positive"]) for r in record["lesions"]] == [
                (les.pathotype, les.er_positive) for les in image.lesions
            ]


def test_rewriting_the_dataset_gives_identical_files(dataset, tmp_path):
    write_synthetic_dataset(tmp_path, 2, seed=4, rows=256, cols=160)
    for path in sorted(dataset.rglob("*")):
        if path.is_file():
            assert (tmp_path / path.relative_to(dataset)).read_bytes() == path.read_bytes(), path.name


def test_cli_synth_then_preprocess(tmp_path, capsys):
    from mccad.cli import main

    assert main(["synth", "--out", str(tmp_path / "syn"), "--patients", "1", "--seed", "9", "--rows", "200", "--cols",
                 "128"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == [str(tmp_path / "syn" / "annotations.csv")]

    assert main(["preprocess", str(tmp_path / "syn"), "--out", str(tmp_path / "pre"), "--max-side", "100"]) == 0
    outputs = [Path(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(outputs) == 8 and all(p.exists() for p in outputs)
    records = [json.loads(p.read_text()) for p in outputs if p.suffix == ".json"]
    from PIL import Image

    for record in records:
        cmap = record["map"]
        assert cmap["flipped"] == (record["laterality"] == "R")
        assert max(cmap["input_shape"]) <= 100
        with Image.open(tmp_path / "pre" / record["png"]) as png:
            assert png.size == (cmap["input_shape"][1], cmap["input_shape"][0])
            assert png.mode.startswith("I")  # 16-bit grayscale


def test_cli_preprocess_reports_a_bad_file_and_still_processes_the_others(dataset, tmp_path, capsys):
    from mccad.cli import main

    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not a DICOM file at all")
    good = dataset / "SYN00000" / "RMLO.dcm"
    assert main(["preprocess", str(junk), str(good), "--out", str(tmp_path / "pre"), "--crop-rows"]) == 1
    captured = capsys.readouterr()
    assert "junk.dcm" in captured.err
    outputs = [Path(line) for line in captured.out.strip().splitlines()]
    assert [p.suffix for p in outputs] == [".png", ".json"] and all(p.exists() for p in outputs)
    assert json.loads(outputs[1].read_text())["config"]["crop_rows"] is True


def test_pixel_spacing_follows_the_image_size_so_the_phantom_keeps_its_physical_size() -> None:
    # a model that resamples to a fixed spacing (tiled detectors) must see the same 20 cm breast at every size
    from training.simulate.synth import synth_study

    assert {im.spacing_mm for im in synth_study(0, 0, rows=128, cols=80)} == {1.6}
    assert {im.spacing_mm for im in synth_study(0, 0, rows=256, cols=160)} == {0.8}
    assert {im.spacing_mm for im in synth_study(0, 0, rows=256, cols=160, spacing_mm=0.1)} == {0.1}


def test_rendering_chosen_views_gives_the_whole_studys_pixels_and_lesion_free_views_need_no_rendering():
    """``training.simulate.dataset`` renders one lesion-free phantom view instead of four: it must be the same view,
    byte for byte, and the views said to be lesion-free must be the ones that render without lesions."""
    for patient in range(6):
        study = synth_study(5, patient, rows=256, cols=160)
        for wanted in ([VIEWS[3]], [VIEWS[2], VIEWS[0]]):
            alone = synth_study(5, patient, rows=256, cols=160, views=wanted)
            expected = [im for im in study if (im.laterality, im.view) in wanted]
            assert [(im.laterality, im.view) for im in alone] == [(im.laterality, im.view) for im in expected]
            for got, want in zip(alone, expected, strict=True):
                assert np.array_equal(got.pixels, want.pixels)
                assert [les.box for les in got.lesions] == [les.box for les in want.lesions]
        free = lesion_free_views(5, patient, rows=256, cols=160)
        assert free == [(im.laterality, im.view) for im in study if not im.lesions]


def test_unknown_views_are_refused():
    with pytest.raises(ValueError, match="unknown views"):
        synth_study(5, 0, rows=128, cols=80, views=[("L", "ML")])
