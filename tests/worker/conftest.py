"""Fixtures of the worker tests: settings rooted in a temporary folder, a Redis database of our own, a model bundle."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from settings.config import Settings

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
#: Databases 10-15 of the machine's Redis belong to these tests; each test flushes the one it used.
REDIS_DBS = range(10, 16)


def make_settings(root: Path, **overrides) -> Settings:
    """Settings under ``root``; services started with them log to stderr as well, which the tests capture. The
    detector runs eager: building its ONNX Runtime twin ("auto", the product's default) costs every worker process
    about 12 s of CPU at start, for nothing these tests look at; the end-to-end service test keeps "auto", and
    tests/models/test_onnx_runtime.py tests the runtime itself."""
    values = dict(data_dir=root / "data", port=0, http_port=0, study_idle_s=0.5, retry_backoff_s=0.2,
                  send_retries=1, device="cpu", threads=1, log_format="text", log_stderr=True,
                  detector_runtime="eager")
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database no other test uses right now (a lock key in db 0 claims it), flushed afterwards."""
    redis = pytest.importorskip("redis")
    probe = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=1)
    try:
        probe.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379 (`make services` starts one)")
    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    for db in REDIS_DBS:
        if probe.set(f"mccad-test-lock:{db}", token, nx=True, ex=900):
            break
    else:
        pytest.skip("all Redis test databases are busy")
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    client.flushdb()
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    finally:
        client.flushdb()
        if probe.get(f"mccad-test-lock:{db}") == token.encode():
            probe.delete(f"mccad-test-lock:{db}")
