"""The Mammography CAD SR (TID 4000): the right SOP class, valid, rendered by dcmtk, and its findings read back."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest

from dicom_io.cad_sr import MAMMOGRAPHY_CAD_SR_STORAGE, build_cad_report
from dicom_io.result_reader import ResultReadError, read_cad_report
from dicom_io.sr import rectangle_polyline
from models.results import NOT_FOR_CLINICAL_USE
from tests.dicom_io.result_fixtures import dciodvfy_problems, dsrdump_text, header_only, make_result, make_source


@pytest.fixture()
def study():
    sources = [make_source(1, "L", "CC"), make_source(2, "R", "MLO")]
    return make_result(sources), {s.SOPInstanceUID: header_only(s) for s in sources}


def test_cad_report_is_a_valid_mammography_cad_sr(study, tmp_path):
    result, headers = study
    report = build_cad_report(result, headers)
    path = tmp_path / "cad.dcm"
    report.save_as(path, enforce_file_format=True)
    assert report.SOPClassUID == MAMMOGRAPHY_CAD_SR_STORAGE
    assert report.ContentTemplateSequence[0].TemplateIdentifier == "4000"
    assert dciodvfy_problems(path) == []
    text = dsrdump_text(path)  # dsrdump checks the Mammography CAD SR relationship constraints (PS3.3 A.35.5.3)
    for expected in ("Mammography CAD Report", "Image Library", "All algorithms succeeded; with findings",
                     "Calcification Cluster", "Certainty of Finding", "Outline",
                     "Summary of Detections", "Summary of Analyses", "mccad FPNNet", NOT_FOR_CLINICAL_USE):
        assert expected in text, expected
    assert "Individual Calcification" not in text and "Number of calcifications" not in text  # a box is a cluster


def test_cad_findings_read_back(study, tmp_path):
    result, headers = study
    path = tmp_path / "cad.dcm"
    build_cad_report(result, headers).save_as(path, enforce_file_format=True)
    back = read_cad_report(pydicom.dcmread(path))
    image = result.images[0]
    assert back.library_sop_instance_uids == [im.sop_instance_uid for im in result.images]
    assert len(back.findings) == len(image.lesions) == 2
    for finding, lesion in zip(back.findings, image.lesions, strict=True):
        assert finding.source_sop_instance_uid == image.sop_instance_uid
        expected = rectangle_polyline(lesion.box.as_tuple()).astype(np.float32)  # SCOORD data is 32-bit float
        np.testing.assert_array_equal(finding.outline, expected)
        assert finding.certainty_percent == pytest.approx(lesion.score * 100)
        assert finding.probability_of_cancer_percent == pytest.approx(lesion.malignancy_probability * 100)
    assert back.impressions == [NOT_FOR_CLINICAL_USE]


def test_cad_report_without_findings(study, tmp_path):
    result, headers = study
    calm = result.model_copy(update={"images": [im.model_copy(update={"lesions": []}) for im in result.images],
                                     "warnings": []})
    path = tmp_path / "cad.dcm"
    build_cad_report(calm, headers).save_as(path, enforce_file_format=True)
    assert dciodvfy_problems(path) == []
    back = read_cad_report(pydicom.dcmread(path))
    assert back.findings_summary == "All algorithms succeeded; without findings" and back.findings == []
    with pytest.raises(ResultReadError):
        read_cad_report(next(iter(headers.values())))
