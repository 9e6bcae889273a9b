"""The Storage SCP (PS3.4 Annex B, Storage Service Class) that a PACS or modality sends mammograms to.

A thin pynetdicom handler: it reads only the header of the instance that pynetdicom already spooled to a temporary
file (``_config.STORE_RECV_CHUNKED_DATASET``; pixels are never decoded here), checks it, moves it into the
:class:`~dicom_io.spool.Spool` durably, and only then hands a :class:`ReceivedInstance` to the caller's callback and
answers 0x0000. Everything else (study assembly, queues) lives in the worker.

Refusals, each with the PS3.4 / PS3.7 Annex C status and one JSON log line without patient data:

- calling AE not on the allow-list: association rejected (A-ASSOCIATE-RJ, "calling AE title not recognised");
- called AE title other than ours: association rejected (A-ASSOCIATE-RJ, "called AE title not recognised");
- more than ``max_associations`` at once: association rejected (transient, "local limit exceeded");
- a SOP class that cannot hold a mammogram: no presentation context (PS3.8 9.3.3.2), and 0x0122 should one arrive;
- Modality other than MG on an image class, or a header that contradicts the request: 0xA900;
- a UID that is not a UID (``../`` and the like): 0xA900, nothing written;
- more than ``max_instance_bytes`` on the wire or ``max_pixels`` per frame: 0xA700 (out of resources); an instance
  still arriving past twice the byte limit: association aborted, partial file removed;
- a data set pydicom cannot parse, or Pixel Data shorter than its header says (a truncated instance): 0xC000, so
  the sender keeps the instance and sends it again instead of believing it delivered.

Instances arriving are written to the spool's ``.incoming`` folder; what a killed process left there is removed when
the SCP starts (it was never acknowledged).
"""
from __future__ import annotations

import functools
import logging
import struct
import tempfile
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom import uid as pdu
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, dimse_messages, evt
from pynetdicom.sop_class import Verification

from dicom_io.errors import (CorruptDataset, DicomInputError, ImageTooLarge, MccadError, NotMammogram,
                             TruncatedFile)
from dicom_io.spool import Spool
from dicom_io.tls import TLSConfigError, server_context
from dicom_io.uids import InvalidUID, require_uid
from settings.logs import short_uid

LOG = logging.getLogger("dicom_io.scp")

#: SOP classes whose IOD is a mammogram (PS3.3 A.26, A.27, A.86): accepted, Modality must be MG.
MAMMOGRAPHY_SOP_CLASSES: dict[str, str] = {
    pdu.DigitalMammographyXRayImageStorageForPresentation: "Digital Mammography X-Ray Image - For Presentation",
    pdu.DigitalMammographyXRayImageStorageForProcessing: "Digital Mammography X-Ray Image - For Processing",
    pdu.BreastTomosynthesisImageStorage: "Breast Tomosynthesis Image",
    pdu.BreastProjectionXRayImageStorageForPresentation: "Breast Projection X-Ray Image - For Presentation",
    pdu.BreastProjectionXRayImageStorageForProcessing: "Breast Projection X-Ray Image - For Processing",
}

#: General image classes that archives use for mammograms too (digitised film such as CBIS-DDSM is Secondary
#: Capture with Modality MG): accepted at negotiation, kept only when the instance says Modality MG.
MG_CAPABLE_SOP_CLASSES: dict[str, str] = {
    pdu.SecondaryCaptureImageStorage: "Secondary Capture Image",
    pdu.MultiFrameGrayscaleByteSecondaryCaptureImageStorage: "Multi-frame Grayscale Byte Secondary Capture Image",
    pdu.MultiFrameGrayscaleWordSecondaryCaptureImageStorage: "Multi-frame Grayscale Word Secondary Capture Image",
    pdu.DigitalXRayImageStorageForPresentation: "Digital X-Ray Image - For Presentation",
    pdu.DigitalXRayImageStorageForProcessing: "Digital X-Ray Image - For Processing",
    pdu.ComputedRadiographyImageStorage: "Computed Radiography Image",
}

