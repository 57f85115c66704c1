"""The worker: topics, the order-state table, the runtime, the web pages.

The Faust and Kafka specifics live in :mod:`connector.kafka`; this module wires them.

Decisions recorded here:

* The events topic is read with raw serializers: parsing is ours
  (:func:`connector.domain.events.parse_record`), so bad bytes become a dead letter
  instead of a crash inside Faust's deserializer.
* The events and parking topics are subscribed for assignment only
  (:func:`~connector.kafka.faust_app.subscribe_for_assignment`), so that Faust
  assigns them with the table; their records skip Faust's stream: the intake
  (:mod:`connector.kafka.intake`) hands them from each fetch to the processor,
  :class:`~connector.pipeline.delivery.OrderedDispatcher` finishes each record strictly in
  offset order per partition, and :class:`~connector.kafka.commits.Commits`
  commits its position.
* The table is co-partitioned with its input *by construction*: it does not
  use the partitioner (``use_partitioner=False``), so Faust writes each order's
  changelog record to the partition of the event being processed, whatever
  partitioner the producer used (Java clients hash keys with murmur2,
  librdkafka clients with CRC32, and some pick partitions themselves): the
  processor names the input record's partition on every state read and write
  (:class:`~connector.kafka.faust_app.TableStore`).
* Fencing: a rebalance revokes every partition at once (eager protocol). The
  dispatcher fences them synchronously when the rebalance starts
  (:class:`~connector.kafka.faust_app.ConnectorFaust`); Faust's "wait until the streams are
  empty" step is replaced by ending the fenced jobs:
  waiting ones are cancelled unacknowledged, requests on the wire are awaited
  up to the HTTP timeout. The group's rebalance timeout is set above that bound.
* At-least-once with idempotence (never ``exactly_once``: it cannot cover HTTP
  side effects).
* Faust's ``/table`` and ``/router`` web pages (and the debug pages) are off.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import httpx

from connector.infra.kafka_clients import changelog_reader, ssl_context
from connector.infra.metrics import Metrics, update_lag
from connector.infra.topics import changelog_configs
from connector.kafka.commits import Commits
from connector.kafka.compat import verify_libraries
from connector.kafka.driver import ConnectorConsumer
from connector.kafka.faust_app import (
    ConnectorFaust,
    KafkaSinks,
    TableStore,
    broker_url,
    started_producer,
    subscribe_for_assignment,
)
from connector.kafka.guard import OffsetGuard
from connector.kafka.http import build_http_client
from connector.kafka.intake import Intake, Route
from connector.kafka.recovery import ConnectorTableManager
from connector.ops.control import follow_control
from connector.pipeline import Processor
from connector.pipeline.delivery import OrderedDispatcher
from connector.pipeline.rate_share import RateShare, take_share
from connector.pipeline.ratelimit import RateLimiter
from connector.settings import Settings
from connector.vendors import build_clients
from connector.vendors.base import VendorClient

__all__ = ["ConnectorApp", "create_app"]

logger = logging.getLogger(__name__)

OVERDUE_AFTER_S = 60.0  # a record handled longer than this is named in the log


def _credentials(settings: Settings) -> Any:
    kafka = settings.kafka
    context = ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value(),
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


@dataclass
class ConnectorApp:
    """The Faust app plus the worker-local runtime built on first use."""

    settings: Settings
    app: faust.App
    events: faust.TopicT
    audit: faust.TopicT
    dead_letter: faust.TopicT
    parking: faust.TopicT
    table: Any
    metrics: Metrics = field(default_factory=Metrics)
    http: httpx.AsyncClient | None = None
    processor: Processor | None = None
    dispatcher: OrderedDispatcher | None = None
    offsets: OffsetGuard | None = None
    commits: Commits | None = None
    store: TableStore | None = None
    _reported: set[tuple[str, Any, int]] = field(default_factory=set)  # report_overdue's
    rate_share: RateShare = field(default_factory=RateShare)  # connector.pipeline.rate_share

    def runtime(self) -> Processor:
        if self.processor is None:
            settings = self.settings
            self.store = TableStore(self.table, self._kafka_producer)
            self.http = build_http_client(settings.delivery)
            clients: dict[str, VendorClient] = build_clients(self.http, settings)
            self.dispatcher = OrderedDispatcher(
                settings.delivery.max_pending, settings.delivery.max_in_flight_bytes
            )
            self.processor = Processor(
                settings,
                self.store,
                clients,
                KafkaSinks(self._kafka_producer, settings.topics, self.metrics),
                self.dispatcher,
                limiter=RateLimiter.from_settings(settings, self.rate_share),
            )
            dispatcher = self.dispatcher
            consumer = self.app.consumer
            assert isinstance(consumer, ConnectorConsumer), type(consumer)
            topics = self.settings.topics
            # What is committed is each dispatcher's position: one past the last record
            # done in offset order.
            self.commits = Commits(
                consumer,
                {
                    topics.events: dispatcher.position,
                    topics.parking: self.processor.parking_dispatcher.position,
                },
            )
            self.offsets = OffsetGuard(consumer, {topics.events, topics.parking})
            processor = self.processor

            routes = {
                topics.events: Route(processor.handle_record, dispatcher.has_room),
                topics.parking: Route(
                    processor.handle_parked_record, processor.parking_dispatcher.has_room
                ),
            }
            consumer.attach(self.offsets, Intake(consumer, self.offsets, routes), self.commits)
            self.metrics.bind_gauges(
                in_flight=lambda: dispatcher.pending,
                paused=lambda: len(consumer.paused_partitions()),
            )
        return self.processor

    def _kafka_producer(self) -> Any:
        """The app's started aiokafka producer (Faust raises NotReady before that)."""
        return started_producer(self.app)

    def guard(self) -> OffsetGuard:
        """The consumer's offset guard (built with the runtime)."""
        self.runtime()
        assert self.offsets is not None
        return self.offsets

    def _dispatchers(self) -> list[OrderedDispatcher]:
        if self.processor is None or self.dispatcher is None:
            return []
        return [self.dispatcher, self.processor.parking_dispatcher]

    def fence_generation(self, generation: int) -> None:
        """Fence every lease of ``generation`` and older; safe from another thread."""
        for dispatcher in self._dispatchers():
            dispatcher.fence_generation(generation)

    async def fence_and_drain(self) -> None:
        """Revoke every lease, then end the fenced jobs; calls on the wire are awaited."""
        for dispatcher in self._dispatchers():
            dispatcher.revoke()
        # The call bound, plus a margin to record the result of a call that ends late.
        bound = self.settings.delivery.call_timeout_s + 5.0
        await asyncio.gather(*(d.drain_revoked(bound) for d in self._dispatchers()))
        # The table is recovered from the changelog for the next assignment.
        if self.store is not None:
            self.store.forget()

    def report_overdue(self) -> None:
        """Log partitions whose oldest unacknowledged record has waited too long, once each.

        Long waits are legitimate (retries up to their deadline, a rate limit, the
        ``stop`` outage policy), but they hold the partition's committed offset; a
        job that ended without an outcome holds it until the partition is read again.
        Either way the log names the record.
        """
        if self.processor is None:
            return
        for name, dispatcher in (
            ("events", self.dispatcher),
            ("parking", self.processor.parking_dispatcher),
        ):
            if dispatcher is None:
                continue
            for late in dispatcher.overdue(OVERDUE_AFTER_S):
                spot = (name, late.partition, late.offset)
                if spot in self._reported:
                    continue
                self._reported.add(spot)
                if late.ended:
                    logger.error(
                        "%s[%s]: offset %s ended without an outcome %.0f s ago; nothing past "
                        "it is committed until the partition is read again",
                        name,
                        late.partition,
                        late.offset,
                        late.age_s,
                    )
                else:
                    logger.warning(
                        "%s[%s]: offset %s is still being handled after %.0f s; nothing past "
                        "it is committed meanwhile",
                        name,
                        late.partition,
                        late.offset,
                        late.age_s,
                    )
        if len(self._reported) > 10_000:
            self._reported.clear()

    async def close(self) -> None:
        # Shutdown is a revoke of everything: jobs not on the wire end now,
        # unacknowledged; the partitions' next owner replays them.
        await self.fence_and_drain()
        if self.http is not None:
            await self.http.aclose()


