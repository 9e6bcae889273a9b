"""A Redis server of the test's own on a loopback port, with the append-only persistence the runbook prescribes
(deploy/README.md), so that a test may stop and restart it without touching the machine's Redis on 6379."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Literal

from tests.peers.ports import wait_for_port


def start_redis(port: int, folder: Path, log: Path | None = None,
                fsync: Literal["always", "everysec"] = "always") -> subprocess.Popen:
    """Start ``redis-server`` on 127.0.0.1:``port`` keeping its append-only file in ``folder`` (created), logging to
    ``log`` (default ``folder/redis.log``, appended), and return once it accepts connections. ``fsync`` is the
    append-only fsync policy: "always" loses nothing on a stop, "everysec" is what production runs."""
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                             "--appendonly", "yes", "--appendfsync", fsync, "--save", ""],
                            stdout=(log or folder / "redis.log").open("ab"), stderr=subprocess.STDOUT)
    wait_for_port(port, 20)
    return proc