#: Our preference when a peer offers several transfer syntaxes in one context: uncompressed first (no decoding
#: needed by either side), then every syntax pydicom can read later.
ACCEPTED_TRANSFER_SYNTAXES: list[str] = [pdu.ExplicitVRLittleEndian, pdu.ImplicitVRLittleEndian] + [
    ts for ts in ALL_TRANSFER_SYNTAXES if ts not in (pdu.ExplicitVRLittleEndian, pdu.ImplicitVRLittleEndian)
]

SUCCESS = 0x0000
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH = 0xA900

_REJECT_REASONS = {
    (0x01, 0x03): "calling AE title not on the allow-list",
    (0x01, 0x07): "called AE title not recognised",
    (0x03, 0x02): "association limit reached",
    (0x03, 0x01): "temporary congestion",
}


class SCPConfigError(MccadError):
    """A Storage SCP configuration that cannot work (for example a TLS key without a certificate)."""


class SOPClassNotSupported(DicomInputError):
    status = SOP_CLASS_NOT_SUPPORTED


class InstanceTooLarge(ImageTooLarge):
    status = OUT_OF_RESOURCES


class InvalidInstanceUID(DicomInputError):
    """A UID in the request or the data set that breaks PS3.5 9.1; the message names which, never its text."""

    status = DOES_NOT_MATCH


def _uid(value: object, what: str) -> str:
    try:
        return require_uid(value, what)
    except InvalidUID:
        raise InvalidInstanceUID(f"{what} is not a valid DICOM UID") from None


@dataclass(frozen=True)
class SCPConfig:
    """How the SCP listens and what it accepts; built by the CLI from :class:`settings.config.Settings`."""

    ae_title: str = "MCCAD"
    host: str = "127.0.0.1"
    port: int = 11112  # 0 picks a free port; read it back from StorageSCP.port
    allowed_calling_aes: tuple[str, ...] = ()  # empty: any calling AE
    accept_non_mg: bool = False
    max_associations: int = 8
    max_instance_bytes: int = 512 * 1024 * 1024
    max_pixels: int = 80_000_000  # per frame
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None  # when set, calling peers must present a certificate signed by it


