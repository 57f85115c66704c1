"""Prometheus metrics, served by each worker at ``/metrics``.

Counters are fed from the audit records and dead letters the processor writes
(one source of truth: what the audit says happened is what the metrics count);
gauges read live values when scraped. Every metric is documented in the
README ("Metrics"), and the dashboard (``deploy/grafana/connector.json``) and
alert rules (``deploy/prometheus/alerts.yml``) use only these names; a test
checks both against a running worker's ``/metrics``.

Consumer lag is read at scrape time from the consumer's public offset APIs
(aiokafka's ``highwater()`` and ``position()``, through Faust's consumer),
never from Faust's private bookkeeping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from connector.domain.audit import DEAD_LETTER_CODES, AuditRecord, DeadLetter, Outcome
from connector.domain.context import CURRENT
from connector.domain.events import EventType
from connector.vendors import registry as vendor_registry

__all__ = ["EVENT_OUTCOMES", "LAG_TIMEOUT_S", "Metrics", "update_lag"]

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Event time to the vendor's answer: sub-second when all is well, hours while parked.
_EVENT_AGE_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600, 86400,
)  # fmt: skip
# A scrape must answer even when the consumer thread is busy (rebalance, recovery).
LAG_TIMEOUT_S = 2.0

# The outcomes a worker counts per event type (connector_events_total); an unreadable
# record has no type ("unknown") and ends invalid, then dead-lettered.
EVENT_OUTCOMES = tuple(
    o.value
    for o in (
        Outcome.DELIVERED,
        Outcome.DUPLICATE,
        Outcome.REJECTED,
        Outcome.DEAD_LETTERED,
        Outcome.PARKED,
        Outcome.ACCEPTED,
    )
)
_UNREADABLE_OUTCOMES = (Outcome.INVALID.value, Outcome.DEAD_LETTERED.value)


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
            "Records in the partition not yet fetched by this worker "
            "(highwater minus the consumer's position).",
            ["topic", "partition"],
            registry=r,
        )
        self.event_latency = Histogram(
            "connector_event_delivery_seconds",
            "From the event's occurred_at to the vendor's answer that delivered it.",
            ["vendor"],
            buckets=_EVENT_AGE_BUCKETS,
            registry=r,
        )
        self.ready = Gauge(
            "connector_ready",
            "1 when the worker's table is recovered and no rebalance is running, else 0.",
            registry=r,
        )
        self.circuit_open = Gauge(
            "connector_circuit_open",
            f"1 for each target ({', or '.join(vendor_registry.target_nouns())}) whose circuit "
            "is open or which an operator paused; targets with a closed circuit are absent.",
            ["target"],
            registry=r,
        )
        self.open_circuits = Gauge(
            "connector_open_circuits",
            "Targets whose circuit is open or paused on this worker.",
            registry=r,
        )
        self.parked_in_flight = Gauge(
            "connector_parked_in_flight_events",
            "Parked records admitted from the parking topic, waiting for their target.",
            registry=r,
        )
        for vendor in vendor_registry.names():
            # Every vendor's series exist from the start: rate() and alerts see a 0, not
            # a gap, before the first event of a vendor.
            self.event_latency.labels(vendor)
            self.latency.labels(vendor)
            self.retries.labels(vendor)
        # Labelled series by (metric, label values): prometheus_client's ``labels()``
        # validates and locks on every call, several times per event.
        self._series: dict[tuple[Any, ...], Any] = {}
        # Every label set known in advance starts at 0 with the worker: increase() and
        # rate() count nothing for a series whose first sample is already 1, so the
        # worker's first dead letter of a code (or first parked event) would fire no
        # alert (ConnectorDeadLetters, ConnectorEventsParked).
        for code in DEAD_LETTER_CODES:
            self._one(self.dead_letters, code)
        for event_type in EventType:
            for outcome in EVENT_OUTCOMES:
                self._one(self.events, event_type.value, outcome)
        for outcome in _UNREADABLE_OUTCOMES:
            self._one(self.events, "unknown", outcome)

    def _one(self, metric: Any, *labels: str) -> Any:
        key = (metric, *labels)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = metric.labels(*labels)
        return series

    def observe_audit(self, record: AuditRecord) -> None:
        if record.outcome is not Outcome.FAILED:
            self._one(self.events, record.event_type or "unknown", record.outcome.value).inc()
        if record.outcome in (Outcome.DELIVERED, Outcome.FAILED) and record.vendor:
            status = str(record.http_status) if record.http_status else "error"
            self._one(self.deliveries, record.vendor, status).inc()
            if record.latency_ms is not None:
                self._one(self.latency, record.vendor).observe(record.latency_ms / 1000)
            if record.outcome is Outcome.FAILED and record.retryable:
                self._one(self.retries, record.vendor).inc()
        if record.terminal:
            ctx = CURRENT.get()  # the job's event (connector.domain.context), None outside a job
            if ctx is not None:
                ctx.outcome = record.outcome.value  # for the delivery span
                if (
                    record.outcome is Outcome.DELIVERED
                    and record.vendor
                    and ctx.occurred_at is not None
                ):
                    age = record.time.timestamp() - ctx.occurred_at
                    # A producer's clock ahead of ours must not record a negative age.
                    self._one(self.event_latency, record.vendor).observe(max(0.0, age))

    def observe_dead_letter(self, record: DeadLetter) -> None:
        self._one(self.dead_letters, record.code).inc()

    def bind_gauges(self, in_flight: Callable[[], int], paused: Callable[[], int]) -> None:
        self.in_flight.set_function(in_flight)
        self.paused.set_function(paused)

    def observe_worker(
        self, *, ready: bool, open_targets: Iterable[str], parked_in_flight: int
    ) -> None:
        """Scrape-time state: readiness, open circuits, parked records admitted."""
        self.ready.set(1 if ready else 0)
        targets = set(open_targets)
        # A closed circuit's series goes away rather than sitting at 0 forever.
        self.circuit_open.clear()
        for target in targets:
            self.circuit_open.labels(target).set(1)
        self.open_circuits.set(len(targets))
        self.parked_in_flight.set(parked_in_flight)

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def update_lag(consumer: Any, metrics: Metrics) -> None:
    """Set ``connector_consumer_lag`` for each assigned partition.

    ``consumer`` is Faust's consumer: ``assignment()``, ``highwater(tp)`` and
    ``position(tp)`` are its public calls into aiokafka's public API. A partition
    whose position is not known yet (just assigned) is skipped; partitions no
    longer assigned lose their series.
    """
    try:
        assignment = sorted(consumer.assignment())
    except Exception:  # not started yet
        return
    lag: dict[tuple[str, str], float] = {}

    async def one(tp: Any) -> None:
        try:
            highwater = consumer.highwater(tp)
            position = await consumer.position(tp)
        except Exception as exc:  # e.g. revoked meanwhile, or no position yet
            logger.debug("no lag for %s: %s", tp, exc)
            return
        if highwater is not None and position is not None:
            lag[(tp.topic, str(tp.partition))] = max(0, highwater - position)

    try:
        await asyncio.wait_for(asyncio.gather(*(one(tp) for tp in assignment)), LAG_TIMEOUT_S)
    except TimeoutError:
        logger.debug("consumer lag not read within %.1f s", LAG_TIMEOUT_S)
    metrics.lag.clear()
    for (topic, partition), value in lag.items():
        metrics.lag.labels(topic, partition).set(value)
