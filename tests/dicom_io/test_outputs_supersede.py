"""Results replace results: a result of another model names the reports it replaces (Predecessor Documents
Sequence) and leaves none of the earlier objects in the result folder; the same result written again replaces its
own objects (same UIDs) and names no predecessor."""
from __future__ import annotations

import pydicom

from dicom_io.outputs import write_result_objects
from models.results import ModelInfo
from tests.dicom_io.result_fixtures import dciodvfy_problems, header_only, make_heatmap, make_result, make_source


def _predecessors(ds) -> set[str]:
    return {sop.ReferencedSOPInstanceUID for study in ds.get("PredecessorDocumentsSequence", [])
            for series in study.ReferencedSeriesSequence for sop in series.ReferencedSOPSequence}


def test_a_new_model_supersedes_the_earlier_reports(tmp_path):
    sources = [make_source(1, "L", "CC"), make_source(2, "L", "MLO")]
    headers = {ds.SOPInstanceUID: header_only(ds) for ds in sources}
    heatmaps = {sources[0].SOPInstanceUID: make_heatmap()}
    old = make_result(sources)
    first = write_result_objects(old, headers, heatmaps, tmp_path)
    again = write_result_objects(old, headers, heatmaps, tmp_path)
    assert [o.sop_instance_uid for o in again] == [o.sop_instance_uid for o in first]
    assert all(not _predecessors(pydicom.dcmread(o.path)) for o in again)

    new = old.model_copy(update={"models": [ModelInfo(role="detector", name="fpnnet", version="1.3.0",
                                                      sha256="ef" * 32)]})
    second = write_result_objects(new, headers, heatmaps, tmp_path)
    assert not {o.sop_instance_uid for o in second} & {o.sop_instance_uid for o in first}
    assert sorted(tmp_path.glob("*.dcm")) == sorted(o.path for o in second)  # nothing of the old result is left
    earlier = {o.kind: o.sop_instance_uid for o in first if o.kind.startswith("sr-")}
    for o in second:
        ds = pydicom.dcmread(o.path)
        if o.kind.startswith("sr-"):
            assert _predecessors(ds) == {earlier[o.kind]}
            assert dciodvfy_problems(o.path) == []
        else:
            assert not _predecessors(ds)
