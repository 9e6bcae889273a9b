"""Each dataset reader on a small fixture written here in the dataset's real format, and the patient-level splits."""
from __future__ import annotations

import json
import plistlib
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from training.datasets.cbis_ddsm import read_cbis_ddsm
from training.datasets.coco import read_coco, write_coco
from training.datasets.inbreast import read_inbreast
from training.datasets.mias import read_mias
from training.datasets.paper_csv import read_paper_dataset
from training.datasets.readers import read_dataset
from training.datasets.samples import DatasetError, Lesion, Sample
from training.datasets.splits import kfold_by_patient, split_by_patient
from training.datasets.sr_folder import read_sr_folder
from training.datasets.paper_csv import PaperBox, write_paper_csv
from training.simulate.synth import write_synthetic_dataset


def test_paper_csv_with_the_synth_sidecar(tmp_path):
    csv = write_synthetic_dataset(tmp_path / "s", 3, seed=0, rows=256, cols=160)
    samples = read_paper_dataset(csv)
    assert len(samples) == 12 and {s.view for s in samples} == {"CC", "MLO"}
    sidecar = json.loads((tmp_path / "s" / "lesions.json").read_text())
    by_name = {rec["image"]: rec for rec in sidecar["images"]}
    for s in samples:
        rec = by_name[s.image_id]
        assert s.patient_id == rec["patient_id"] and s.breast == rec["laterality"] and s.source.is_file()
        assert [les.label for les in s.lesions] == [les["label"] for les in rec["lesions"]]
        for les, raw in zip(s.lesions, rec["lesions"], strict=True):
            assert les.box == pytest.approx(tuple(raw["box"]))
            if raw["label"] == "malignant":
                assert les.pathotype is not None and les.er in ("positive", "negative")


def test_paper_csv_without_sidecar_takes_patient_side_and_view_from_names(tmp_path):
    write_paper_csv(tmp_path / "a.csv", {"P7/RMLO.png": [PaperBox(10, 20, 5, 6, "malignant")],
                                         "case_12_L_CC.png": []})
    a, b = read_dataset(tmp_path / "a.csv")
    assert (a.patient_id, a.breast, a.view, a.label, a.lesions[0].box) == ("P7", "R", "MLO", "malignant",
                                                                           (10, 20, 15, 26))
    assert (b.breast, b.view, b.label, b.lesions) == ("L", "CC", "benign", ())


def test_coco_round_trip_and_fields(tmp_path):
    doc = {"images": [{"id": 5, "file_name": "P1/LCC.png", "width": 100, "height": 200, "patient_id": "W1",
                       "laterality": "L", "view": "CC"},
                      {"id": 6, "file_name": "P1/LMLO.png", "width": 100, "height": 200}],
           "annotations": [{"id": 1, "image_id": 5, "category_id": 3, "bbox": [10, 20, 30, 40],
                            "pathotype": "DCIS", "er": "ER+"},
                           {"id": 2, "image_id": 5, "category_id": 4, "bbox": [50, 60, 5, 5]}],
           "categories": [{"id": 3, "name": "calcification_malignant"}, {"id": 4, "name": "Benign"}]}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    a, b = read_coco(tmp_path / "c.json")
    assert a.patient_id == "W1" and a.lesions[0] == Lesion((10, 20, 40, 60), "malignant", "dcis", "positive")
    assert a.lesions[1].label == "benign" and a.label == "malignant"
    assert (b.patient_id, b.breast, b.view, b.lesions) == ("P1", "L", "MLO", ())
    again = read_coco(write_coco(tmp_path / "d.json", [a, b]))
    assert [(s.image_id, s.lesions, s.breast) for s in again] == [(s.image_id, s.lesions, s.breast) for s in (a, b)]
    doc["categories"][1]["name"] = "mass"
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="neither benign nor malignant"):
        read_coco(tmp_path / "bad.json")


