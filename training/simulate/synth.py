"""Deterministic synthetic 4-view mammography studies with ground-truth microcalcification clusters.

The annotated fixture of the test suite and the demo (the real sample mammograms carry no boxes). It is not a
substitute for real data: it exercises the code paths (reading, standardisation, boxes in both views, CSV and DICOM
writing, detection training on a toy problem), it says nothing about clinical accuracy.

What is drawn, per breast (geometry in a frame with the chest wall on the left, flipped for a right breast at the
end, because right breasts are displayed with the chest wall on the right):

* a half-ellipse outline from the chest wall with a wobble, a brighter skin line, a thickness fall-off near the edge;
* parenchyma: power-law filtered noise (beta about 3, see :func:`training.simulate.synth_render.power_law_noise`)
  modulating a fibroglandular density that is highest behind the nipple;
* on MLO, the pectoral muscle as a bright triangle in the upper chest-wall corner;
* background: dark detector noise and a small lead marker beyond the nipple (it tests that standardisation ignores
  markers);
* calcification clusters. Benign pattern: few (2-6), round, larger, smooth, scattered. Malignant pattern: many
  (10-28), small, pleomorphic with linear and branching forms, tightly grouped (BI-RADS morphology and distribution
  descriptors). A cluster is a set of 3-D points in the breast: CC shows its (depth, medio-lateral) projection and
  MLO its (depth, oblique) projection, and the cluster lies at the same distance from the nipple in both views,
  the cue radiologists use to match a lesion across views. Its box is the extent of its calcifications plus a margin
  (``BOX_MARGIN_PX`` at the default size).

A patient is benign or malignant; malignant patients have one or two malignant clusters in one breast and may also
have benign clusters; the other breast is often normal, so some images carry no lesion. Everything derives from
``numpy.random.default_rng([seed, patient_index])``: the same arguments give the same pixels, byte for byte.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from dicom_io.durable import write_text_durably
from dicom_io.mg_writer import MGInstanceSpec, write_mg_instance
from dicom_io.uids import derive_uid
from models.preprocess import resize_bilinear
from training.datasets.paper_csv import PaperBox, write_paper_csv
from training.simulate.synth_render import draw_calcification, ellipse_radius, power_law_noise

VIEWS: tuple[tuple[str, str], ...] = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))
PATHOTYPES: tuple[str, ...] = ("pure_dcis", "dcis_microinvasion", "invasive")
PATHOTYPE_P = (0.3, 0.2, 0.5)
ER_POSITIVE_P = 0.7
BOX_MARGIN_PX = 4.0
MAX_VALUE = 4095  # 12 bits stored
DEFAULT_ROWS, DEFAULT_COLS = 1024, 640
PHANTOM_HEIGHT_MM = 204.8  # 1024 rows at 0.2 mm

LesionLabel = Literal["benign", "malignant"]


@dataclass
class SyntheticLesion:
    """One calcification cluster as seen in one image. ``box`` is x0, y0, x1, y1 in stored pixel coordinates."""

    box: tuple[float, float, float, float]
    label: LesionLabel
    pathotype: str | None
    er_positive: bool | None
    lesion_id: str = ""  # the same id on the CC and the MLO image of the breast


@dataclass
class SyntheticImage:
    """One synthetic mammogram: 12-bit MONOCHROME2 pixels as stored (chest wall on the right for a right breast)."""

    pixels: np.ndarray
    laterality: str
    view: str
    lesions: list[SyntheticLesion]
    spacing_mm: float


@dataclass
class _Calc:
    offset: np.ndarray  # (3,) depth, medio-lateral, cranio-caudal offsets from the cluster centre, in pixels
    semi_major: float
    semi_minor: float
    angle: float
    amplitude: float


@dataclass
class _Cluster:
    lesion_id: str
    label: LesionLabel
    pathotype: str | None
    er_positive: bool | None
    depth_fraction: float  # along the CC depth: 0 at the chest wall, 1 at the nipple
    cc_offset: float  # position across the breast in CC, -1..1 of the local half-height
    mlo_offset: float
    calcs: list[_Calc] = field(default_factory=list)


@dataclass
class _Breast:
    density: float
    cc_depth: float
    cc_half_height: float
    cc_centre: float
    mlo_depth: float
    mlo_half_height: float
    mlo_centre: float
    pectoral_width: float
    pectoral_height: float
    clusters: list[_Cluster]


# ------------------------------------------------------------------------------------------------- sampling
def _sample_cluster(rng: np.random.Generator, label: LesionLabel, lesion_id: str, scale: float) -> _Cluster:
    malignant = label == "malignant"
    pathotype = str(rng.choice(PATHOTYPES, p=PATHOTYPE_P)) if malignant else None
    er = bool(rng.random() < ER_POSITIVE_P) if malignant else None
    cluster = _Cluster(
        lesion_id=lesion_id,
        label=label,
        pathotype=pathotype,
        er_positive=er,
        depth_fraction=float(rng.uniform(0.2, 0.72)),
        cc_offset=float(rng.uniform(-0.6, 0.6)),
        mlo_offset=float(rng.uniform(-0.6, 0.5)),
    )
    if malignant:  # many, small, pleomorphic, tightly grouped
        n = int(rng.integers(10, 29))
        spread = rng.uniform(6.0, 14.0) * scale
        for _ in range(n):
            offset = rng.standard_normal(3) * spread / 2.0
            offset = np.clip(offset, -spread, spread)
            linear = rng.random() < 0.35
            minor = float(rng.uniform(0.6, 1.2) * max(scale, 0.6))
            major = minor * (rng.uniform(2.5, 5.0) if linear else rng.uniform(1.0, 1.8))
            angle = float(rng.uniform(0, math.pi))
            amp = float(rng.uniform(0.22, 0.42))
            cluster.calcs.append(_Calc(offset, major, minor, angle, amp))
            if linear and rng.random() < 0.4:  # a branch from the end of a linear form
                branch_angle = angle + float(rng.choice([-1, 1]) * rng.uniform(0.5, 1.1))
                tip = offset + np.array([math.cos(angle) * major, math.sin(angle) * major, 0.0])
                shift = np.array([math.cos(branch_angle) * major * 0.8, math.sin(branch_angle) * major * 0.8, 0.0])
                cluster.calcs.append(_Calc(tip + shift, major * 0.8, minor, branch_angle, amp * 0.9))
    else:  # few, round, larger, smooth, scattered
        n = int(rng.integers(2, 7))
        spread = rng.uniform(14.0, 26.0) * scale
        for _ in range(n):
            offset = rng.uniform(-spread, spread, size=3)
            r = float(rng.uniform(1.6, 3.4) * max(scale, 0.5))
            cluster.calcs.append(_Calc(offset, r * rng.uniform(1.0, 1.15), r, float(rng.uniform(0, math.pi)),
                                       float(rng.uniform(0.3, 0.5))))
    return cluster


def _sample_breast(rng: np.random.Generator, rows: int, cols: int, labels: list[LesionLabel], prefix: str,
                   scale: float) -> _Breast:
    clusters = [_sample_cluster(rng, label, f"{prefix}{i}", scale) for i, label in enumerate(labels)]
    return _Breast(
        density=float(rng.uniform(0.25, 0.85)),
        cc_depth=float(rng.uniform(0.55, 0.78) * cols),
        cc_half_height=float(rng.uniform(0.32, 0.44) * rows),
        cc_centre=float(rng.uniform(0.46, 0.54) * rows),
        mlo_depth=float(rng.uniform(0.6, 0.8) * cols),
        mlo_half_height=float(rng.uniform(0.42, 0.5) * rows),
        mlo_centre=float(rng.uniform(0.52, 0.6) * rows),
        pectoral_width=float(rng.uniform(0.22, 0.4) * cols),
        pectoral_height=float(rng.uniform(0.35, 0.6) * rows),
        clusters=clusters,
    )


def _sample_lesion_labels(rng: np.random.Generator) -> dict[str, list[LesionLabel]]:
    """Which clusters each breast has. A malignant patient: 1-2 malignant clusters in one breast, sometimes benign
    ones as well; a benign patient: 1-2 benign clusters. The other breast is normal or has one benign cluster."""
    malignant_patient = bool(rng.random() < 0.5)
    affected = str(rng.choice(["L", "R"]))
    other = "R" if affected == "L" else "L"
    labels: dict[str, list[LesionLabel]] = {"L": [], "R": []}
    if malignant_patient:
        labels[affected] = ["malignant"] * int(rng.integers(1, 3)) + ["benign"] * int(rng.random() < 0.3)
    else:
        labels[affected] = ["benign"] * int(rng.integers(1, 3))
    if rng.random() < 0.25:
        labels[other] = ["benign"]
    return labels


# ------------------------------------------------------------------------------------------------ rendering
def _cluster_centre(breast: _Breast, cluster: _Cluster, view: str) -> tuple[float, float]:
    """Centre of the cluster in the chest-wall-left frame of ``view`` (same depth fraction in CC and MLO)."""
    # radiologists match a lesion across views by its distance from the nipple, which compression keeps about equal
    nipple_distance = (1.0 - cluster.depth_fraction) * breast.cc_depth
    if view == "CC":
        depth, half, centre, offset = breast.cc_depth, breast.cc_half_height, breast.cc_centre, cluster.cc_offset
    else:
        depth, half, centre, offset = breast.mlo_depth, breast.mlo_half_height, breast.mlo_centre, cluster.mlo_offset
    x = max(depth - nipple_distance, 0.15 * depth)
    u = x / depth
    y = centre + offset * 0.75 * half * math.sqrt(max(1.0 - u * u, 0.0))
    if view == "MLO":  # stay below the pectoral muscle line
        muscle_y = breast.pectoral_height * (1.0 - x / breast.pectoral_width) if x < breast.pectoral_width else -1.0
        y = max(y, muscle_y + 0.08 * breast.mlo_half_height)
    return x, y


def _render_view(rng: np.random.Generator, breast: _Breast, view: str, rows: int, cols: int,
                 scale: float) -> tuple[np.ndarray, list[tuple[_Cluster, tuple[float, float, float, float]]]]:
    shape = (rows, cols)
    if view == "CC":
        depth, half, centre = breast.cc_depth, breast.cc_half_height, breast.cc_centre
    else:
        depth, half, centre = breast.mlo_depth, breast.mlo_half_height, breast.mlo_centre
    wobble = rng.uniform(-0.04, 0.04, size=3)
    r = ellipse_radius(shape, centre, depth, half, wobble)
    inside = r <= 1.0
    # thickness fall-off at the periphery and a brighter skin line a few pixels wide
    skin_width = max(3.0 * scale, 1.5) / min(depth, half)
    falloff = np.sqrt(np.clip((1.0 - r) / np.float32(0.12), 0.0, 1.0))
    skin = ((r > 1.0 - skin_width) & inside).astype(np.float32)

    # the coarse field has almost no power at high frequencies: draw it at a quarter of the size and interpolate
    coarse = resize_bilinear(power_law_noise(rng, (max(rows // 4, 16), max(cols // 4, 16)), beta=3.2, anisotropy=1.6),
                             shape)
    fine = power_law_noise(rng, shape, beta=2.2, anisotropy=2.5)
    # fibroglandular tissue concentrates behind the nipple, fat at the periphery
    x = ((np.arange(cols, dtype=np.float32) + 0.5) / depth)[None, :]
    y = ((np.arange(rows, dtype=np.float32) + 0.5 - centre) / half)[:, None]
    # separable Gaussian: exp(-a - b) = exp(-a) * exp(-b)
    glandular_zone = np.exp(-(((x - 0.55) / 0.45) ** 2)) * np.exp(-((y / 0.6) ** 2))
    gland = np.clip(np.float32(breast.density) * glandular_zone + np.float32(0.18) * coarse, 0.0, 1.0)
    tissue = np.float32(0.30) + np.float32(0.32) * gland + np.float32(0.05) * fine
    image = np.where(inside, tissue * (np.float32(0.55) + np.float32(0.45) * falloff) + np.float32(0.10) * skin,
                     np.float32(0.0))

    if view == "MLO":
        xx = (np.arange(cols, dtype=np.float32) + 0.5)[None, :]
        yy = (np.arange(rows, dtype=np.float32) + 0.5)[:, None]
        muscle = xx / np.float32(breast.pectoral_width) + yy / np.float32(breast.pectoral_height) <= 1.0
        image = np.where(muscle, np.float32(0.70) + np.float32(0.03) * fine + np.float32(0.04) * coarse, image)
        inside = inside | muscle

    # background: detector noise (about 0.3 % of full scale) and a lead marker beyond the nipple
    background = np.abs(rng.standard_normal(shape, dtype=np.float32)) * np.float32(0.004) + np.float32(0.002)
    image = np.where(inside, image, background)
    mh, mw = max(int(0.02 * rows), 2), max(int(0.04 * cols), 2)
    my, mx = int(0.05 * rows), int(0.9 * cols)
    image[my:my + mh, mx:mx + mw] = 0.85

    placed = []
    for cluster in breast.clusters:
        cx, cy = _cluster_centre(breast, cluster, view)
        xs, ys = [], []
        for calc in cluster.calcs:
            dx, dml, dcc = calc.offset
            px = cx + dx
            py = cy + (dml if view == "CC" else 0.7 * dml + 0.7 * dcc)
            angle = calc.angle if view == "CC" else calc.angle + 0.6
            draw_calcification(image, px, py, calc.semi_major, calc.semi_minor, angle, calc.amplitude)
            reach = max(calc.semi_major, calc.semi_minor)
            xs += [px - reach, px + reach]
            ys += [py - reach, py + reach]
        margin = BOX_MARGIN_PX * scale
        box = (
            max(min(xs) - margin, 0.0),
            max(min(ys) - margin, 0.0),
            min(max(xs) + margin, float(cols)),
            min(max(ys) + margin, float(rows)),
        )
        placed.append((cluster, box))
    return image, placed


def _patient_breasts(seed: int, patient_index: int, rows: int, cols: int) -> dict[str, _Breast]:
    """Both breasts of a patient (anatomy and clusters): the draws of the patient's own generator, made before any
    view is rendered (each view draws from a generator of its own)."""
    rng = np.random.default_rng([int(seed), int(patient_index)])
    scale = min(rows / DEFAULT_ROWS, cols / DEFAULT_COLS)
    labels = _sample_lesion_labels(rng)
    return {lat: _sample_breast(rng, rows, cols, labels[lat], f"{lat}", scale) for lat in ("L", "R")}


def lesion_free_views(seed: int, patient_index: int, *, rows: int = DEFAULT_ROWS,
                      cols: int = DEFAULT_COLS) -> list[tuple[str, str]]:
    """The views of ``synth_study(seed, patient_index, ...)`` that carry no lesion, in ``VIEWS`` order, known
    without rendering a pixel: a view shows every cluster of its breast."""
    breasts = _patient_breasts(seed, patient_index, rows, cols)
    return [(lat, view) for lat, view in VIEWS if not breasts[lat].clusters]


def synth_study(seed: int, patient_index: int, *, rows: int = DEFAULT_ROWS, cols: int = DEFAULT_COLS,
                spacing_mm: float | None = None,
                views: Sequence[tuple[str, str]] | None = None) -> list[SyntheticImage]:
    """The four views (LCC, LMLO, RCC, RMLO) of synthetic patient ``patient_index`` under ``seed``.

    The anatomy scales with ``rows``: the phantom is ``PHANTOM_HEIGHT_MM`` tall whatever the pixel count, so its pixel
    spacing defaults to that height over ``rows`` (0.2 mm at the default 1024 rows, 0.1 mm at 2048). A model that
    resamples to a fixed spacing then sees a breast of the same physical size at every image size.

    ``views`` renders only those (laterality, view) pairs, in ``VIEWS`` order, each byte for byte what the whole
    study holds: rendering is most of the cost, and lesion insertion (``training.simulate.dataset``) uses one view.
    """
    if rows < 64 or cols < 64:
        raise ValueError(f"synthetic images need at least 64 x 64 pixels, got {rows} x {cols}")
    wanted = VIEWS if views is None else tuple(views)
    unknown = [v for v in wanted if v not in VIEWS]
    if unknown:
        raise ValueError(f"unknown views {unknown}; choose from {list(VIEWS)}")
    if spacing_mm is None:
        spacing_mm = PHANTOM_HEIGHT_MM / rows
    scale = min(rows / DEFAULT_ROWS, cols / DEFAULT_COLS)
    breasts = _patient_breasts(seed, patient_index, rows, cols)
    images = []
    for lat, view in VIEWS:
        if (lat, view) not in wanted:
            continue
        view_rng = np.random.default_rng([int(seed), int(patient_index), 1 + VIEWS.index((lat, view))])
        canvas, placed = _render_view(view_rng, breasts[lat], view, rows, cols, scale)
        lesions = []
        for cluster, (x0, y0, x1, y1) in placed:
            if lat == "R":  # displayed with the chest wall on the right
                x0, x1 = cols - x1, cols - x0
            lesions.append(SyntheticLesion((float(x0), float(y0), float(x1), float(y1)), cluster.label,
                                           cluster.pathotype, cluster.er_positive, cluster.lesion_id))
        if lat == "R":
            canvas = canvas[:, ::-1]
        pixels = np.round(np.clip(canvas, 0.0, 1.0) * MAX_VALUE).astype(np.uint16)
        images.append(SyntheticImage(np.ascontiguousarray(pixels), lat, view, lesions, float(spacing_mm)))
    return images


# ---------------------------------------------------------------------------------------------------- writing
def patient_id_for(patient_index: int) -> str:
    return f"SYN{patient_index:05d}"


def write_synthetic_dataset(out_dir: Path, n_patients: int, *, seed: int = 0, rows: int = DEFAULT_ROWS,
                            cols: int = DEFAULT_COLS) -> Path:
    """Write ``n_patients`` synthetic studies as MG DICOM files plus their annotations; returns the CSV path.

    Layout: ``out_dir/<patient>/<laterality><view>.dcm``, ``out_dir/annotations.csv`` (the paper's CSV box format,
    image names relative to ``out_dir``, see :mod:`training.datasets.paper_csv`) and ``out_dir/lesions.json`` (label,
    pathotype and ER status of every lesion, keyed by image, with lesion ids shared by the CC and MLO views).
    UIDs derive from the seed and the patient, so rewriting the same dataset gives the same files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    annotations: dict[str, list[PaperBox]] = {}
    records = []
    for index in range(n_patients):
        pid = patient_id_for(index)
        study_uid = derive_uid("mccad-synth", str(seed), pid, "study")
        frame_uid = derive_uid("mccad-synth", str(seed), pid, "frame")
        study_date = f"2026{1 + index % 12:02d}{1 + index % 28:02d}"
        for number, image in enumerate(synth_study(seed, index, rows=rows, cols=cols), start=1):
            name = f"{pid}/{image.laterality}{image.view}.dcm"
            spec = MGInstanceSpec(
                patient_id=pid,
                patient_name=f"Synthetic^{pid}",
                study_uid=study_uid,
                series_uid=derive_uid("mccad-synth", str(seed), pid, "series", image.laterality, image.view),
                sop_uid=derive_uid("mccad-synth", str(seed), pid, "image", image.laterality, image.view),
                laterality=image.laterality,
                view=image.view,
                pixel_spacing_mm=image.spacing_mm,
                study_date=study_date,
                accession=pid,
                frame_of_reference_uid=frame_uid,
                series_number=number,
                instance_number=1,
            )
            write_mg_instance(out_dir / name, image.pixels, spec)
            annotations[name] = [
                PaperBox.from_corners(lesion.box, lesion.label) for lesion in image.lesions
            ]
            records.append({
                "image": name,
                "patient_id": pid,
                "laterality": image.laterality,
                "view": image.view,
                "lesions": [asdict(lesion) | {"box": list(lesion.box)} for lesion in image.lesions],
            })
    csv_path = write_paper_csv(out_dir / "annotations.csv", annotations)
    meta = {"seed": seed, "rows": rows, "cols": cols, "n_patients": n_patients, "images": records}
    write_text_durably(out_dir / "lesions.json", json.dumps(meta, indent=1))
    return csv_path
