"""C-STORE SCU (PS3.4 Annex B) and C-ECHO (PS3.4 Annex A): how our results reach the PACS.

One association carries all the objects of a send (associations are reused, not opened per object); presentation
contexts are proposed per SOP class with the file's own transfer syntax, because pynetdicom does not transcode. When the
peer is unreachable, rejects the association or drops it half way, the objects not yet acknowledged are sent again on a
new association after an exponential back-off; after ``retries`` such retries :class:`SendError` says which node
failed. A failure status for one object (the peer refused it) is not retried: it is reported in
:attr:`SendResult.failed` for the caller to record.
"""
from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom import uid as pdu
from pynetdicom import AE, build_context
from pynetdicom.sop_class import Verification

from dicom_io.errors import MccadError
from settings.logs import short_uid

LOG = logging.getLogger("dicom_io.scu")

#: PS3.4 Annex B.2.3 warning statuses: the object is stored (coerced, elements discarded, ...).
WARNING_STATUSES = frozenset({0x0001, 0xB000, 0xB006, 0xB007})
NO_PRESENTATION_CONTEXT = 0x0122  # reported locally when the peer accepted no context for the object's SOP class
UNREADABLE_FILE = 0xC000  # reported locally when the file to send is not DICOM
_UNCOMPRESSED = (pdu.ExplicitVRLittleEndian, pdu.ImplicitVRLittleEndian)
_MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context IDs are odd numbers 1..255


class SendError(MccadError):
    """The destination could not be reached, or kept refusing or dropping associations, after all retries."""

    def __init__(self, message: str, result: "SendResult") -> None:
        super().__init__(message)
        self.result = result


@dataclass
class SendResult:
    ae_title: str
    sent: list[str] = field(default_factory=list)  # SOP Instance UIDs acknowledged with success or warning
    failed: dict[str, int] = field(default_factory=dict)  # SOP Instance UID (file path if unreadable) -> status


@dataclass(frozen=True)
class _Outgoing:
    path: Path
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str


