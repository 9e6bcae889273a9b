"""The pipeline: images in, a StudyResult in original pixel coordinates out, fused by breast and exam."""
from __future__ import annotations

import numpy as np
import pytest

from models.findings import breast_results
from models.pipeline import Pipeline, crop_patch
from models.results import NOT_FOR_CLINICAL_USE, ImageResult
from models.types import ImageMeta, MammogramImage


def _image(uid: str, laterality: str, view: str, rows: int = 300, cols: int = 200) -> MammogramImage:
    yy, xx = np.mgrid[0:rows, 0:cols]
    # a half-ellipse breast against the chest wall; right breasts have the wall on the right, as displayed
    wall_x = xx if laterality == "L" else (cols - 1 - xx)
    breast = ((wall_x / (0.7 * cols)) ** 2 + ((yy - rows / 2) / (0.45 * rows)) ** 2) < 1
    pixels = np.where(breast, 0.55, 0.0).astype(np.float32)
    pixels[breast] += (np.random.default_rng(len(uid)).random(breast.sum()) * 0.1).astype(np.float32)
    meta = ImageMeta(sop_instance_uid=uid, sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2", study_instance_uid="1.2.3",
                     series_instance_uid="1.2.3.4", exam_key="1.2.3", laterality=laterality, view=view,
                     rows=rows, columns=cols)
    return MammogramImage(pixels=pixels, meta=meta)


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir) -> Pipeline:
    return Pipeline.from_model_dir(tiny_model_dir, device="cpu")


def test_study_result_covers_every_image_breast_and_model(pipeline: Pipeline) -> None:
    images = [_image("1.2.3.4.1", "L", "CC"), _image("1.2.3.4.2", "L", "MLO"), _image("1.2.3.4.3", "R", "CC", 320)]
    analysis = pipeline.analyze(images)
    result = analysis.result
    assert [i.sop_instance_uid for i in result.images] == [m.meta.sop_instance_uid for m in images]
    assert [b.laterality for b in result.breasts] == ["L", "R"]
    assert result.breasts[0].image_uids == ["1.2.3.4.1", "1.2.3.4.2"]
    assert {m.role for m in result.models} == {"detector", "sppnet", "pathotype_incl", "pathotype_excl", "er"}
    assert result.warnings == [NOT_FOR_CLINICAL_USE]  # the tiny bundle is marked synthetic-only
    for img, src in zip(result.images, images, strict=True):
        heat = analysis.heatmaps[img.sop_instance_uid]
        assert heat.shape == src.pixels.shape and heat.dtype == np.float32
        assert heat.min() >= 0.0 and heat.max() <= 1.0
        assert img.sppnet_malignancy_probability is not None
        for lesion in img.lesions:  # boxes are in the source grid, never outside it
            assert 0 <= lesion.box.x0 <= lesion.box.x1 <= src.meta.columns
            assert 0 <= lesion.box.y0 <= lesion.box.y1 <= src.meta.rows
            if lesion.label == "malignant":
                assert lesion.er_positive_probability is not None
            else:
                assert lesion.er_positive_probability is None
    assert result.exam.malignancy_probability == max(b.malignancy_probability for b in result.breasts)
    assert result.timings_s["total"] > 0


def test_boxes_of_a_right_breast_come_back_unflipped(pipeline: Pipeline) -> None:
    """The detector sees every breast chest-wall-left; a right breast's boxes must be mirrored back."""
    left = _image("1.9.1", "L", "CC")
    right = MammogramImage(pixels=np.ascontiguousarray(left.pixels[:, ::-1]),
                           meta=left.meta.model_copy(update={"sop_instance_uid": "1.9.2", "laterality": "R"}))
    res = pipeline.analyze([left, right]).result
    lb = sorted((les.box.x0, les.box.y0, les.box.x1, les.box.y1) for les in res.images[0].lesions)
    rb = sorted((200 - les.box.x1, les.box.y0, 200 - les.box.x0, les.box.y1) for les in res.images[1].lesions)
    assert len(lb) == len(rb)
    np.testing.assert_allclose(np.array(lb).reshape(-1, 4), np.array(rb).reshape(-1, 4), atol=1e-3)


def _ir(uid: str, side: str | None, view: str | None, label: str, p: float) -> ImageResult:
    return ImageResult(sop_instance_uid=uid, sop_class_uid="1.2", series_instance_uid="1.3", study_instance_uid="1.4",
                       laterality=side, view=view, rows=10, columns=10, label=label, malignancy_probability=p,
                       probability=p if label == "malignant" else 1 - p)


def test_breast_fusion_uses_the_stronger_repeat_of_a_view() -> None:
    imgs = [_ir("a", "L", "CC", "benign", 0.1), _ir("b", "L", "CC", "malignant", 0.8),
            _ir("c", "L", "MLO", "benign", 0.2)]
    (breast,) = breast_results(imgs)
    # CC (repeat b, malignant 0.8) disagrees with MLO (benign): malignant because 0.8 > 0.5, decided by b
    assert breast.label == "malignant" and breast.decided_by == "b" and breast.malignancy_probability == 0.8


def test_images_without_laterality_are_not_dropped() -> None:
    breasts = breast_results([_ir("a", None, None, "benign", 0.2), _ir("b", "R", "MLO", "benign", 0.1)])
    assert [b.laterality for b in breasts] == ["R", None]
    assert breasts[1].image_uids == ["a"]


def test_patch_is_square_centred_and_zero_padded_at_borders() -> None:
    pixels = np.ones((50, 40), dtype=np.float32)
    patch = crop_patch(pixels, np.array([0.0, 0.0, 10.0, 10.0]), size=16, margin=0.5)
    assert patch.shape == (16, 16)
    assert patch[0, 0] == 0.0 and patch[-1, -1] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------ breast gate
