"""Prometheus metrics of the service: what arrived, what was refused, what waits, how long analyses take.

Counters of the SCP (received, refused) live in the ``mccad serve`` process that receives. Everything about studies
is read from the ledger and the broker at scrape time, so the numbers cover every GPU worker on every host (they all
write the same ledger) without a metrics push from each of them. Labels carry states and queue names only, never
UIDs or patient data.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.ledger import Ledger

#: Seconds; a CPU analysis of a 4-view study takes tens of seconds, a GPU one a few.
DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
#: ``event`` values the SCP logs when it refuses an instance or an association.
REFUSAL_EVENTS = {"refused": "instance", "association_rejected": "association", "store_failed": "spool_write"}


class LedgerCollector(Collector):
    """Study states, failures and task durations from the ledger; queue depths from the broker."""

    def __init__(self, ledger: Ledger, queue_depths: Callable[[], dict[str, int]] | None = None,
                 spool: object | None = None) -> None:
        self.ledger = ledger
        self.queue_depths = queue_depths
        self.spool = spool

    def collect(self) -> Iterator[Metric]:
        if self.spool is not None:
            yield GaugeMetricFamily("mccad_spool_bytes", "Bytes of received instances held in the spool",
                                    value=self.spool.size_bytes())  # type: ignore[attr-defined]
        waiting = self.ledger.delivery_waiting()
        yield GaugeMetricFamily("mccad_deliveries_waiting", "Analysed studies waiting for a destination to answer",
                                value=len(waiting))
        yield GaugeMetricFamily("mccad_delivery_outage_seconds",
                                "Age of the oldest delivery outage still being retried (alert before the horizon)",
                                value=max((time.time() - (r.delivery_since or time.time()) for r in waiting),
                                          default=0.0))
        states = GaugeMetricFamily("mccad_studies", "Studies in the ledger by state", labels=["state"])
        for state, n in self.ledger.counts_by_state().items():
            states.add_metric([state], n)
        yield states
        yield CounterMetricFamily("mccad_task_failures", "Failed analysis attempts (all studies, all workers)",
                                  value=self.ledger.total_failures())
        cumulative, count, total = self.ledger.duration_histogram(DURATION_BUCKETS)
        buckets = [(repr(b), c) for b, c in zip(DURATION_BUCKETS, cumulative, strict=True)] + [("+Inf", count)]
        yield HistogramMetricFamily("mccad_task_duration_seconds", "Wall time of the last successful task per study",
                                    buckets=buckets, sum_value=total)
        if self.queue_depths is not None:
            up = GaugeMetricFamily("mccad_broker_up", "1 when the broker answered the queue-depth query")
            try:
                depths = self.queue_depths()
            except Exception:
                up.add_metric([], 0)
                yield up
                return
            up.add_metric([], 1)
            yield up
            depth = GaugeMetricFamily("mccad_queue_depth", "Task messages waiting per queue", labels=["queue"])
            for name, n in depths.items():
                depth.add_metric([name], n)
            yield depth


class ServiceMetrics:
    """The registry ``/metrics`` serves, with the SCP counters fed by the serve process."""

    def __init__(self, ledger: Ledger, queue_depths: Callable[[], dict[str, int]] | None = None,
                 spool: object | None = None) -> None:
        self.registry = CollectorRegistry()
        self.received = Counter("mccad_instances_received", "Instances stored in the spool and acknowledged",
                                registry=self.registry)
        self.rejected = Counter("mccad_instances_rejected", "Instances or associations the SCP refused",
                                ["kind"], registry=self.registry)
        self.registry.register(LedgerCollector(ledger, queue_depths, spool))

    def count_received(self, _instance: object = None) -> None:
        self.received.inc()

    def refusal_handler(self) -> logging.Handler:
        """A logging handler for the ``dicom_io.scp`` logger that counts its refusal events: the SCP reports
        refusals through its structured log lines (WARNING), so the metric and the log can never disagree. With
        ``log_level`` ERROR or above those lines, and so the counts, are suppressed."""
        return _RefusalCounter(self)


class _RefusalCounter(logging.Handler):
    def __init__(self, metrics: ServiceMetrics) -> None:
        super().__init__(level=logging.DEBUG)
        self.metrics = metrics

    def emit(self, record: logging.LogRecord) -> None:
        kind = REFUSAL_EVENTS.get(getattr(record, "event", ""))
        if kind:
            self.metrics.rejected.labels(kind=kind).inc()
