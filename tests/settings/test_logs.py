"""Where the service's logs go: the file the configuration names, stderr only when asked."""
from __future__ import annotations

import json
import logging

import pytest

from settings.config import Settings
from settings.logs import configure_service_logging


@pytest.fixture
def root_logging():
    """Put the root logger back as pytest had it (configure_logging replaces its handlers)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    for handler in root.handlers:
        handler.close()
    root.handlers[:], root.level = handlers, level


def test_service_logs_go_to_the_file_under_data_dir_that_it_names(tmp_path, capfd, root_logging):
    settings = Settings(data_dir=tmp_path / "data")
    path = configure_service_logging(settings, "serve")
    logging.getLogger("worker.service").info("mccad serve ready", extra={"event": "serve_ready"})
    assert path == tmp_path / "data" / "logs" / "mccad.log"
    said = capfd.readouterr().err
    assert said == f"mccad serve: logging to {path}\n", "the path, and no log line, on stderr"
    line = json.loads(path.read_text().splitlines()[-1])
    assert (line["msg"], line["event"], line["logger"]) == ("mccad serve ready", "serve_ready", "worker.service")


def test_log_file_setting_and_stderr_when_configured(tmp_path, capfd, root_logging):
    settings = Settings(data_dir=tmp_path / "data", log_file=tmp_path / "elsewhere" / "w.log", log_stderr=True,
                        log_format="text")
    path = configure_service_logging(settings, "worker", level="WARNING")
    logging.getLogger("worker.tasks").info("not at this level")
    logging.getLogger("worker.tasks").warning("delivery failed")
    assert path == tmp_path / "elsewhere" / "w.log"
    assert path.read_text().rstrip().endswith("WARNING worker.tasks: delivery failed")
    said = capfd.readouterr().err
    assert said.startswith(f"mccad worker: logging to {path}\n") and "delivery failed" in said
    assert "not at this level" not in said + path.read_text()