def _gated_bundle(tiny_model_dir, folder, gate: dict | None):
    """The tiny bundle's detector (random weights, every box kept: 100 per image) with ``gate`` as its manifest's
    ``input_spec["breast_gate"]`` (None: no key, as in bundles made before the gate)."""
    import json
    import shutil

    shutil.copytree(tiny_model_dir / "detector", folder / "detector")
    manifest = json.loads((folder / "detector" / "manifest.json").read_text())
    manifest["thresholds"]["detections_per_img"] = 100
    manifest["input_spec"].pop("breast_gate", None)
    if gate is not None:
        manifest["input_spec"]["breast_gate"] = gate
    (folder / "detector" / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _breast_with_label() -> tuple[MammogramImage, object]:
    """A left CC of 600 x 400 px: a breast half-ellipse (semi-axes 260 x 200 px) and a bright label square inside
    the columns standardisation keeps; returns the image and ``inside(x, y, grow_px)`` for the analytic breast."""
    rows, cols = 600, 400
    yy, xx = np.mgrid[0:rows, 0:cols]
    breast = (xx / 260.0) ** 2 + ((yy - 300) / 200.0) ** 2 < 1
    pixels = np.where(breast, 0.5, 0.0).astype(np.float32)
    pixels[breast] += (np.random.default_rng(0).random(int(breast.sum())) * 0.1).astype(np.float32)
    pixels[20:60, 200:240] = 0.95
    meta = ImageMeta(sop_instance_uid="1.2.3.4.9", sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
                     study_instance_uid="1.2.3", series_instance_uid="1.2.3.4", exam_key="1.2.3", laterality="L",
                     view="CC", rows=rows, columns=cols)

    def inside(x: float, y: float, grow: float) -> bool:
        return (x / (260.0 + grow)) ** 2 + ((y - 300) / (200.0 + grow)) ** 2 < 1

    return MammogramImage(pixels=pixels, meta=meta), inside


def _centres(result) -> list[tuple[float, float]]:
    return [((les.box.x0 + les.box.x1) / 2, (les.box.y0 + les.box.y1) / 2) for les in result.images[0].lesions]


@pytest.mark.usefixtures("one_torch_thread")
def test_a_bundle_with_the_breast_gate_drops_boxes_centred_outside_the_breast(tiny_model_dir, tmp_path) -> None:
    from models.breast_gate import BreastGate

    image, inside = _breast_with_label()
    plain = Pipeline.from_model_dir(_gated_bundle(tiny_model_dir, tmp_path / "plain", None), device="cpu",
                                    explain=False)
    gated = Pipeline.from_model_dir(_gated_bundle(tiny_model_dir, tmp_path / "gated", {"margin_mm": 0.0}),
                                    device="cpu", explain=False)
    assert plain.breast_gate is None and gated.breast_gate == BreastGate(0.0)
    before = plain.analyze([image]).result
    after = gated.analyze([image]).result
    all_boxes, kept = _centres(before), _centres(after)
    assert "breast_gate" in after.timings_s and "breast_gate" not in before.timings_s
    # the random detector scatters boxes over the whole image: some lie in the breast, many do not
    assert any(inside(x, y, 0) for x, y in all_boxes) and sum(not inside(x, y, 0) for x, y in all_boxes) > 10
    assert 0 < len(kept) < len(all_boxes)
    assert kept == [c for c in all_boxes if c in kept]  # the survivors, in their order
    # the mask's cells: 1 mm at the 0.05 mm assumed for images without a spacing, 20 px of the standardised image,
    # which the bundle's max_side of 384 scales by 384 / 600 from the original pixels the boxes come back in
    cell = 20.0 * 600 / 384
    assert all(inside(x, y, cell * 1.5) for x, y in kept)
    assert all(not inside(x, y, -cell * 1.5) for x, y in all_boxes if (x, y) not in kept)
    # the constructor override gates a bundle that has no gate in its manifest, the same way
    override = Pipeline(plain.detector, plain.detector_config, plain.detector_manifest, explain=False,
                        breast_gate=BreastGate(0.0))
    assert _centres(override.analyze([image]).result) == kept


@pytest.mark.usefixtures("one_torch_thread")
def test_lesion_scored_boxes_report_the_box_heads_class_split(tiny_model_dir, tmp_path) -> None:
    """Under lesion scores a box's score is P(lesion), so its P(malignant) is the box head's class split, which the
    label follows (the likelier class), not the score or one minus it; under class scores the paper's reading stays."""
    import json

    folder = _gated_bundle(tiny_model_dir, tmp_path / "lesion", {"margin_mm": 0.0})
    manifest = json.loads((folder / "detector" / "manifest.json").read_text())
    manifest["input_spec"]["detector"]["score_mode"] = "lesion"
    (folder / "detector" / "manifest.json").write_text(json.dumps(manifest))
    image, _ = _breast_with_label()
    lesions = Pipeline.from_model_dir(folder, device="cpu", explain=False).analyze([image]).result.images[0].lesions
    assert len(lesions) >= 2
    assert all((les.malignancy_probability > 0.5) == (les.label == "malignant") for les in lesions)
    assert any(all(abs(les.malignancy_probability - p) > 1e-3 for p in (les.score, 1 - les.score))
               for les in lesions)
    plain = Pipeline.from_model_dir(_gated_bundle(tiny_model_dir, tmp_path / "class", None), device="cpu",
                                    explain=False).analyze([image]).result.images[0].lesions
    assert plain and all(min(abs(les.malignancy_probability - les.score),
                             abs(les.malignancy_probability - (1 - les.score))) < 1e-9 for les in plain)
