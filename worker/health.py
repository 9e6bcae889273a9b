"""``/healthz`` and ``/metrics`` on a loopback HTTP port, for the load balancer, systemd watchdogs and Prometheus.

``/healthz`` answers 200 with a JSON body when every check passes (SCP listening, broker reachable, ledger
reachable, embedded worker alive) and 503 with the same body otherwise, so an operator sees which part is down.
When every part is up but work waits longer than its deadline (a stuck study, see :func:`worker.supervisor.
stuck_studies`) it answers 200 with ``"status": "degraded"`` and the reasons: the service still receives, so a load
balancer keeps it, while monitoring that reads the body alerts.
``/metrics`` is the Prometheus text format of :class:`worker.metrics.ServiceMetrics`.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

LOG = logging.getLogger("worker.health")

Check = Callable[[], bool]


def tcp_listening(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when something accepts TCP connections on host:port (a wildcard bind is probed on loopback)."""
    target = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    try:
        with socket.create_connection((target, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def run_checks(checks: dict[str, Check]) -> tuple[bool, dict[str, bool]]:
    results: dict[str, bool] = {}
    for name, check in checks.items():
        try:
            results[name] = bool(check())
        except Exception:
            results[name] = False
    return all(results.values()), results


class HealthServer:
    """A small threaded HTTP server; ``port`` 0 picks a free port (read it back from :attr:`port`)."""

    def __init__(self, host: str, port: int, checks: dict[str, Check], registry: CollectorRegistry,
                 degraded: Callable[[], list[str]] | None = None) -> None:
        self.checks = checks
        self.registry = registry
        self.degraded = degraded
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    ok, results = run_checks(owner.checks)
                    reasons: list[str] = []
                    if ok and owner.degraded is not None:
                        try:
                            reasons = owner.degraded()
                        except Exception as exc:
                            reasons = [f"stuck work could not be checked: {type(exc).__name__}"]
                    status = "unavailable" if not ok else ("degraded" if reasons else "ok")
                    body = json.dumps({"status": status, "checks": results, "reasons": reasons}).encode()
                    self._answer(200 if ok else 503, "application/json", body)
                elif path == "/metrics":
                    try:
                        body = generate_latest(owner.registry)
                    except Exception as exc:  # the ledger is down: say so rather than hang up
                        self._answer(500, "text/plain", f"metrics unavailable: {type(exc).__name__}\n".encode())
                        return
                    self._answer(200, CONTENT_TYPE_LATEST, body)
                else:
                    self._answer(404, "text/plain", b"not found: try /healthz or /metrics\n")

            def _answer(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (scrapes are not news)
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="mccad-health", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> "HealthServer":
        self._thread.start()
        LOG.info("health and metrics listening", extra={"event": "http_started", "port": self.port})
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
