"""The TID 1500 SR: valid (dciodvfy, dsrdump), deterministic UIDs, and an exact archive of the StudyResult."""
from __future__ import annotations

import pydicom
import pytest

from dicom_io.outputs import write_result_objects
from dicom_io.result_reader import ResultReadError, read_measurement_report
from dicom_io.sr import build_measurement_report
from dicom_io.uids import derive_uid
from models.results import NOT_FOR_CLINICAL_USE, ExamResult, ImageResult, StudyResult
from tests.dicom_io.result_fixtures import (dciodvfy_problems, dsrdump_text, header_only, make_heatmap, make_result,
                                            make_source)


@pytest.fixture()
def study():
    sources = [make_source(1, "L", "CC"), make_source(2, "R", "MLO"), make_source(3, None, "CC")]
    headers = {s.SOPInstanceUID: header_only(s) for s in sources}
    return make_result(sources), headers


def _by_kind(objects, kind):
    return [o for o in objects if o.kind == kind]


def test_measurement_report_round_trips_every_field_exactly(study, tmp_path):
    result, headers = study
    objects = write_result_objects(result, headers, {}, tmp_path)
    (sr,) = _by_kind(objects, "sr-tid1500")
    back = read_measurement_report(pydicom.dcmread(sr.path))
    assert back == result
    assert back.images[0].lesions[0].box.x1 == 60.333333333333336  # not representable in float32: exact anyway


def test_round_trip_of_a_sparse_result(tmp_path):
    """No lesions, no laterality, a view without a standard code, no exam key, no warnings, no timings."""
    source = make_source(1, None, "CC")
    image = ImageResult(sop_instance_uid=source.SOPInstanceUID, sop_class_uid=source.SOPClassUID,
                        series_instance_uid=source.SeriesInstanceUID, study_instance_uid=source.StudyInstanceUID,
                        view="OTHER", rows=int(source.Rows), columns=int(source.Columns), label="benign",
                        malignancy_probability=0.0, probability=1.0)
    result = StudyResult(study_instance_uid=source.StudyInstanceUID, images=[image], breasts=[],
                         exam=ExamResult(label="benign", malignancy_probability=0.0, probability=1.0), models=[])
    sr = build_measurement_report(result, {source.SOPInstanceUID: header_only(source)})
    assert read_measurement_report(sr) == result


def test_measurement_report_is_valid_and_renders(study, tmp_path):
    result, headers = study
    (sr,) = _by_kind(write_result_objects(result, headers, {}, tmp_path), "sr-tid1500")
    assert dciodvfy_problems(sr.path) == []
    text = dsrdump_text(sr.path)
    assert "Calcification Cluster" in text and "Malignant" in text and "Probability of cancer" in text
    assert NOT_FOR_CLINICAL_USE in text
    assert "POLYLINE" in text and "Device" in text and "mccad FPNNet" in text


def test_sr_belongs_to_the_source_study_and_names_the_software(study):
    result, headers = study
    sr = build_measurement_report(result, headers)
    source = next(iter(headers.values()))
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert (sr.PatientID, str(sr.PatientName)) == (source.PatientID, str(source.PatientName))
    assert sr.Manufacturer == "mccad"
    assert sr.SOPInstanceUID == derive_uid(result.study_instance_uid, result.model_version_tag(), "sr-tid1500", "")


def test_writing_twice_gives_identical_uids_and_files(study, tmp_path):
    result, headers = study
    heatmaps = {result.images[0].sop_instance_uid: make_heatmap()}
    first = write_result_objects(result, headers, heatmaps, tmp_path / "a")
    again = write_result_objects(result, headers, heatmaps, tmp_path / "a")
    key = lambda objs: [(o.kind, o.path.name, o.sop_instance_uid, o.sop_class_uid) for o in objs]  # noqa: E731
    assert key(first) == key(again)
    assert len({o.sop_instance_uid for o in first}) == len(first)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(o.path.name for o in first)
    series = {o.kind: pydicom.dcmread(o.path, stop_before_pixels=True).SeriesInstanceUID for o in first}
    assert len(set(series.values())) == 4  # one series per kind


def test_other_models_give_other_uids(study):
    result, headers = study
    changed = result.model_copy(update={"models": [m.model_copy(update={"version": "9.9"}) for m in result.models]})
    before = build_measurement_report(result, headers).SOPInstanceUID
    assert build_measurement_report(changed, headers).SOPInstanceUID != before


def test_reader_refuses_what_is_not_our_report(study):
    result, headers = study
    with pytest.raises(ResultReadError):
        read_measurement_report(next(iter(headers.values())))


def test_reader_reports_a_damaged_report_as_a_read_error(study):
    result, headers = study
    sr = build_measurement_report(result, headers)
    measurements = next(item for item in sr.ContentSequence
                        if item.ConceptNameCodeSequence[0].CodeValue == "126010")
    first_lesion = measurements.ContentSequence[0]
    for item in first_lesion.ContentSequence:
        if item.ValueType == "CODE" and item.ConceptNameCodeSequence[0].CodeValue == "125312":
            item.ConceptCodeSequence[0].CodeValue = "999999"  # a label that is neither benign nor malignant
    with pytest.raises(ResultReadError, match="damaged"):
        read_measurement_report(sr)
