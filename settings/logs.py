"""Structured logs that never carry patient names: one JSON object per line, UIDs shortened by hashing."""
from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
import warnings
from logging.handlers import WatchedFileHandler
from pathlib import Path
from typing import Any

from settings.config import Settings

#: The line layout of ``log_format = "text"``.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
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


def configure_logging(level: str = "INFO", fmt: str = "json", *, file: Path | None = None,
                      stderr: bool = True) -> None:
    """Send every log record of this process, formatted as ``fmt`` ("json": one object per line; "text"), to
    ``file`` (appended to, its folder made; reopened when log rotation moves it) and, when ``stderr`` is true or no
    file is given, to standard error. Replaces any handler set before."""
    formatter = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    handlers: list[logging.Handler] = []
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(WatchedFileHandler(file, encoding="utf-8"))
    if stderr or file is None:
        handlers.append(logging.StreamHandler(sys.stderr))
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, WatchedFileHandler):  # a log file this function opened before
            old.close()
    for handler in handlers:
        handler.setFormatter(formatter)
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    # highdicom's person-name check quotes the name it doubts: never let a patient name reach a log
    warnings.filterwarnings("ignore", message=r".*unlikely to represent the intended person name.*")
    logging.captureWarnings(True)
    for noisy in ("pynetdicom", "pydicom", "highdicom", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def configure_service_logging(settings: Settings, command: str, level: str | None = None) -> Path:
    """Logging for a long-running command (``mccad serve``, ``mccad worker``): into ``settings.effective_log_file``,
    and to standard error too when ``settings.log_stderr`` is set. Says on standard error where the log goes (one
    line, before anything is logged) and returns that path. ``level`` overrides ``settings.log_level``."""
    path = settings.effective_log_file
    configure_logging(level or settings.log_level, settings.log_format, file=path, stderr=settings.log_stderr)
    print(f"mccad {command}: logging to {path}", file=sys.stderr, flush=True)
    return path
