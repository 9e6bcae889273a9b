"""/healthz and /metrics over real HTTP, with checks against a real broker, ledger and listening socket."""
from __future__ import annotations

import json
import logging
import socket
import urllib.error
import urllib.request

from tests.peers.ports import free_port
from tests.worker.conftest import make_settings
from worker.app import broker_reachable, make_celery, queue_depths
from worker.health import HealthServer, tcp_listening
from worker.ledger import Ledger
from worker.metrics import ServiceMetrics


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_healthz_is_200_when_everything_answers_and_503_naming_what_does_not(tmp_path):
    settings = make_settings(tmp_path)
    ledger, app = Ledger(settings.effective_ledger_url), make_celery(settings)
    dead_app = make_celery(make_settings(tmp_path, broker_url=f"redis://127.0.0.1:{free_port()}/0"))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    metrics = ServiceMetrics(ledger, lambda: queue_depths(app))
    checks = {"scp": lambda: tcp_listening("127.0.0.1", port), "broker": lambda: broker_reachable(app),
              "ledger": ledger.ping}
    server = HealthServer("127.0.0.1", 0, checks, metrics.registry).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        status, body = _get(base + "/healthz")
        assert status == 200 and json.loads(body) == {"status": "ok", "reasons": [],
                                                      "checks": {"scp": True, "broker": True, "ledger": True}}
        listener.close()
        checks["broker"] = lambda: broker_reachable(dead_app, timeout_s=1)
        status, body = _get(base + "/healthz")
        assert status == 503 and json.loads(body)["checks"] == {"scp": False, "broker": False, "ledger": True}
        assert _get(base + "/nothing")[0] == 404
    finally:
        server.stop()


def test_metrics_expose_instances_refusals_states_durations_and_queue_depth(tmp_path):
    settings = make_settings(tmp_path)
    ledger, app = Ledger(settings.effective_ledger_url), make_celery(settings)
    metrics = ServiceMetrics(ledger, lambda: queue_depths(app))
    scp_log = logging.getLogger("dicom_io.scp")
    handler = metrics.refusal_handler()
    scp_log.addHandler(handler)
    scp_log.setLevel(logging.INFO)  # as under `mccad serve` (an in-thread Celery test worker sets the root to ERROR)
    try:
        scp_log.warning("instance refused", extra={"event": "refused", "status": 0xA900})
        scp_log.warning("association rejected", extra={"event": "association_rejected"})
        scp_log.info("instance stored", extra={"event": "stored"})
    finally:
        scp_log.removeHandler(handler)
        scp_log.setLevel(logging.NOTSET)
    for uid in ("1.7.1", "1.7.2"):
        ledger.record_instance(uid, uid + ".1", "/p", now=1.0)
        metrics.count_received()
        ledger.mark_complete(uid, cutoff=2.0)
    claim = ledger.claim("1.7.1", max_attempts=3, worker="w")
    ledger.finish("1.7.1", claim.started_at - 3.0)  # a 3-second task
    from worker.app import publish_study

    publish_study(app, "1.7.2", queue="batch")
    server = HealthServer("127.0.0.1", 0, {}, metrics.registry).start()
    try:
        status, text = _get(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.stop()
    assert status == 200
    lines = set(text.splitlines())
    for expected in ['mccad_instances_received_total 2.0', 'mccad_instances_rejected_total{kind="instance"} 1.0',
                     'mccad_instances_rejected_total{kind="association"} 1.0', 'mccad_studies{state="done"} 1.0',
                     'mccad_studies{state="complete"} 1.0', 'mccad_task_failures_total 0.0',
                     'mccad_task_duration_seconds_bucket{le="2.5"} 0.0',
                     'mccad_task_duration_seconds_bucket{le="5.0"} 1.0', 'mccad_task_duration_seconds_count 1.0',
                     'mccad_queue_depth{queue="batch"} 1.0', 'mccad_broker_up 1.0']:
        assert expected in lines, expected
    assert "1.7.1" not in text  # no UIDs in metrics
