"""VinDr-Mammo and CMMD read from small trees laid out as PhysioNet and TCIA ship them."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tests.training.dicom_tree import write_dicom
from training.datasets.cmmd import read_cmmd
from training.datasets.readers import read_dataset
from training.datasets.samples import DatasetError
from training.datasets.vindr_mammo import birads_category, read_vindr_mammo

IMAGE_COLS = ["study_id", "series_id", "image_id", "laterality", "view_position", "height", "width", "breast_birads",
              "breast_density", "split"]
FINDING_COLS = ["image_id", "study_id", "series_id", "laterality", "view_position", "height", "width",
                "breast_birads", "breast_density", "finding_categories", "finding_birads", "xmin", "ymin", "xmax",
                "ymax", "split"]


def _write(path: Path, header: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=header)
        w.writeheader()
        w.writerows(rows)


def build_vindr(root: Path) -> None:
    """Three exams of four views as PhysioNet lays them out; exam s1 has a calcification and a mass."""
    images, findings = [], []
    plan = {"s1": "training", "s2": "training", "s3": "test"}
    for study, split in plan.items():
        for k, (side, view) in enumerate((("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))):
            image_id = f"{study}img{k}"
            write_dicom(root / "images" / study / f"{image_id}.dicom", np.full((40, 30), 500, np.uint16),
                        patient_id=study, laterality=side, view=view)
            base = {"study_id": study, "series_id": f"{study}ser", "image_id": image_id, "laterality": side,
                    "view_position": view, "height": 40, "width": 30, "breast_birads": "BI-RADS 1",
                    "breast_density": "DENSITY C", "split": split}
            images.append(base)
            no = dict(base, finding_categories="['No Finding']", finding_birads="", xmin="", ymin="", xmax="",
                      ymax="")
            if image_id == "s1img0":
                images[-1] = dict(base, breast_birads="BI-RADS 4")
                findings.append(dict(base, breast_birads="BI-RADS 4", finding_categories="['Suspicious Calcification']",
                                     finding_birads="BI-RADS 4", xmin="3.5", ymin="4.25", xmax="9.0", ymax="12.0"))
                findings.append(dict(base, breast_birads="BI-RADS 4",
                                     finding_categories="['Mass', 'Suspicious Calcification']",
                                     finding_birads="BI-RADS 3", xmin="10", ymin="20", xmax="18", ymax="30"))
            elif image_id == "s1img2":
                findings.append(dict(base, finding_categories="['Mass']", finding_birads="BI-RADS 3", xmin="1",
                                     ymin="1", xmax="8", ymax="8"))
            else:
                findings.append(no)
    _write(root / "breast-level_annotations.csv", IMAGE_COLS, images)
    _write(root / "finding_annotations.csv", FINDING_COLS, findings)


def test_vindr_mammo_calcifications_become_lesions(tmp_path):
    build_vindr(tmp_path)
    samples = read_vindr_mammo(tmp_path)
    ids = [s.image_id for s in samples]
    assert len(samples) == 11 and "s1img2" not in ids  # the mass-only image stays out by default
    cc = samples[ids.index("s1img0")]
    assert (cc.patient_id, cc.breast, cc.view, cc.split, cc.source.suffix) == ("s1", "L", "CC", "training", ".dicom")
    assert [(les.box, les.label, les.assessment, les.category) for les in cc.lesions] == [
        ((3.5, 4.25, 9.0, 12.0), "malignant", "4", "Suspicious Calcification"),
        ((10.0, 20.0, 18.0, 30.0), "benign", "3", "Mass, Suspicious Calcification")]
    assert cc.attrs == {"breast_birads": "BI-RADS 4", "breast_density": "DENSITY C"}
    assert all(not s.lesions and s.label == "benign" for s in samples if s.image_id != "s1img0")
    background = read_vindr_mammo(tmp_path, other_findings="background")
    mass = [s for s in background if s.image_id == "s1img2"]
    assert len(background) == 12 and mass[0].lesions == ()  # kept, its mass is background
    test = read_dataset(tmp_path, "vindr_mammo", split="test")
    assert {s.patient_id for s in test} == {"s3"} and len(test) == 4
    with pytest.raises(DatasetError, match="has the splits test, training"):
        read_dataset(tmp_path, "vindr_mammo", split="validation")


def test_vindr_mammo_missing_image_and_bad_box(tmp_path):
    build_vindr(tmp_path)
    (tmp_path / "images" / "s2" / "s2img1.dicom").unlink()
    with pytest.raises(DatasetError, match="s2img1"):
        read_vindr_mammo(tmp_path)
    skipped: list[str] = []
    assert len(read_vindr_mammo(tmp_path, skipped=skipped)) == 10 and "s2img1" in skipped[0]
    with open(tmp_path / "finding_annotations.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[0]["xmax"] = "1.0"  # xmax left of xmin
    _write(tmp_path / "finding_annotations.csv", FINDING_COLS, rows)
    with pytest.raises(DatasetError, match="row 2 .*empty"):
        read_vindr_mammo(tmp_path, skipped=None)
    assert birads_category("BI-RADS 4A") == "4a" and birads_category("") is None


def build_cmmd(root: Path, table: str = "xlsx") -> None:
    """Three subjects in the retriever's tree; D1-0002 has four views, only its left breast in the table."""
    tree = root / "CMMD"
    views = {"D1-0001": [("R", "CC"), ("R", "MLO")], "D1-0002": [("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")],
             "D2-0001": [("L", "CC"), ("L", "MLO")]}
    for n, (subject, vs) in enumerate(views.items()):
        for k, (side, view) in enumerate(vs, start=1):
            write_dicom(tree / subject / f"07-18-2010-NA-NA-7937{n}" / f"1.000000-NA-7024{n}" / f"1-{k}.dcm",
                        np.full((30, 20), 300, np.uint16), patient_id=subject, laterality=side, view_code=view)
    header = ["ID1", "LeftRight", "Age", "number", "abnormality", "classification", "subtype"]
    rows = [["D1-0001", "R", 44, 1, "calcification", "Benign", None],
            ["D1-0002", "L", 51, 1, "mass", "Benign", None],
            ["D2-0001", "L", 60, 1, "both", "Malignant", "Luminal B"]]
    if table == "xlsx":
        import openpyxl

        book = openpyxl.Workbook()
        sheet = book.active
        for r in [header, *rows]:
            sheet.append(r)
        book.save(root / "CMMD_clinicaldata_revision.xlsx")
    else:
        with open(root / "CMMD_clinicaldata_revision.csv", "w", newline="") as fh:
            csv.writer(fh, delimiter=";").writerows([header, *[["" if v is None else v for v in r] for r in rows]])