@dataclass(frozen=True)
class ReceivedInstance:
    """An instance that is durably in the spool; the sender gets its success status right after the callback."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    path: Path
    calling_ae: str
    size_bytes: int


@dataclass(frozen=True)
class _Header:
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    modality: str
    pixels_per_frame: int


def read_header(path: Path) -> Dataset:
    """The data set up to Pixel Data, parsed; anything pydicom cannot parse is a :class:`CorruptDataset`."""
    return read_header_at(path)[0]


def read_header_at(path: Path) -> tuple[Dataset, int]:
    """:func:`read_header`, and the file offset where the Pixel Data element (or the end of the data set) starts."""
    try:
        with open(path, "rb") as handle:
            ds = dcmread(handle, stop_before_pixels=True)
            offset = handle.tell()  # pydicom rewinds to the start of the element it stopped before
        for element in ds.iterall():  # force the deferred parse of every header value now, not later
            _ = element.value
    except Exception as exc:  # pydicom raises many types for malformed input
        raise CorruptDataset(f"the data set cannot be parsed ({type(exc).__name__})") from exc
    return ds, offset


_PIXEL_DATA = 0x7FE00010
_ITEM, _SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE0DD
_LONG_LENGTH_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def expected_pixel_bytes(ds: Dataset) -> int:
    """Bytes of native (uncompressed) Pixel Data the header promises: rows x columns x frames x samples x bits."""
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 16) or 16)
    return (rows * columns * frames * samples * bits + 7) // 8


def check_pixel_data(path: Path, ds: Dataset, offset: int) -> None:
    """Raise :class:`TruncatedFile` unless the Pixel Data at ``offset`` of ``path`` is whole: a native value at
    least as long as :func:`expected_pixel_bytes` and inside the file, or encapsulated fragments that end with their
    sequence delimiter inside the file. Reads a few bytes per fragment, never the pixels themselves.

    An image header (Rows > 0) without Pixel Data is truncated too. Deflated data sets, whose offsets are those of
    the inflated stream, and float pixel data are left to the reader."""
    if str(getattr(ds.file_meta, "TransferSyntaxUID", "")) == pdu.DeflatedExplicitVRLittleEndian:
        return
    size = path.stat().st_size
    image = int(ds.get("Rows", 0) or 0) > 0
    implicit, little = ds.original_encoding
    if implicit is None:  # pydicom 3 sets these from the transfer syntax; a data set it could not tell is refused
        raise CorruptDataset("the data set's encoding cannot be told from its transfer syntax")
    end = "<" if little else ">"
    with open(path, "rb") as handle:
        handle.seek(offset)
        head = handle.read(8)
        if len(head) < 8:
            if image:
                raise TruncatedFile("the data set ends before its Pixel Data")
            return
        group, element = struct.unpack(end + "HH", head[:4])
        if (group << 16 | element) != _PIXEL_DATA:
            return
        length = _pixel_data_length(handle, head, end, implicit)
        start = handle.tell()
        if length != 0xFFFFFFFF:
            expected = expected_pixel_bytes(ds)
            if start + length > size or length < expected:
                held = min(length, size - start)
                raise TruncatedFile(f"Pixel Data is cut short: {held} bytes where the header needs {expected}")
            return
        fragments = _count_items(handle, end, size)
        if image and fragments < 2:  # the basic offset table item, then at least one fragment
            raise TruncatedFile("encapsulated Pixel Data holds no fragment")


def _pixel_data_length(handle: BinaryIO, head: bytes, end: str, implicit: bool) -> int:
    """The value length of the Pixel Data element whose first 8 bytes are ``head``, leaving ``handle`` at its value
    (explicit VRs with a 4-byte length read 4 more bytes); 0xFFFFFFFF for encapsulated pixel data."""
    if implicit:
        return struct.unpack(end + "L", head[4:8])[0]
    if head[4:6] in _LONG_LENGTH_VRS:
        more = handle.read(4)
        if len(more) < 4:
            raise TruncatedFile("the data set ends inside the Pixel Data header")
        return struct.unpack(end + "L", more)[0]
    return struct.unpack(end + "H", head[6:8])[0]


def _count_items(handle: BinaryIO, end: str, size: int) -> int:
    """The items of the encapsulated Pixel Data starting at ``handle``'s position (the basic offset table item
    included), skipped by their lengths up to the sequence delimiter; raises :class:`TruncatedFile` when an item or the
    delimiter is missing or an item runs past ``size``, the file's length."""
    fragments = 0
    while True:
        item = handle.read(8)
        if len(item) < 8:
            raise TruncatedFile(f"encapsulated Pixel Data is cut short after {fragments} items")
        tag_group, tag_element, item_length = struct.unpack(end + "HHL", item)
        tag = tag_group << 16 | tag_element
        if tag == _SEQUENCE_DELIMITER:
            return fragments
        if tag != _ITEM or handle.tell() + item_length > size:
            raise TruncatedFile(f"encapsulated Pixel Data is cut short in item {fragments + 1}")
        handle.seek(item_length, 1)
        fragments += 1


