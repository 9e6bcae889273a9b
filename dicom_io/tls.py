"""TLS contexts for DICOM associations (PS3.15 Annex B.1, "The Basic TLS Secure Transport Connection Profile").

The SCP wraps its listening socket with :func:`server_context`; the SCU passes :func:`client_context` to pynetdicom
as ``tls_args``. Certificates and keys are PEM files named in the configuration (``MCCAD_TLS_CERT``, ``_KEY``,
``_CA``), so rotating them is a file swap and a restart.
"""
from __future__ import annotations

import ssl
from pathlib import Path

from dicom_io.errors import MccadError


class TLSConfigError(MccadError):
    """A certificate, key or CA file that cannot be used; the message names the file."""


def _require_file(path: Path | None, what: str) -> Path:
    if path is None:
        raise TLSConfigError(f"TLS needs a {what} file, and none is configured")
    path = Path(path)
    if not path.is_file():
        raise TLSConfigError(f"TLS {what} file {path} does not exist or is not a file")
    return path


def server_context(cert: Path, key: Path, ca: Path | None = None) -> ssl.SSLContext:
    """Context for the SCP. With ``ca`` set, a calling peer must present a certificate signed by that CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    cert_path, key_path = _require_file(cert, "certificate"), _require_file(key, "private key")
    try:
        ctx.load_cert_chain(certfile=str(cert_path), keyfile=str(key_path))
    except (ssl.SSLError, OSError) as exc:
        raise TLSConfigError(f"cannot load certificate {cert_path} with key {key_path}: {exc}") from exc
    if ca is not None:
        ca_path = _require_file(ca, "CA certificate")
        try:
            ctx.load_verify_locations(cafile=str(ca_path))
        except (ssl.SSLError, OSError) as exc:
            raise TLSConfigError(f"cannot load CA certificate {ca_path}: {exc}") from exc
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(ca: Path | None = None, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """Context for the SCU: verifies the peer against ``ca`` (system CAs when None) and its host name; ``cert`` and
    ``key`` are our own certificate for peers that require mutual TLS."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca is not None:
        ca_path = _require_file(ca, "CA certificate")
        try:
            ctx.load_verify_locations(cafile=str(ca_path))
        except (ssl.SSLError, OSError) as exc:
            raise TLSConfigError(f"cannot load CA certificate {ca_path}: {exc}") from exc
    if cert is not None or key is not None:
        cert_path, key_path = _require_file(cert, "certificate"), _require_file(key, "private key")
        try:
            ctx.load_cert_chain(certfile=str(cert_path), keyfile=str(key_path))
        except (ssl.SSLError, OSError) as exc:
            raise TLSConfigError(f"cannot load certificate {cert_path} with key {key_path}: {exc}") from exc
    return ctx