def create_app(settings: Settings) -> ConnectorApp:
    # The libraries the adapter was verified against, and the internals it uses.
    verify_libraries()
    t = settings.topics
    data_dir = (Path(settings.data_dir) / settings.worker_id).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    app = ConnectorFaust(
        settings.app_id,
        # The connector's transport driver (connector.kafka.driver), by its URL scheme.
        broker=broker_url(settings.kafka.bootstrap_servers),
        # faust-streaming's table recovery can end for good after a timed-out step, or
        # sit on a round that stopped receiving records: see connector.kafka.recovery.
        TableManager=ConnectorTableManager,
        broker_credentials=_credentials(settings),
        broker_session_timeout=settings.kafka.session_timeout_s,
        broker_heartbeat_interval=settings.kafka.heartbeat_interval_s,
        # Static membership: a worker restarted under its id keeps its partitions.
        consumer_group_instance_id=settings.group_instance_id,
        # A revoke takes at most the HTTP call bound (requests on the wire are awaited,
        # everything else is cancelled); the group must wait longer than that before it
        # evicts a member that is still revoking.
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        # Kept as the bound on one fetch loop turn (the intake never waits for room: a
        # full dispatcher pauses its partitions instead).
        broker_max_poll_interval=settings.max_poll_interval_s,
        store=settings.store,
        datadir=str(data_dir),
        autodiscover=False,
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.advertised_host,  # the URL other workers redirect to
        web_router_enabled=False,
        web_tables_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        topic_partitions=t.partitions,
        topic_replication_factor=t.replication_factor,
        table_standby_replicas=settings.standby_replicas,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=settings.kafka.producer_linger_ms / 1000.0,
        producer_max_request_size=settings.kafka.max_message_bytes * 3,
        producer_max_batch_size=settings.kafka.producer_batch_bytes,
        consumer_max_fetch_size=settings.kafka.max_message_bytes * 3,
        # At most this many records per fetch reach the intake: a partition held for room
        # keeps at most one such batch in memory (state run, 200k orders backlogged: 207
        # MB peak RSS against 291 MB with aiokafka's whole buffered fetch, BENCHMARKS.md).
        broker_max_poll_records=500,
        stream_wait_empty=False,  # replaced by fencing, see ConnectorFaust
        key_serializer="raw",
        value_serializer="raw",
        logging_config=None,
        # Faust would otherwise read unprefixed variables (WEB_PORT, BROKER_URL,
        # PROCESSING_GUARANTEE, ...) that override these arguments; configuration
        # comes from connector.settings only.
        env={},
    )
    events = app.topic(t.events, key_type=bytes, value_type=bytes, partitions=t.partitions)
    audit = app.topic(t.audit, key_type=bytes, value_type=bytes, partitions=t.partitions)
    dead_letter = app.topic(
        t.dead_letter, key_type=bytes, value_type=bytes, partitions=t.partitions
    )
    # Same partition count as the events topic: Faust assigns co-partitioned topics
    # together, so partition p of both (and of the changelog) live on one worker.
    parking = app.topic(t.parking, key_type=bytes, value_type=bytes, partitions=t.partitions)
    table = app.tables.add(
        faust.Table(
            app,
            name="orders",
            key_type=bytes,
            value_type=bytes,
            default=None,
            beacon=app.tables.beacon,
            partitions=t.partitions,
            use_partitioner=False,  # co-partitioned with the events, see the module doc
            help="Per-order lifecycle state (what the vendor has or may have).",
            options=_store_options(settings),
            # Compacted close to one record per order: what a taking-over worker reads.
            extra_topic_configs=changelog_configs(),
        )
    )
    connector = ConnectorApp(settings, app, events, audit, dead_letter, parking, table)
    app.connector = connector
    share_rates(connector)  # each worker's share of the rate limits, per assignment
    app.managed_topics = {t.events, t.parking}
    if settings.bulk_recovery:
        app.changelog_reader = functools.partial(changelog_reader, settings)
    app.isolation_level = settings.kafka.isolation_level

    # Assigned with the table; their records go from each fetch to the intake.
    subscribe_for_assignment(app, events, "deliver", connector.runtime)
    subscribe_for_assignment(app, parking, "parked", connector.runtime)

    @app.timer(5.0)
    async def retry_stale_rewinds() -> None:
        # A partition read again over a hole whose re-read never came (connector.kafka.guard).
        consumer = app.consumer
        if connector.offsets is not None and isinstance(consumer, ConnectorConsumer):
            held = consumer.intake.held if consumer.intake is not None else set()
            await connector.offsets.retry_stale_rewinds(held)
        connector.report_overdue()

    @app.task
    async def follow_operator_control() -> None:
        # Every worker reads the whole control topic: pause/resume applies everywhere.
        breakers = connector.runtime().breakers
        await follow_control(
            settings, lambda control: breakers.set_paused(control.target, control.paused)
        )

    not_ready_since: list[float | None] = [time.monotonic()]

    def readiness() -> tuple[bool, bool]:
        # Ready once the table is recovered from its changelog and no rebalance is running.
        recovered = app.tables.recovery.completed.is_set() and not app.in_recovery  # type: ignore[attr-defined]
        is_ready = recovered and not app.rebalancing
        if is_ready:
            not_ready_since[0] = None
        elif not_ready_since[0] is None:
            not_ready_since[0] = time.monotonic()
        return recovered, is_ready

    @app.page("/health/live")
    async def live(web: Any, request: Any) -> Any:
        # Faust's table recovery can stall after a rebalance (upstream issue); a worker
        # not ready for longer than the stall limit reports itself dead so that its
        # supervisor restarts it, which restarts recovery.
        readiness()
        since = not_ready_since[0]
        stalled = since is not None and time.monotonic() - since > settings.recovery_stall_s
        body = {"status": "stalled" if stalled else "alive", "worker_id": settings.worker_id}
        return web.json(body, status=503 if stalled else 200)

    @app.page("/health/ready")
    async def ready(web: Any, request: Any) -> Any:
        recovered, is_ready = readiness()
        body = {
            "status": "ready" if is_ready else "starting",
            "worker_id": settings.worker_id,
            "recovered": recovered,
            "rebalancing": bool(app.rebalancing),
            "in_flight": connector.dispatcher.pending if connector.dispatcher else 0,
        }
        return web.json(body, status=200 if is_ready else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        await update_lag(app.consumer, connector.metrics)
        processor = connector.processor
        connector.metrics.observe_worker(
            ready=readiness()[1],
            open_targets=processor.breakers.open_targets() if processor else (),
            parked_in_flight=processor.parking_dispatcher.pending if processor else 0,
        )
        return web.bytes(connector.metrics.render(), content_type="text/plain; version=0.0.4")

    @app.page("/orders/{key:.+}")
    async def order_state(web: Any, request: Any, key: str) -> Any:
        # One order's state, from the worker owning its partition (connector.ops.order_view).
        from connector.ops.order_view import web_answer

        status, body, headers = web_answer(connector, key, request.query.get("partition"))
        return web.json(body, status=status, headers=headers)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _drain(app: faust.App, **kwargs: Any) -> None:
        await connector.close()

    return connector


def _store_options(settings: Settings) -> dict[str, int] | None:
    if not settings.store.startswith("rocksdb"):
        return None
    mib = 1024 * 1024
    return {
        "write_buffer_size": settings.state.rocksdb_write_buffer_mb * mib,
        "max_write_buffer_number": 2,
        "block_cache_size": settings.state.rocksdb_block_cache_mb * mib,
        "block_cache_compressed_size": settings.state.rocksdb_block_cache_mb * mib,
    }


def share_rates(connector: ConnectorApp) -> None:
    """Take this worker's share of the rate limits at every assignment.

    (:mod:`connector.pipeline.rate_share`; Faust's public ``on_partitions_assigned``.)
    """
    topics = connector.settings.topics

    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        [assigned] = args  # the worker's whole new assignment (a set of TP)
        take_share(connector.rate_share, assigned, topics.events, topics.partitions)

    connector.app.on_partitions_assigned.connect(on_assigned)