def check_header(ds: Dataset, *, sop_class_uid: str, sop_instance_uid: str, accept_non_mg: bool,
                 max_pixels: int) -> _Header:
    """Apply the acceptance rules to a parsed header; raises the :class:`DicomInputError` whose status to answer.

    ``sop_class_uid`` and ``sop_instance_uid`` are those of the C-STORE request (PS3.7 9.1.1): the data set must
    agree with them.
    """
    absent = [kw for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID") if kw not in ds]
    if absent:  # pydicom parses garbage leniently; an instance without its identity is not one we understand
        raise CorruptDataset(f"the data set has no {', '.join(absent)}: it is not a readable DICOM instance")
    request_sop = _uid(sop_instance_uid, "Affected SOP Instance UID")
    request_class = _uid(sop_class_uid, "Affected SOP Class UID")
    try:
        study = _uid(ds.get("StudyInstanceUID"), "Study Instance UID")
        series = _uid(ds.get("SeriesInstanceUID"), "Series Instance UID")
        sop = _uid(ds.get("SOPInstanceUID"), "SOP Instance UID")
        sop_class = _uid(ds.get("SOPClassUID"), "SOP Class UID")
        modality = str(ds.get("Modality", "") or "").strip().upper()[:16]
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    except InvalidInstanceUID:
        raise
    except Exception as exc:
        raise CorruptDataset(f"the header cannot be read ({type(exc).__name__})") from exc
    if sop != request_sop or sop_class != request_class:
        raise NotMammogram("the data set's SOP Class/Instance UID differ from those of the C-STORE request")
    if not accept_non_mg:
        if sop_class not in MAMMOGRAPHY_SOP_CLASSES and sop_class not in MG_CAPABLE_SOP_CLASSES:
            raise SOPClassNotSupported(f"SOP class {sop_class} cannot hold a mammogram")
        if modality != "MG":
            raise NotMammogram(f"Modality is {modality or 'empty'!r}, not 'MG'")
    if rows * columns > max_pixels:
        raise ImageTooLarge(f"{rows} x {columns} pixels per frame exceed the limit of {max_pixels}")
    return _Header(study, series, sop, sop_class, modality, rows * columns)


def receive_into(folder: Path) -> None:
    """Make pynetdicom write the C-STORE data sets it receives into ``folder`` (it offers no setting: its
    ``NamedTemporaryFile`` is replaced in its module). Process-wide, like ``STORE_RECV_CHUNKED_DATASET``: the SCP
    started last in a process decides."""
    dimse_messages.NamedTemporaryFile = functools.partial(tempfile.NamedTemporaryFile, dir=str(folder),
                                                          prefix="recv-")


class _InFlightGuard:
    """Bounds what one C-STORE may write to the temporary file while it is still arriving.

    pynetdicom spools the whole data set before our handler sees it, so a sender could fill the disk with one
    endless instance. This counts the data-set bytes of each association's current message from the raw P-DATA-TF
    PDUs (PS3.8 9.3.5: 4-byte item length, context ID, message control header whose bit 0 marks a command) and
    aborts the association (A-ABORT) past ``hard_limit_bytes``. The limit is twice the instance limit so that an
    instance merely over the limit still gets its 0xA700 answer from the handler.
    """

    def __init__(self, hard_limit_bytes: int) -> None:
        self.hard_limit_bytes = hard_limit_bytes
        self._received: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._aborted: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()

    def on_data(self, event: evt.Event) -> None:
        data: bytes = event.data
        if not data or data[0] != 0x04:  # only P-DATA-TF PDUs carry messages
            return
        with self._lock:
            if event.assoc in self._aborted:  # PDUs already in flight when we aborted
                return
            count = self._received.get(event.assoc, 0)
            offset = 6
            while offset + 6 <= len(data):
                item_length = int.from_bytes(data[offset:offset + 4], "big")
                if data[offset + 5] & 0x01:  # a command fragment starts a new message
                    count = 0
                else:
                    count += max(item_length - 2, 0)
                offset += 4 + item_length
            self._received[event.assoc] = count
        if count > self.hard_limit_bytes:
            self._abort(event, count)

    def _abort(self, event: evt.Event, count: int) -> None:
        with self._lock:
            self._aborted.add(event.assoc)
        LOG.warning("association aborted: instance still arriving past %d bytes", self.hard_limit_bytes,
                    extra={"event": "oversized_abort", "calling_ae": event.assoc.requestor.ae_title,
                           "status": OUT_OF_RESOURCES, "bytes": count})
        event.assoc.abort(block=False)  # we are on the DUL thread: queue the A-ABORT, do not wait for it
        self.remove_partial(event)

    @staticmethod
    def remove_partial(event: evt.Event) -> None:
        """Delete the temporary file of a message that will never complete (aborted, or the peer went away):
        pynetdicom 3 leaves it behind. Bound to EVT_CONN_CLOSE too; harmless when there is none."""
        message = getattr(getattr(event.assoc, "dimse", None), "message", None)
        partial = getattr(message, "_data_set_path", None)
        if partial is not None:
            Path(partial).unlink(missing_ok=True)


class StorageSCP:
    """A pynetdicom AE serving Storage (MG classes) and Verification, writing to ``spool``.

    ``on_received`` runs on the association's thread (up to ``max_associations`` at once: it must be thread-safe)
    after the instance is durably stored and before the status is sent; if it raises, the error is logged and the
    answer stays success (the worker recovers from the spool).
    """

    def __init__(self, config: SCPConfig, spool: Spool,
                 on_received: Callable[[ReceivedInstance], None] | None = None) -> None:
        if (config.tls_cert is None) != (config.tls_key is None):
            raise SCPConfigError("TLS needs both a certificate (tls_cert) and its private key (tls_key)")
        if config.tls_ca is not None and config.tls_cert is None:
            raise SCPConfigError("tls_ca (client certificate check) needs tls_cert and tls_key as well")
        self.config = config
        self.spool = spool
        self.on_received = on_received
        self._ae: AE | None = None
        self._server: Any = None
        self._guard = _InFlightGuard(hard_limit_bytes=2 * config.max_instance_bytes + 1024 * 1024)
        self._stopped = threading.Event()

    # -- life cycle ----------------------------------------------------------------------------------------------
    def _build_ae(self) -> AE:
        ae = AE(ae_title=self.config.ae_title)
        ae.maximum_associations = self.config.max_associations
        ae.require_calling_aet = [aet.strip() for aet in self.config.allowed_calling_aes]
        ae.require_called_aet = True  # a sender configured for another node must hear so, not get our answers
        ae.maximum_pdu_size = 256 * 1024
        if self.config.accept_non_mg:
            for cx in AllStoragePresentationContexts:
                ae.add_supported_context(cx.abstract_syntax, ACCEPTED_TRANSFER_SYNTAXES)
        else:
            for sop_class in (*MAMMOGRAPHY_SOP_CLASSES, *MG_CAPABLE_SOP_CLASSES):
                ae.add_supported_context(sop_class, ACCEPTED_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)  # PACS test the node with C-ECHO before routing to it
        return ae

    def start(self) -> None:
        """Listen in background threads; returns at once. Sets pynetdicom's process-wide chunked receive."""
        if self._server is not None:
            return
        _config.STORE_RECV_CHUNKED_DATASET = True  # instances go to a temporary file, never into memory whole
        removed = self.spool.remove_partials()
        if removed:
            LOG.warning("removed %d partial files of instances that were arriving when a process stopped", removed,
                        extra={"event": "partials_removed", "files": removed})
        receive_into(self.spool.prepare_incoming())
        ssl_context = None
        if self.config.tls_cert is not None:
            try:
                ssl_context = server_context(self.config.tls_cert, self.config.tls_key, self.config.tls_ca)
            except TLSConfigError as exc:
                raise SCPConfigError(str(exc)) from exc
        self._ae = self._build_ae()
        handlers = [
            (evt.EVT_C_STORE, self._handle_store),
            (evt.EVT_REJECTED, self._log_rejected),
            (evt.EVT_ACCEPTED, self._log_accepted),
            (evt.EVT_DATA_RECV, self._guard.on_data),
            (evt.EVT_CONN_CLOSE, self._guard.remove_partial),
        ]
        try:
            self._server = self._ae.start_server((self.config.host, self.config.port), block=False,
                                                 evt_handlers=handlers, ssl_context=ssl_context)
        except OSError as exc:
            raise SCPConfigError(f"cannot listen on {self.config.host}:{self.config.port}: {exc}") from exc
        self._stopped.clear()
        LOG.info("storage SCP listening", extra={"event": "scp_started", "ae_title": self.config.ae_title,
                                                   "host": self.config.host, "port": self.port,
                                                   "tls": ssl_context is not None})

    def stop(self) -> None:
        """Stop listening and abort open associations (an unacknowledged instance is the sender's to resend)."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._ae is not None:
            self._ae.shutdown()
            self._ae = None
        self._stopped.set()
        LOG.info("storage SCP stopped", extra={"event": "scp_stopped", "ae_title": self.config.ae_title})

    def serve_forever(self) -> None:
        """Start (if needed) and block until :meth:`stop` is called from another thread or Ctrl-C."""
        self.start()
        try:
            while not self._stopped.wait(1.0):
                pass
        except KeyboardInterrupt:
            self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the storage SCP is not started")
        return int(self._server.server_address[1])

    @property
    def open_associations(self) -> int:
        """Associations in progress now (0 when stopped): an association's clean-up, such as removing the temporary
        file of an instance its peer abandoned, is done when it is no longer counted here."""
        if self._server is None:
            return 0
        return len(self._server.active_associations)

    def __enter__(self) -> "StorageSCP":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- event handlers (one per DIMSE/ACSE event, as pynetdicom intends) ----------------------------------------
    def _log_rejected(self, event: evt.Event) -> None:
        rsp = event.assoc.acceptor.primitive
        reason = _REJECT_REASONS.get((rsp.result_source, rsp.diagnostic), "rejected")
        LOG.warning("association rejected: %s", reason,
                    extra={"event": "association_rejected", "calling_ae": event.assoc.requestor.ae_title,
                           "peer": event.assoc.requestor.address, "reason": reason})

    def _log_accepted(self, event: evt.Event) -> None:
        refused = sorted({str(cx.abstract_syntax) for cx in event.assoc.rejected_contexts})
        if refused:
            LOG.warning("presentation contexts refused: SOP classes not accepted here",
                        extra={"event": "contexts_refused", "calling_ae": event.assoc.requestor.ae_title,
                               "sop_classes": ",".join(refused)})

    def _handle_store(self, event: evt.Event) -> int:
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        request = event.request
        claimed_sop = str(request.AffectedSOPInstanceUID or "")
        claimed_class = str(request.AffectedSOPClassUID or "")
        log_ids = {"calling_ae": calling_ae, "sop": short_uid(claimed_sop)}
        try:
            received = Path(event.dataset_path)
            size = received.stat().st_size
            if size > self.config.max_instance_bytes:
                raise InstanceTooLarge(f"{size} bytes exceed the instance limit of {self.config.max_instance_bytes}")
            ds, pixels_at = read_header_at(received)
            header = check_header(ds, sop_class_uid=claimed_class,
                                  sop_instance_uid=claimed_sop, accept_non_mg=self.config.accept_non_mg,
                                  max_pixels=self.config.max_pixels)
            check_pixel_data(received, ds, pixels_at)
            stored = self.spool.store_file(header.study_uid, header.sop_uid, received, move=True)
        except DicomInputError as exc:
            return self._refuse(exc.status, type(exc).__name__, str(exc), log_ids)
        except OSError as exc:
            LOG.error("instance not stored: spool write failed (%s)", exc.strerror or type(exc).__name__,
                      extra={"event": "store_failed", "status": OUT_OF_RESOURCES, **log_ids})
            return OUT_OF_RESOURCES

        instance = ReceivedInstance(study_uid=header.study_uid, series_uid=header.series_uid, sop_uid=header.sop_uid,
                                    sop_class_uid=header.sop_class_uid, path=stored, calling_ae=calling_ae,
                                    size_bytes=size)
        LOG.info("instance stored", extra={"event": "stored", "status": SUCCESS, "study": short_uid(header.study_uid),
                                           "series": short_uid(header.series_uid), "bytes": size, **log_ids})
        if self.on_received is not None:
            try:
                self.on_received(instance)
            except Exception:
                LOG.exception("on_received callback failed; the instance stays in the spool for recovery",
                              extra={"event": "callback_failed", "study": short_uid(header.study_uid), **log_ids})
        return SUCCESS

    @staticmethod
    def _refuse(status: int, kind: str, detail: object, log_ids: dict[str, str]) -> int:
        LOG.warning("instance refused (0x%04X %s)", status, kind,
                    extra={"event": "refused", "status": status, "reason": kind, "detail": str(detail), **log_ids})
        return status