def _describe(path: Path) -> _Outgoing | None:
    try:
        ds = dcmread(path, stop_before_pixels=True)
        return _Outgoing(Path(path), str(ds.SOPInstanceUID), str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
    except Exception:
        return None


def _contexts_for(objects: Sequence[_Outgoing]) -> list:
    """One context per (SOP class, compressed syntax), one per SOP class for the uncompressed syntaxes."""
    wanted: dict[tuple[str, tuple[str, ...]], None] = {}
    for obj in objects:
        syntaxes = _UNCOMPRESSED if obj.transfer_syntax in _UNCOMPRESSED else (obj.transfer_syntax,)
        wanted[(obj.sop_class_uid, syntaxes)] = None
    if len(wanted) > _MAX_CONTEXTS:
        raise MccadError(f"{len(wanted)} SOP class / transfer syntax pairs exceed the {_MAX_CONTEXTS} presentation "
                         "contexts of one association; send the objects in smaller groups")
    return [build_context(sop_class, list(syntaxes)) for sop_class, syntaxes in wanted]


def _make_ae(calling_ae: str, timeout_s: float) -> AE:
    ae = AE(ae_title=calling_ae)
    ae.connection_timeout = timeout_s
    ae.acse_timeout = timeout_s
    ae.dimse_timeout = max(timeout_s, 60.0)
    ae.network_timeout = max(timeout_s, 60.0)
    return ae


def _tls_args(tls_context: ssl.SSLContext | None, host: str) -> tuple[ssl.SSLContext, str] | None:
    return (tls_context, host) if tls_context is not None else None


def send_files(paths: Sequence[Path], *, ae_title: str, host: str, port: int, calling_ae: str = "MCCAD",
               tls_context: ssl.SSLContext | None = None, retries: int = 3, backoff_s: float = 1.0,
               timeout_s: float = 30.0) -> SendResult:
    """Send DICOM files to ``ae_title`` at ``host:port``; retry the unacknowledged ones on association failures.

    Waits ``backoff_s * 2**n`` seconds before retry ``n + 1``. Raises :class:`SendError` (with the partial result)
    when objects remain unsent after ``retries`` retries.
    """
    result = SendResult(ae_title=ae_title)
    pending: list[_Outgoing] = []
    for path in paths:
        described = _describe(Path(path))
        if described is None:
            result.failed[str(path)] = UNREADABLE_FILE
            LOG.error("not sent: the file is not readable DICOM", extra={"event": "send_unreadable", "file": str(path)})
        else:
            pending.append(described)
    if not pending:
        return result

    contexts = _contexts_for(pending)
    where = f"{ae_title} at {host}:{port}"
    last_problem = ""
    for attempt in range(retries + 1):
        if attempt:
            delay = backoff_s * 2 ** (attempt - 1)
            LOG.warning("retrying send to %s in %.1f s (%s)", where, delay, last_problem,
                        extra={"event": "send_retry", "ae_title": ae_title, "attempt": attempt,
                               "remaining": len(pending)})
            time.sleep(delay)
        ae = _make_ae(calling_ae, timeout_s)
        ae.requested_contexts = contexts
        assoc = ae.associate(host, port, ae_title=ae_title, tls_args=_tls_args(tls_context, host))
        if not assoc.is_established:
            last_problem = "association rejected" if assoc.is_rejected else "peer unreachable or aborted"
            ae.shutdown()
            continue
        try:
            pending, last_problem = _send_on(assoc, pending, result)
        finally:
            if assoc.is_established:
                assoc.release()
            ae.shutdown()
        if not pending:
            LOG.info("sent %d objects to %s", len(result.sent), where,
                     extra={"event": "send_done", "ae_title": ae_title, "sent": len(result.sent),
                            "failed": len(result.failed)})
            return result
    raise SendError(f"could not deliver {len(pending)} object(s) to {where} after {retries + 1} attempt(s): "
                    f"{last_problem}; check that the node is running and that it knows our AE title "
                    f"{calling_ae!r}", result)


def _send_on(assoc, pending: list[_Outgoing], result: SendResult) -> tuple[list[_Outgoing], str]:
    """Send ``pending`` on an open association; returns what still needs another association and why."""
    accepted = {(cx.abstract_syntax, ts) for cx in assoc.accepted_contexts for ts in cx.transfer_syntax}
    for index, obj in enumerate(pending):
        syntaxes = _UNCOMPRESSED if obj.transfer_syntax in _UNCOMPRESSED else (obj.transfer_syntax,)
        if not any((obj.sop_class_uid, ts) in accepted for ts in syntaxes):
            result.failed[obj.sop_uid] = NO_PRESENTATION_CONTEXT
            LOG.error("not sent: the peer accepts no presentation context for this SOP class",
                      extra={"event": "send_refused", "sop": short_uid(obj.sop_uid), "sop_class": obj.sop_class_uid,
                             "status": NO_PRESENTATION_CONTEXT})
            continue
        try:
            status = assoc.send_c_store(obj.path)
        except (ValueError, AttributeError, OSError) as exc:  # pynetdicom cannot encode or read this object
            result.failed[obj.sop_uid] = UNREADABLE_FILE
            LOG.error("not sent: the object cannot be encoded (%s)", type(exc).__name__,
                      extra={"event": "send_unreadable", "sop": short_uid(obj.sop_uid), "status": UNREADABLE_FILE})
            continue
        code = getattr(status, "Status", None)
        if code is None:  # no response: the association was aborted or timed out
            return pending[index:], "association dropped during C-STORE"
        code = int(code)
        if code == 0x0000 or code in WARNING_STATUSES:
            result.sent.append(obj.sop_uid)
        else:
            result.failed[obj.sop_uid] = code
            LOG.error("peer refused object with status 0x%04X", code,
                      extra={"event": "send_refused", "sop": short_uid(obj.sop_uid), "status": code})
        if not assoc.is_established:
            return pending[index + 1:], "association closed by the peer"
    return [], ""


def echo(*, ae_title: str, host: str, port: int, calling_ae: str = "MCCAD",
         tls_context: ssl.SSLContext | None = None, timeout_s: float = 10) -> bool:
    """C-ECHO (Verification, PS3.4 Annex A): True when the peer answers success, False when it is unreachable,
    rejects us, or answers anything else."""
    ae = _make_ae(calling_ae, timeout_s)
    ae.add_requested_context(Verification)
    try:
        assoc = ae.associate(host, port, ae_title=ae_title, tls_args=_tls_args(tls_context, host))
        if not assoc.is_established:
            return False
        try:
            status = assoc.send_c_echo()
        finally:
            if assoc.is_established:
                assoc.release()
        return int(getattr(status, "Status", -1)) == 0x0000
    finally:
        ae.shutdown()
