"""Result objects are DICOM-correct when an exam spans studies (CBIS-DDSM stores each view as its own study): every
object lies in exactly one study and one series of that study, each study gets the exam's reports with every
referenced instance in their evidence, and the SEG carries the Pixel Measures macro viewers place it by."""
from __future__ import annotations

from collections import defaultdict

import pydicom
import pytest

from dicom_io.outputs import write_result_objects
from dicom_io.result_reader import read_measurement_report
from tests.dicom_io.result_fixtures import (STUDY_UID, dciodvfy_problems, header_only, make_heatmap, make_result,
                                            make_source)


def _four_studies():
    sources = []
    for n, (side, view) in enumerate((("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")), start=1):
        ds = make_source(n, side, view)
        ds.StudyInstanceUID = f"{STUDY_UID}.9{n}"
        ds.SeriesInstanceUID = f"{STUDY_UID}.9{n}.1"
        sources.append(ds)
    return sources


@pytest.fixture()
def written(tmp_path):
    sources = _four_studies()
    result = make_result(sources)
    heatmaps = {ds.SOPInstanceUID: make_heatmap() for ds in sources}
    objects = write_result_objects(result, {ds.SOPInstanceUID: header_only(ds) for ds in sources}, heatmaps,
                                   tmp_path)
    return result, sources, [(o, pydicom.dcmread(o.path)) for o in objects]


def test_every_series_lies_in_one_study_and_every_study_gets_the_reports(written):
    result, sources, objects = written
    studies_of_series = defaultdict(set)
    for _, ds in objects:
        studies_of_series[ds.SeriesInstanceUID].add(ds.StudyInstanceUID)
    assert all(len(studies) == 1 for studies in studies_of_series.values())
    for source in sources:
        here = [(o.kind, ds) for o, ds in objects if ds.StudyInstanceUID == source.StudyInstanceUID]
        assert sorted(kind for kind, _ in here) == ["gsps", "seg-heatmap", "sr-mammo-cad", "sr-tid1500"]
        for kind, ds in here:
            if kind in ("gsps", "seg-heatmap"):  # drawn on the image of this study
                assert ds.PatientID == source.PatientID
    assert len({ds.SOPInstanceUID for _, ds in objects}) == len(objects)


def test_each_report_lists_every_referenced_instance_and_reads_back_whole(written):
    result, sources, objects = written
    reports = [ds for o, ds in objects if o.kind == "sr-tid1500"]
    assert len(reports) == 4
    for report in reports:
        current = {sop.ReferencedSOPInstanceUID for study in report.CurrentRequestedProcedureEvidenceSequence
                   for series in study.ReferencedSeriesSequence for sop in series.ReferencedSOPSequence}
        assert {study.StudyInstanceUID for study in report.CurrentRequestedProcedureEvidenceSequence} == {
            report.StudyInstanceUID}
        other = {sop.ReferencedSOPInstanceUID for study in report.PertinentOtherEvidenceSequence
                 for series in study.ReferencedSeriesSequence for sop in series.ReferencedSOPSequence}
        assert current | other == {ds.SOPInstanceUID for ds in sources} and not current & other
        assert read_measurement_report(report) == result


def test_seg_has_pixel_measures_and_everything_is_valid(written):
    _, sources, objects = written
    for o, ds in objects:
        if o.kind == "seg-heatmap":
            measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
            assert [float(v) for v in measures.PixelSpacing] == [0.1, 0.1]
            assert float(measures.SliceThickness) > 0
        assert dciodvfy_problems(o.path) == [], o.kind
