"""CBIS-DDSM as downloaded: the real calcification tables against a tree of small DICOMs laid out the way TCIA's NBIA
Data Retriever writes it (descriptive folder names, the ROI series holding crop and mask in either order)."""
from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.training.dicom_tree import write_dicom
from training.datasets import dicom_index
from training.datasets.cbis_ddsm import read_cbis_ddsm
from training.datasets.dicom_index import index_dicom_tree
from training.datasets.readers import read_dataset

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cbis-ddsm-csv"
TABLES = ("calc_case_description_train_set.csv", "calc_case_description_test_set.csv")
FULL_SHAPE = (48, 32)  # rows, columns of every full image; masks are written at half that size on odd rows


def _real_rows() -> list[dict]:
    if not all((REAL / t).is_file() for t in TABLES):
        pytest.skip(f"the real CBIS-DDSM tables are not at {REAL.resolve()} (shared data of the project)")
    rows = []
    for t in TABLES:
        with open(REAL / t, newline="") as fh:
            rows.extend(dict(r, _table=t) for r in csv.DictReader(fh))
    return rows


def _uids(path: str) -> tuple[str, str, str]:
    subject, study, series, _ = path.strip().split("/")
    return subject, study, series


def _retriever_dir(root: Path, path: str, description: str) -> Path:
    subject, study, series = _uids(path)
    return root / "CBIS-DDSM" / subject / f"08-29-2017-DDSM-NA-{study[-5:]}" / f"1.000000-{description}-{series[-5:]}"


