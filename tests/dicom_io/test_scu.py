"""The C-STORE SCU against real peers: dcmtk storescp, Orthanc, our own SCP over TLS; retries when a peer is down."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE, StoragePresentationContexts, evt

from dicom_io.scp import SCPConfig, StorageSCP
from dicom_io.scu import SendError, echo, send_files
from dicom_io.spool import Spool
from dicom_io.tls import TLSConfigError, client_context, server_context
from tests.dicom_io import net_fixtures as nf
from tests.peers.orthanc import OrthancPeer
from tests.peers.ports import free_port

STUDY = "1.2.826.0.1.3680043.10.511.2"


def _sop(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@pytest.fixture
def outputs(tmp_path: Path) -> list[Path]:
    files = [nf.write_mg(tmp_path / f"out/{i}.dcm", study_uid=STUDY, seed=i) for i in range(3)]
    files.append(nf.write_secondary_capture_mg(tmp_path / "out/sc.dcm", study_uid=STUDY))
    return files


def test_send_to_dcmtk_storescp_on_one_association(tmp_path: Path, outputs: list[Path]) -> None:
    peer = nf.StoreSCPPeer(tmp_path / "storescp").start()
    try:
        assert echo(ae_title=peer.ae_title, host="127.0.0.1", port=peer.port)
        result = send_files(outputs, ae_title=peer.ae_title, host="127.0.0.1", port=peer.port)
    finally:
        peer.stop()
    assert result.ae_title == "STORESCP" and not result.failed
    assert sorted(result.sent) == sorted(_sop(p) for p in outputs)
    received = {_sop(p): p for p in peer.received()}
    assert set(received) == set(result.sent)
    for src in outputs:
        assert nf.dataset_bytes(received[_sop(src)]) == nf.dataset_bytes(src)
    log = (tmp_path / f"storescp-{peer.port}.log").read_text()
    assert log.count("Association Acknowledged") == 2  # the C-ECHO, then one association for all four objects
    assert log.count("Received Store Request") == 4


def test_send_to_orthanc(tmp_path: Path, outputs: list[Path]) -> None:
    orthanc = OrthancPeer(tmp_path / "orthanc").start()
    try:
        assert echo(ae_title=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port)
        result = send_files(outputs, ae_title=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port)
        again = send_files(outputs[:1], ae_title=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port)
        stored = orthanc.instances()
    finally:
        orthanc.stop()
    assert sorted(result.sent) == sorted(_sop(p) for p in outputs) and not result.failed
    assert again.sent == [_sop(outputs[0])]  # a resend replaces, it does not add
    assert sorted(i["MainDicomTags"]["SOPInstanceUID"] for i in stored) == sorted(result.sent)


def test_peer_down_retries_then_send_error_naming_the_node(outputs: list[Path]) -> None:
    port = free_port()  # nothing listens here
    assert not echo(ae_title="PACS", host="127.0.0.1", port=port, timeout_s=2)
    started = time.monotonic()
    with pytest.raises(SendError) as caught:
        send_files(outputs, ae_title="PACS", host="127.0.0.1", port=port, retries=2, backoff_s=0.1, timeout_s=2)
    elapsed = time.monotonic() - started
    assert elapsed >= 0.1 + 0.2  # two back-offs: 0.1 s then 0.2 s
    message = str(caught.value)
    assert "PACS" in message and f"127.0.0.1:{port}" in message and "3 attempt" in message
    assert caught.value.result.sent == [] and caught.value.result.failed == {}


def test_retry_succeeds_when_the_peer_comes_back(tmp_path: Path, outputs: list[Path]) -> None:
    peer = nf.StoreSCPPeer(tmp_path / "late", port=free_port())
    starter = threading.Timer(0.6, peer.start)
    starter.start()
    try:
        result = send_files(outputs, ae_title=peer.ae_title, host="127.0.0.1", port=peer.port, retries=5,
                            backoff_s=0.3, timeout_s=2)
    finally:
        starter.join()
        peer.stop()
    assert sorted(result.sent) == sorted(_sop(p) for p in outputs)
    assert len(peer.received()) == len(outputs)


def test_association_dropped_mid_send_resends_the_rest_on_a_new_one(tmp_path: Path, outputs: list[Path]) -> None:
    """A real pynetdicom peer that aborts the association on its second C-STORE, once, then behaves."""
    stores: list[str] = []

    def flaky_store(event: evt.Event) -> int:
        stores.append(str(event.request.AffectedSOPInstanceUID))
        if len(stores) == 2:
            event.assoc.abort()
        return 0x0000

    peer = AE(ae_title="FLAKY")
    peer.supported_contexts = StoragePresentationContexts
    server = peer.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, flaky_store)])
    try:
        result = send_files(outputs, ae_title="FLAKY", host="127.0.0.1", port=server.server_address[1],
                            retries=2, backoff_s=0.05)
    finally:
        peer.shutdown()
    sops = [_sop(p) for p in outputs]
    assert result.sent == sops and not result.failed
    assert stores == [sops[0], sops[1], sops[1], sops[2], sops[3]]  # the unacknowledged one is sent again


def test_unreadable_file_is_reported_not_sent(tmp_path: Path, outputs: list[Path]) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    peer = nf.StoreSCPPeer(tmp_path / "storescp").start()
    try:
        result = send_files([junk, outputs[0]], ae_title=peer.ae_title, host="127.0.0.1", port=peer.port)
    finally:
        peer.stop()
    assert result.sent == [_sop(outputs[0])] and result.failed == {str(junk): 0xC000}


def test_tls_round_trip_with_client_certificates(tmp_path: Path, outputs: list[Path]) -> None:
    pki = nf.make_test_pki(tmp_path / "pki")
    spool = Spool(tmp_path / "spool")
    config = SCPConfig(port=0, tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=pki.ca_cert)
    with StorageSCP(config, spool) as scp:
        trusted = client_context(ca=pki.ca_cert, cert=pki.client_cert, key=pki.client_key)
        assert echo(ae_title="MCCAD", host="127.0.0.1", port=scp.port, tls_context=trusted)
        result = send_files(outputs, ae_title="MCCAD", host="127.0.0.1", port=scp.port, tls_context=trusted)
        assert sorted(result.sent) == sorted(_sop(p) for p in outputs)
        # without our client certificate, or without TLS at all, the SCP does not talk to us
        anonymous = client_context(ca=pki.ca_cert)
        assert not echo(ae_title="MCCAD", host="127.0.0.1", port=scp.port, tls_context=anonymous, timeout_s=3)
        assert not echo(ae_title="MCCAD", host="127.0.0.1", port=scp.port, timeout_s=3)
        # a client that does not trust the SCP's CA refuses the SCP
        with pytest.raises(SendError):
            send_files(outputs[:1], ae_title="MCCAD", host="127.0.0.1", port=scp.port,
                       tls_context=client_context(ca=None, cert=pki.client_cert, key=pki.client_key),
                       retries=0, timeout_s=3)
    assert len(spool.instances(STUDY)) == len(outputs)
    for src in outputs:
        assert nf.dataset_bytes(spool.path_for(STUDY, _sop(src))) == nf.dataset_bytes(src)


def test_tls_configuration_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(TLSConfigError, match="missing.pem"):
        server_context(tmp_path / "missing.pem", tmp_path / "missing.key")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(TLSConfigError, match="bad.pem"):
        client_context(ca=bad)
