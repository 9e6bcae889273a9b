"""Structured logs that never carry patient names: one JSON object per line, UIDs shortened by hashing."""
from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
import warnings
from typing import Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def short_uid(uid: str | None) -> str:
    """A stable 12-hex-digit tag for a UID: enough to correlate log lines, useless for re-identification."""
    if not uid:
        return "-"
    return hashlib.sha256(uid.encode("utf-8", "replace")).hexdigest()[:12]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # highdicom's person-name check quotes the name it doubts: never let a patient name reach a log
    warnings.filterwarnings("ignore", message=r".*unlikely to represent the intended person name.*")
    logging.captureWarnings(True)
    for noisy in ("pynetdicom", "pydicom", "highdicom", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