def _box(k: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """A finding's mask rectangle (x0, y0, x1, y1) in a mask of ``shape``."""
    h, w = shape
    x0, y0 = (k * 3) % (w - 8), (k * 7) % (h - 9)
    return x0, y0, x0 + 2 + k % 5, y0 + 2 + k % 7


def build_retriever_tree(root: Path, rows: list[dict]) -> dict[tuple[str, str], tuple[float, float, float, float]]:
    """Write the tree; return the expected box (full-image pixels) per (image path, abnormality id)."""
    expected = {}
    for image_path in sorted({r["image file path"].strip() for r in rows}):
        subject, study, series = _uids(image_path)
        write_dicom(_retriever_dir(root, image_path, "full mammogram images") / "1-1.dcm",
                    np.full(FULL_SHAPE, 100, np.uint8), patient_id=subject, study_uid=study, series_uid=series,
                    series_description="full mammogram images")
    for k, r in enumerate(rows):
        mask_path, crop_path = r["ROI mask file path"].strip(), r["cropped image file path"].strip()
        shape = FULL_SHAPE if k % 2 == 0 else (FULL_SHAPE[0] // 2, FULL_SHAPE[1] // 2)
        x0, y0, x1, y1 = _box(k, shape)
        mask = np.zeros(shape, np.uint8)
        mask[y0:y1, x0:x1] = 255
        scale = FULL_SHAPE[0] / shape[0]
        expected[(r["image file path"].strip(), r["abnormality id"])] = (x0 * scale, y0 * scale, x1 * scale,
                                                                         y1 * scale)
        subject, study, series = _uids(mask_path)
        mask_dir = _retriever_dir(root, mask_path, "ROI mask images")
        c_subject, c_study, c_series = _uids(crop_path)
        same = c_series == series
        crop_dir = mask_dir if same else _retriever_dir(root, crop_path, "cropped images")
        mask_name, crop_name = ("1-1.dcm", "1-2.dcm") if k % 3 else ("1-2.dcm", "1-1.dcm")
        write_dicom(mask_dir / mask_name, mask, patient_id=subject, study_uid=study, series_uid=series,
                    series_description="ROI mask images")
        write_dicom(crop_dir / crop_name, np.full((6, 5), 200, np.uint8), patient_id=c_subject, study_uid=c_study,
                    series_uid=c_series, series_description="ROI mask images" if same else "cropped images")
    return expected


@pytest.fixture(scope="module")
def real_tree(tmp_path_factory):
    rows = _real_rows()
    root = tmp_path_factory.mktemp("cbis")
    for t in TABLES:
        shutil.copy(REAL / t, root / t)  # the tables sit beside the tree in a user's download folder
    expected = build_retriever_tree(root, rows)
    return root, rows, expected


def test_real_tables_read_whole_from_a_retriever_tree(real_tree):
    root, rows, expected = real_tree
    samples = read_dataset(root, "cbis_ddsm")
    assert len(rows) == 1546 + 326
    assert len(samples) == len({r["image file path"].strip() for r in rows}) == 1227 + 284
    assert Counter(s.split for s in samples) == {"training": 1227, "test": 284}
    lesions = [les for s in samples for les in s.lesions]
    assert len(lesions) == 1546 + 326
    assert sum(len(s.lesions) > 1 for s in samples) > 0  # several findings on one image stay on one sample

    def na(v: str) -> str | None:
        return None if v.strip() == "NA" else v.strip()

    assert Counter(les.calc_type for les in lesions) == Counter(na(r["calc type"]) for r in rows)
    assert Counter(les.distribution for les in lesions) == Counter(na(r["calc distribution"]) for r in rows)
    assert Counter(les.assessment for les in lesions) == Counter(r["assessment"] for r in rows)
    assert Counter(les.subtlety for les in lesions) == Counter(int(r["subtlety"]) for r in rows)
    assert Counter(les.label for les in lesions) == Counter(
        "malignant" if r["pathology"] == "MALIGNANT" else "benign" for r in rows)
    assert Counter(r["pathology"] for r in rows)["BENIGN_WITHOUT_CALLBACK"] == 474 + 67

    by_image = {s.image_id: s for s in samples}
    for image_path in {r["image file path"].strip() for r in rows}:
        sample = by_image[image_path]
        assert sample.source.parts[-2].startswith("1.000000-full mammogram images-")
        assert sample.source.name == "1-1.dcm"
    # findings keep their table order within an image: compare each image's boxes with the expected ones
    order: dict[str, list[str]] = {}
    for r in rows:
        order.setdefault(r["image file path"].strip(), []).append(r["abnormality id"])
    for image_path, ids in order.items():
        assert [les.box for les in by_image[image_path].lesions] == [expected[(image_path, i)] for i in ids]
    first = by_image[rows[0]["image file path"].strip()]
    assert (first.patient_id, first.breast, first.view, first.attrs["breast_density"]) == ("P_00005", "R", "CC", "3")
    assert (first.lesions[0].calc_type, first.lesions[0].distribution, first.lesions[0].assessment,
            first.lesions[0].subtlety) == ("AMORPHOUS", "CLUSTERED", "3", 3)


def test_the_index_is_cached_and_reused(real_tree, monkeypatch):
    root, rows, _ = real_tree
    index_dicom_tree(root)  # made (or refreshed) by the test above
    assert (root / dicom_index.CACHE_NAME).is_file()

    def no_header_reads(*args, **kwargs):
        raise AssertionError("a cached header was read again")

    monkeypatch.setattr(dicom_index, "read_entry", no_header_reads)
    again = read_cbis_ddsm(root / TABLES[1])
    assert len(again) == 284 and sum(len(s.lesions) for s in again) == 326


def test_missing_files_are_reported_or_raise(tmp_path):
    rows = _real_rows()[:6]
    table = tmp_path / "calc_case_description_train_set.csv"
    with open(REAL / TABLES[0], newline="") as src, open(table, "w", newline="") as dst:
        lines = list(csv.reader(src))
        csv.writer(dst).writerows(lines[:7])
    build_retriever_tree(tmp_path, rows)
    gone = _retriever_dir(tmp_path, rows[1]["ROI mask file path"].strip(), "ROI mask images")
    shutil.rmtree(gone)
    with pytest.raises(ValueError, match="ROI mask .* is not under"):
        read_cbis_ddsm(table, cache=False)
    skipped: list[str] = []
    samples = read_cbis_ddsm(table, skipped=skipped, cache=False)
    assert len(skipped) == 1 and rows[1]["patient_id"] in skipped[0]
    assert rows[1]["image file path"].strip() not in {s.image_id for s in samples}  # left out, not kept unboxed
    assert len(samples) == len({r["image file path"].strip() for r in rows}) - 1


def test_converted_copy_with_a_dicom_info_map(tmp_path):
    """The common JPEG copy: ``jpeg/<series uid>/1-N.jpg`` and ``csv/dicom_info.csv`` naming each file's series."""
    rows = _real_rows()[:3]
    (tmp_path / "csv").mkdir()
    table = tmp_path / "csv" / "calc_case_description_train_set.csv"
    with open(REAL / TABLES[0], newline="") as src, open(table, "w", newline="") as dst:
        csv.writer(dst).writerows(list(csv.reader(src))[:4])
    info = [["file_path", "image_path", "PatientID", "SeriesDescription", "SeriesInstanceUID", "StudyInstanceUID",
             "Rows", "Columns"]]
    for k, r in enumerate(rows):
        subject, study, series = _uids(r["image file path"])
        jpeg = tmp_path / "jpeg" / series / "1-1.jpg"
        jpeg.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((40, 30), 90, np.uint8)).save(jpeg, quality=90)
        info.append([f"CBIS-DDSM/dicom/{series}/1-1.dcm", f"CBIS-DDSM/jpeg/{series}/1-1.jpg", subject,
                     "full mammogram images", series, study, 40, 30])
        m_subject, m_study, m_series = _uids(r["ROI mask file path"])
        mask = np.zeros((40, 30), np.uint8)
        mask[10 + k:20 + k, 5:12] = 255
        for name, pixels, desc in (("1-1.jpg", mask, "ROI mask images"),
                                   ("1-2.jpg", np.full((9, 8), 250, np.uint8), "cropped images")):
            out = tmp_path / "jpeg" / m_series / name
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(out, quality=75)
            info.append([f"CBIS-DDSM/dicom/{m_series}/{name}", f"CBIS-DDSM/jpeg/{m_series}/{name}", m_subject, desc,
                         m_series, m_study, *pixels.shape])
    with open(tmp_path / "csv" / "dicom_info.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(info)
    samples = read_cbis_ddsm(tmp_path, cache=False)
    assert [s.source.suffix for s in samples] == [".jpg"] * len(samples)
    assert [les.box for s in samples for les in s.lesions] == [(5.0, 10.0 + k, 12.0, 20.0 + k) for k in range(3)]


def test_a_truncated_download_is_named(tmp_path):
    rows = _real_rows()[:2]
    table = tmp_path / "calc_case_description_train_set.csv"
    with open(REAL / TABLES[0], newline="") as src, open(table, "w", newline="") as dst:
        csv.writer(dst).writerows(list(csv.reader(src))[:3])
    build_retriever_tree(tmp_path, rows)
    full = _retriever_dir(tmp_path, rows[0]["image file path"], "full mammogram images") / "1-1.dcm"
    full.write_bytes(full.read_bytes()[:100])  # a transfer cut short
    skipped: list[str] = []
    samples = read_cbis_ddsm(table, skipped=skipped, cache=False)
    assert len(samples) == 1 and len(skipped) == 1
    assert "is not under" in skipped[0] and "1 files there are not readable DICOM" in skipped[0]
    assert full.relative_to(tmp_path).as_posix() in skipped[0]


def test_uid_layout_row_naming_the_crop_as_its_mask(tmp_path):
    """Copies that kept the tables' UID folders: a row whose mask path names the crop still gets the mask's box."""
    rows = _real_rows()[:1]
    table = tmp_path / "calc_case_description_train_set.csv"
    with open(REAL / TABLES[0], newline="") as src, open(table, "w", newline="") as dst:
        csv.writer(dst).writerows(list(csv.reader(src))[:2])
    r = rows[0]
    subject, study, series = _uids(r["image file path"])
    write_dicom(tmp_path / r["image file path"].strip(), np.zeros(FULL_SHAPE, np.uint8), patient_id=subject,
                study_uid=study, series_uid=series)
    mask = np.zeros(FULL_SHAPE, np.uint8)
    mask[5:9, 7:10] = 255
    write_dicom(tmp_path / r["ROI mask file path"].strip(), np.full((6, 5), 200, np.uint8))  # the crop, misnamed
    write_dicom(tmp_path / r["cropped image file path"].strip(), mask)
    (s,) = read_cbis_ddsm(table, cache=False)
    assert s.source == tmp_path / r["image file path"].strip()
    assert [les.box for les in s.lesions] == [(7.0, 5.0, 10.0, 9.0)]
