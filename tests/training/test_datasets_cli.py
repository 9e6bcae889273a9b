"""``mccad datasets check`` and ``mccad train --format`` on archives laid out as their publishers ship them."""
from __future__ import annotations

import json
import plistlib

import numpy as np
import pytest

from mccad.cli import main
from tests.training.dicom_tree import write_dicom
from tests.training.test_vindr_cmmd_readers import build_cmmd, build_vindr
from training.datasets.inbreast import read_inbreast


def test_check_reports_counts_and_passes(tmp_path, capsys):
    build_vindr(tmp_path)
    out = tmp_path / "report.json"
    assert main(["datasets", "check", str(tmp_path), "--format", "vindr_mammo", "--json", str(out),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "images      11 (benign 10, malignant 1)" in text and "patients    3" in text
    assert "splits      training 7, test 4" in text and text.rstrip().endswith("OK")
    report = json.loads(out.read_text())
    assert report["lesions_by_label"] == {"benign": 1, "malignant": 1} and report["ok"] is True
    assert report["lesions_by_assessment"] == {"3": 1, "4": 1}


def test_check_lists_missing_and_unreadable_files(tmp_path, capsys):
    build_vindr(tmp_path)
    (tmp_path / "images" / "s2" / "s2img1.dicom").unlink()
    (tmp_path / "images" / "s3" / "s3img0.dicom").write_bytes(b"DICM but truncated")
    cut = tmp_path / "images" / "s3" / "s3img1.dicom"
    cut.write_bytes(cut.read_bytes()[:-100])  # header whole, pixels cut short in transfer
    out = tmp_path / "report.json"
    assert main(["datasets", "check", str(tmp_path), "--format", "vindr_mammo", "--json", str(out),
                 "--no-progress"]) == 1
    report = json.loads(out.read_text())
    assert len(report["unresolved"]) == 1 and "s2img1" in report["unresolved"][0]
    assert [m.split(":")[0] for m in report["unreadable"]] == ["s3img0", "s3img1"]
    assert "Pixel Data is cut short" in report["unreadable"][1]
    assert "PROBLEMS FOUND" in capsys.readouterr().out


def test_check_cmmd_and_a_missing_table(tmp_path, capsys):
    build_cmmd(tmp_path)
    out = tmp_path / "report.json"
    assert main(["datasets", "check", str(tmp_path), "--format", "cmmd", "--json", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "images      6 (benign 4, malignant 2)" in text and "patients    3, breasts 3" in text
    assert "abnormality both 2, calcification 2, mass 2 (images)" in text
    assert json.loads(out.read_text())["images_by_attribute"]["subtype"] == {"Luminal B": 2}
    assert main(["datasets", "check", str(tmp_path / "CMMD"), "--format", "cmmd", "--no-progress"]) == 2
    assert "holds no CMMD clinical table" in capsys.readouterr().err


def test_inbreast_as_published(tmp_path):
    """The XML as INbreast writes it (every ROI key, plural and compound names) with real DICOMs."""
    (tmp_path / "AllXML").mkdir()
    dcm = write_dicom(tmp_path / "AllDICOMs" / "20586908_6c613a14b80a8591_MG_R_CC_ANON.dcm",
                      np.zeros((60, 40), np.uint16))

    def roi(name, points):
        return {"Area": 0.0, "Center": points[0], "Dev": 0.0, "IndexInImage": 0, "Max": 0.0, "Mean": 0.0,
                "Min": 0.0, "Name": name, "NumberOfPoints": len(points), "Point_mm": points, "Point_px": points,
                "Total": 0.0, "Type": 19 if len(points) > 1 else 8}

    data = {"Images": [{"ImageIndex": 0, "NumberOfROIs": 4, "ROIs": [
        roi("Calcification", ["(12.5, 30.25)"]), roi("Cluster", ["(1, 2)", "(20, 4)", "(9, 25)"]),
        roi("Mass", ["(5, 5)", "(30, 40)"]), roi("Calcifications", ["(3, 3)", "(13, 14)"])]}]}
    (tmp_path / "AllXML" / "20586908.xml").write_bytes(plistlib.dumps(data, fmt=plistlib.FMT_XML))
    (tmp_path / "INbreast.csv").write_text("Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;"
                                           "Bi-Rads\nremoved;removed;R;CC;201001;20586908;3;4b\n")
    (s,) = read_inbreast(tmp_path)
    assert (s.source, s.label, s.attrs) == (dcm, "malignant", {"birads": "4b"})
    assert [(les.category, les.assessment, les.box) for les in s.lesions] == [
        ("Calcification", "4b", (8.5, 26.25, 16.5, 34.25)), ("Cluster", "4b", (1.0, 2.0, 20.0, 25.0)),
        ("Calcifications", "4b", (3.0, 3.0, 13.0, 14.0))]


@pytest.mark.usefixtures("one_torch_thread")
def test_train_detector_on_a_vindr_download(tmp_path, capsys):
    build_vindr(tmp_path / "vindr")
    exp = tmp_path / "exp.toml"
    exp.write_text('kind = "detector"\n[data]\nval_fraction = 0.0\n[train]\nepochs = 1\nmax_side = 96\n'
                   '[train.detector]\nmin_size = 96\nmax_size = 96\nrpn_batch_size_per_image = 16\n'
                   'box_batch_size_per_image = 16\ntrainable_backbone_layers = 0\nrpn_pre_nms_top_n_test = 100\n'
                   'rpn_post_nms_top_n_test = 50\n')
    run = tmp_path / "run"
    data = str(tmp_path / "vindr")
    assert main(["train", "detector", "--data", data, "--format", "vindr_mammo", "--split", "training",
                 "--val-data", data, "--out", str(tmp_path / "leak"), "--config", str(exp), "--no-progress"]) == 2
    assert "is the training data" in capsys.readouterr().err
    assert main(["train", "detector", "--data", data, "--format", "vindr_mammo", "--split", "training",
                 "--val-data", data, "--val-split", "test", "--other-findings", "background", "--out", str(run),
                 "--config", str(exp), "--no-progress"]) == 0
    split = json.loads((run / "split.json").read_text())
    assert sorted(split["train"]) == sorted(f"s{p}img{k}" for p in (1, 2) for k in range(4))
    assert sorted(split["val"]) == [f"s3img{k}" for k in range(4)]
    assert 'format = "vindr_mammo"' in (run / "experiment.toml").read_text()
