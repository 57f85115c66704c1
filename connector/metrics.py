"""Prometheus metrics, served by each worker at ``/metrics``.

Counters are fed from the audit records and dead letters the processor writes
(one source of truth: what the audit says happened is what the metrics count);
gauges read live values when scraped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from connector.audit import AuditRecord, DeadLetter, Outcome

__all__ = ["Metrics"]

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "connector_events",
            "Decisions and outcomes per event type.",
            ["event_type", "outcome"],
            registry=r,
        )
        self.deliveries = Counter(
            "connector_deliveries",
            "HTTP attempts by vendor and status ('error' = no response).",
            ["vendor", "http_status"],
            registry=r,
        )
        self.retries = Counter(
            "connector_retries", "Failed attempts that will be retried.", ["vendor"], registry=r
        )
        self.dead_letters = Counter(
            "connector_dead_letters",
            "Records written to the dead-letter topic.",
            ["code"],
            registry=r,
        )
        self.latency = Histogram(
            "connector_delivery_latency_seconds",
            "Duration of one HTTP attempt.",
            ["vendor"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "connector_in_flight_events", "Records admitted, not yet done.", registry=r
        )
        self.paused = Gauge(
            "connector_paused_partitions", "Partitions paused by flow control.", registry=r
        )
        self.lag = Gauge(
            "connector_consumer_lag",
            "Highwater minus next offset to read.",
            ["topic", "partition"],
            registry=r,
        )

    def observe_audit(self, record: AuditRecord) -> None:
        if record.outcome is not Outcome.FAILED:
            self.events.labels(record.event_type or "unknown", record.outcome.value).inc()
        if record.outcome in (Outcome.DELIVERED, Outcome.FAILED) and record.vendor:
            status = str(record.http_status) if record.http_status else "error"
            self.deliveries.labels(record.vendor, status).inc()
            if record.latency_ms is not None:
                self.latency.labels(record.vendor).observe(record.latency_ms / 1000)
            if record.outcome is Outcome.FAILED and record.retryable:
                self.retries.labels(record.vendor).inc()

    def observe_dead_letter(self, record: DeadLetter) -> None:
        self.dead_letters.labels(record.code).inc()

    def bind_gauges(self, in_flight: Callable[[], int], paused: Callable[[], int]) -> None:
        self.in_flight.set_function(in_flight)
        self.paused.set_function(paused)

    def render(self) -> bytes:
        return generate_latest(self.registry)
