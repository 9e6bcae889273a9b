"""UID validation and deterministic derivation (PS3.5 section 9).

Incoming UIDs are validated before they touch a path; output UIDs are derived from the input study and the model
versions so that a retried task replaces its earlier output instead of adding a second copy.
"""
from __future__ import annotations

import hashlib
import re

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_LENIENT_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class InvalidUID(ValueError):
    """A UID that breaks PS3.5 section 9.1 (digits and dots, at most 64 characters)."""


def is_valid_uid(value: object, *, strict: bool = False) -> bool:
    """Real archives carry components with leading zeros; ``strict`` rejects them, the default tolerates them."""
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        return False
    return bool((_UID_RE if strict else _LENIENT_RE).match(value))


def require_uid(value: object, what: str = "UID") -> str:
    if not is_valid_uid(value):
        shown = repr(value)[:80]
        raise InvalidUID(f"{what} {shown} is not a valid DICOM UID (digits and dots, at most 64 characters)")
    return str(value)


def derive_uid(*parts: str) -> str:
    """A UID under the ``2.25`` root (PS3.5 B.2) computed from ``parts``: the same parts always give the same UID."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    number = int.from_bytes(digest[:16], "big") >> 2  # 126 bits, at most 38 decimal digits: fits the 64-char limit
    return f"2.25.{number}"