def _write_dicom_mask(path: Path, mask: np.ndarray) -> None:
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = mask.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = mask.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_cbis_ddsm_boxes_from_roi_masks(tmp_path):
    img_dir = tmp_path / "Calc-Training_P_00005_RIGHT_CC"
    img_dir.mkdir()
    Image.fromarray(np.zeros((200, 100), np.uint8)).save(img_dir / "000000.png")  # image twice the mask size
    m1 = np.zeros((100, 50), np.uint8)
    m1[10:20, 5:15] = 255
    Image.fromarray(m1).save(img_dir / "mask1.png")
    m2 = np.zeros((100, 50), np.uint8)
    m2[40:41, 30:35] = 1
    _write_dicom_mask(img_dir / "mask2.dcm", m2)
    header = ("patient_id,breast density,left or right breast,image view,abnormality id,abnormality type,calc type,"
              "calc distribution,assessment,pathology,subtlety,image file path,cropped image file path,"
              "ROI mask file path\n")
    rows = ("P_00005,3,RIGHT,CC,1,calcification,AMORPHOUS,CLUSTERED,3,MALIGNANT,3,"
            "Calc-Training_P_00005_RIGHT_CC/000000.png,x.dcm,\"Calc-Training_P_00005_RIGHT_CC/mask1.png\n\"\n"
            "P_00005,3,RIGHT,CC,2,calcification,PUNCTATE,CLUSTERED,2,BENIGN_WITHOUT_CALLBACK,3,"
            "Calc-Training_P_00005_RIGHT_CC/000000.png,x.dcm,Calc-Training_P_00005_RIGHT_CC/mask2.dcm\n")
    (tmp_path / "calc_case_description_train_set.csv").write_text(header + rows)
    (s,) = read_dataset(tmp_path / "calc_case_description_train_set.csv", "cbis_ddsm")
    assert read_cbis_ddsm(tmp_path / "calc_case_description_train_set.csv") == [s]
    assert (s.patient_id, s.breast, s.view, s.labels) == ("P_00005", "R", "CC", ["malignant", "benign"])
    assert s.lesions[0].box == (10.0, 20.0, 30.0, 40.0)  # mask box (5, 10, 15, 20) scaled by 2
    assert s.lesions[1].box == (60.0, 80.0, 70.0, 82.0)


def test_inbreast_xml_rois_and_birads(tmp_path):
    (tmp_path / "AllDICOMs").mkdir()
    (tmp_path / "AllXML").mkdir()
    for name in ("22678622_1b2c3d4e5f6a7b8c_MG_R_CC_ANON.dcm", "22678646_1b2c3d4e5f6a7b8c_MG_R_ML_ANON.dcm",
                 "30000000_ffff000011112222_MG_L_CC_ANON.dcm"):
        (tmp_path / "AllDICOMs" / name).write_bytes(b"")
    rois = {"Images": [{"ImageIndex": 0, "NumberOfROIs": 3, "ROIs": [
        {"Name": "Calcification", "Point_px": ["(100.5, 200.25)"], "NumberOfPoints": 1},
        {"Name": "Cluster", "Point_px": ["(10, 20)", "(40, 25)", "(30, 60)"], "NumberOfPoints": 3},
        {"Name": "Mass", "Point_px": ["(500, 500)", "(600, 650)"], "NumberOfPoints": 2}]}]}
    (tmp_path / "AllXML" / "22678622.xml").write_bytes(plistlib.dumps(rois, fmt=plistlib.FMT_XML))
    (tmp_path / "INbreast.csv").write_text("Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;"
                                           "Bi-Rads\nremoved;removed;R;CC;201001;22678622;2;4c\n"
                                           "removed;removed;R;MLO;201001;22678646;2;2\n")
    samples = read_inbreast(tmp_path)
    assert [s.image_id for s in samples] == ["22678622", "22678646"]  # the third has no BI-RADS row
    cc, mlo = samples
    assert (cc.patient_id, cc.breast, cc.view, cc.label) == ("1b2c3d4e5f6a7b8c", "R", "CC", "malignant")
    assert [les.box for les in cc.lesions] == [(96.5, 196.25, 104.5, 204.25), (10.0, 20.0, 40.0, 60.0)]
    assert (mlo.view, mlo.label, mlo.lesions) == ("MLO", "benign", ())


