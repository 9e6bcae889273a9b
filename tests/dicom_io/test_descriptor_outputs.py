"""BI-RADS descriptors in the result objects: coded with the CID 6010 / 6012 concepts in both SRs, valid for
dciodvfy, read back exactly from the TID 1500 SR, and shown in the GSPS captions."""
from __future__ import annotations

import pydicom
import pytest

from dicom_io.cad_sr import build_cad_report
from dicom_io.outputs import write_result_objects
from dicom_io.result_reader import ResultReadError, read_cad_report, read_measurement_report, read_presentation_state
from dicom_io.sr import build_measurement_report
from models.descriptors import DISTRIBUTION_TERMS, TYPE_TERMS
from tests.dicom_io.result_fixtures import (BENIGN_DESCRIPTORS, SUSPICIOUS_DESCRIPTORS, dciodvfy_problems,
                                            dsrdump_text, header_only, make_result, make_source)


@pytest.fixture()
def study():
    sources = [make_source(1, "L", "CC"), make_source(2, "L", "MLO")]
    return make_result(sources, descriptors=True), {s.SOPInstanceUID: header_only(s) for s in sources}


def test_descriptors_round_trip_exactly_through_the_measurement_report(study, tmp_path):
    result, headers = study
    objects = write_result_objects(result, headers, {}, tmp_path)
    (sr,) = [o for o in objects if o.kind == "sr-tid1500"]
    assert dciodvfy_problems(sr.path) == []
    back = read_measurement_report(pydicom.dcmread(sr.path))
    assert back == result
    first, second = back.images[0].lesions
    assert first.descriptors == SUSPICIOUS_DESCRIPTORS and second.descriptors == BENIGN_DESCRIPTORS
    assert first.suspicious and not second.suspicious and second.typically_benign
    text = dsrdump_text(sr.path)
    for expected in ("Calcification Type", "Fine pleomorphic calcification", "Calcification Distribution",
                     "Grouped calcification distribution", "Coarse (popcorn-like) calcification",
                     "Regional calcification distribution"):
        assert expected in text, expected
    captions = [box.caption or "" for o in objects if o.kind == "gsps"
                for box in read_presentation_state(pydicom.dcmread(o.path)).boxes]
    assert any("fine pleomorphic, grouped" in c for c in captions)
    assert any("coarse or popcorn-like, regional (typically benign)" in c for c in captions)


def test_a_code_that_disagrees_with_the_descriptors_is_a_read_error(study):
    result, headers = study
    sr = build_measurement_report(result, headers)
    for item in sr.ContentSequence:
        for group in item.get("ContentSequence", []):
            for child in group.get("ContentSequence", []):
                if child.ConceptNameCodeSequence[0].CodeValue == "111009":
                    child.ConceptCodeSequence[0].CodeValue = TYPE_TERMS["rim"].code[0]
    with pytest.raises(ResultReadError, match="Calcification Type"):
        read_measurement_report(sr)


def test_cad_report_carries_the_cluster_descriptors(study, tmp_path):
    result, headers = study
    path = tmp_path / "cad.dcm"
    build_cad_report(result, headers).save_as(path, enforce_file_format=True)
    assert dciodvfy_problems(path) == []
    assert "Calcification Distribution" in dsrdump_text(path)
    findings = read_cad_report(pydicom.dcmread(path)).findings
    expected = [(TYPE_TERMS[d.calcification_type].code[:2], DISTRIBUTION_TERMS[d.distribution].code[:2])
                for d in (SUSPICIOUS_DESCRIPTORS, BENIGN_DESCRIPTORS)]
    assert [(f.calcification_type, f.calcification_distribution) for f in findings] == expected
    plain = make_result([make_source(1, "L", "CC")])
    path2 = tmp_path / "plain.dcm"
    build_cad_report(plain, {plain.images[0].sop_instance_uid: header_only(make_source(1, "L", "CC"))}).save_as(
        path2, enforce_file_format=True)
    assert all(f.calcification_type is None for f in read_cad_report(pydicom.dcmread(path2)).findings)
