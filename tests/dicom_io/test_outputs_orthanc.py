"""A real PACS (Orthanc, Debian package) accepts every output object over C-STORE and gives it back unchanged;
a retry with the same result replaces the objects instead of adding copies."""
from __future__ import annotations

import io

import pydicom
import pytest
from pynetdicom import AE

from dicom_io.outputs import write_result_objects
from tests.dicom_io.result_fixtures import header_only, make_heatmap, make_result, make_source
from tests.peers.orthanc import ORTHANC_BIN, OrthancPeer

pytestmark = pytest.mark.skipif(not __import__("os").path.exists(ORTHANC_BIN), reason="Orthanc is not installed")


def _send(objects, port: int) -> list[int]:
    """C-STORE every object over one association, each in its own SOP class and transfer syntax."""
    ae = AE(ae_title="MCCAD")
    datasets = [pydicom.dcmread(o.path) for o in objects]
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, [str(ds.file_meta.TransferSyntaxUID)])
    assoc = ae.associate("127.0.0.1", port, ae_title="ORTHANC")
    assert assoc.is_established, "Orthanc refused the association"
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def _without_file_meta(raw: bytes) -> pydicom.Dataset:
    ds = pydicom.dcmread(io.BytesIO(raw))
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    return ds


def test_orthanc_stores_every_object_unchanged(tmp_path):
    # The third image has an odd pixel count, so its SEG's 1-bit frames share bytes (PS3.5 8.1.1: frames are packed
    # one after the other); the second has no heatmap, hence no SEG.
    sources = [make_source(1, "L", "CC"), make_source(2, "R", "MLO"),
               make_source(3, "R", "CC", rows=641, columns=479, with_pixels=False)]
    result = make_result(sources)
    heads = {s.SOPInstanceUID: header_only(s) for s in sources}
    heatmaps = {sources[0].SOPInstanceUID: make_heatmap(), sources[2].SOPInstanceUID: make_heatmap(641, 479)}
    objects = write_result_objects(result, heads, heatmaps, tmp_path / "out")
    assert sorted(o.kind for o in objects) == ["gsps"] * 3 + ["seg-heatmap"] * 2 + ["sr-mammo-cad", "sr-tid1500"]
    segs = [pydicom.dcmread(o.path, stop_before_pixels=True) for o in objects if o.kind == "seg-heatmap"]
    assert {(ds.SegmentationType, ds.BitsAllocated) for ds in segs} == {("BINARY", 1)}
    peer = OrthancPeer(tmp_path / "orthanc").start()
    try:
        assert _send(objects, peer.dicom_port) == [0x0000] * len(objects)
        stored = {i["MainDicomTags"]["SOPInstanceUID"]: i["ID"] for i in peer.instances()}
        assert set(stored) == {o.sop_instance_uid for o in objects}
        for obj in objects:
            back = _without_file_meta(peer.instance_file(stored[obj.sop_instance_uid]))
            sent = _without_file_meta(obj.path.read_bytes())
            assert back == sent, f"Orthanc changed the {obj.kind} object"
        # A retry (same result, same models) writes the same UIDs: the PACS replaces, it does not duplicate.
        again = write_result_objects(result, heads, heatmaps, tmp_path / "retry")
        assert _send(again, peer.dicom_port) == [0x0000] * len(again)
        assert len(peer.instances()) == len(objects)
        studies = peer.rest("GET", "/studies?expand")
        assert [s["MainDicomTags"]["StudyInstanceUID"] for s in studies] == [result.study_instance_uid]
        assert len(studies[0]["Series"]) == 4  # one series per kind
    finally:
        peer.stop()