@pytest.mark.parametrize("table", ["xlsx", "csv"])
def test_cmmd_clinical_table_and_tcia_tree(tmp_path, table):
    build_cmmd(tmp_path, table)
    samples = read_dataset(tmp_path, "cmmd")
    assert len(samples) == 6  # D1-0002's right breast is not in the table: no label, left out
    by = {(s.patient_id, s.breast, s.view): s for s in samples}
    assert set(by) == {("D1-0001", "R", "CC"), ("D1-0001", "R", "MLO"), ("D1-0002", "L", "CC"),
                       ("D1-0002", "L", "MLO"), ("D2-0001", "L", "CC"), ("D2-0001", "L", "MLO")}
    malignant = by[("D2-0001", "L", "CC")]
    assert (malignant.label, malignant.lesions) == ("malignant", ())
    assert malignant.attrs == {"abnormality": "both", "subtype": "Luminal B", "age": "60"}
    assert by[("D1-0001", "R", "MLO")].label == "benign"
    assert malignant.image_id.startswith("CMMD/D2-0001/") and malignant.source.is_file()


def test_cmmd_breast_without_images(tmp_path):
    build_cmmd(tmp_path)
    for f in (tmp_path / "CMMD" / "D1-0001").rglob("*.dcm"):
        f.unlink()
    with pytest.raises(DatasetError, match="no DICOM of D1-0001 R"):
        read_cmmd(tmp_path, cache=False)
    skipped: list[str] = []
    assert len(read_cmmd(tmp_path, skipped=skipped, cache=False)) == 4 and len(skipped) == 1