def test_mias_info_txt(tmp_path):
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "mdb209.pgm")
    (tmp_path / "Info.txt").write_text(
        "mdb001 G CIRC B 535 425 197\nmdb002 G NORM\nmdb209 G CALC M 20 10 5\nmdb209 G CALC M 40 50 3\n"
        "mdb210 F CALC B\n")
    samples = read_mias(tmp_path / "Info.txt")
    assert [s.image_id for s in samples] == ["mdb002", "mdb209", "mdb210"]
    normal, calc, diffuse = samples
    assert normal.label == "benign" and normal.lesions == () and normal.breast == "L"
    assert calc.breast == "R" and calc.patient_id == "mias105" and calc.label == "malignant"
    assert [les.box for les in calc.lesions] == [(15.0, 49.0, 25.0, 59.0), (37.0, 11.0, 43.0, 17.0)]  # y from bottom
    assert diffuse.label == "benign" and diffuse.lesions == ()
    (tmp_path / "bad.txt").write_text("mdb003 G WHAT B\n")
    with pytest.raises(DatasetError, match="line 1"):
        read_mias(tmp_path / "bad.txt")


def test_sr_folder_reads_our_own_measurement_reports(tmp_path):
    from dicom_io.sr import build_measurement_report
    from tests.dicom_io.result_fixtures import make_result, make_source

    sources = [make_source(1, "L", "CC"), make_source(2, "L", "MLO")]
    for i, ds in enumerate(sources):
        ds.save_as(tmp_path / f"img{i}.dcm", enforce_file_format=True)
    result = make_result(sources)
    sr = build_measurement_report(result, {ds.SOPInstanceUID: ds for ds in sources})
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    (tmp_path / "notes.txt").write_text("not DICOM")
    samples = read_sr_folder(tmp_path)
    assert [s.image_id for s in samples] == [ds.SOPInstanceUID for ds in sources]
    first = samples[0]
    assert first.source == tmp_path / "img0.dcm" and first.patient_id == "PID-0001" and first.breast == "L"
    assert [les.label for les in first.lesions] == ["malignant", "benign"]
    assert first.lesions[0].box == pytest.approx((10.25, 20.1, 60.333333333333336, 80.7))
    assert samples[1].lesions == () and samples[1].label == "benign"


def _population(n_patients: int) -> list[Sample]:
    out = []
    for p in range(n_patients):
        for view in ("CC", "MLO"):
            label = "malignant" if p % 3 == 0 else "benign"
            out.append(Sample(image_id=f"{p}{view}", source=Path("x"), patient_id=f"P{p}", breast="L", view=view,
                              lesions=(Lesion((0, 0, 1, 1), label),)))
    return out


def test_patient_level_split_and_kfold():
    samples = _population(30)
    rest, held = split_by_patient(samples, 0.2, seed=1)
    assert not {s.patient_id for s in rest} & {s.patient_id for s in held}
    assert len(rest) + len(held) == len(samples)
    assert Counter(s.label for s in held) == Counter({"benign": 8, "malignant": 4})  # 20% of 20 and of 10 patients
    folds = kfold_by_patient(samples, 5, seed=0)
    tested = [s.patient_id for _, test in folds for s in test]
    assert sorted(tested) == sorted(s.patient_id for s in samples)  # every image tested exactly once
    for train, test in folds:
        assert not {s.patient_id for s in train} & {s.patient_id for s in test}
        assert 0 < sum(s.target for s in test) < len(test)
    with pytest.raises(ValueError):
        kfold_by_patient(samples[:4], 5)
