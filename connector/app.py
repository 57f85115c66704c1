"""Faust wiring: topics, the order-state table, the agent, the worker's services.

Decisions recorded here:

* The events topic is read with raw serializers: parsing is ours
  (:func:`connector.events.parse_record`), so bad bytes become a dead letter
  instead of a crash inside Faust's deserializer.
* The events and parking topics are subscribed through agents, so that Faust
  assigns them with the table, but their records skip Faust's stream: the
  intake (:mod:`connector.intake`) hands them from each fetch to the processor,
  and :class:`~connector.delivery.OrderedDispatcher` acknowledges each record
  itself, strictly in offset order per partition.
* The table is co-partitioned with its input *by construction*: it does not
  use the partitioner (``use_partitioner=False``), so Faust writes each order's
  changelog record to the partition of the event being processed, whatever
  partitioner the producer used (Java clients hash keys with murmur2,
  librdkafka clients with CRC32, and some pick partitions themselves). Both the
  changelog partition and the RocksDB database come from Faust's *current
  event*: the intake sets it to the record before creating the record's job, so
  the job's context carries it.
* Fencing: a rebalance revokes every partition at once (eager protocol). The
  dispatcher fences them synchronously when the rebalance starts
  (:meth:`_FencedApp.on_rebalance_start`); Faust's "wait until the streams are
  empty" step is replaced by ending the fenced jobs (:meth:`_FencedApp._consumer_wait_empty`):
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import httpx
from faust.types import TP

from connector.audit import AuditRecord, DeadLetter, SourceRef
from connector.control import follow_control
from connector.delivery import OrderedDispatcher
from connector.http import build_http_client
from connector.intake import Intake, Route
from connector.kafka_clients import ssl_context
from connector.lifecycle import OrderState, decode_state, encode_state
from connector.metrics import Metrics, update_lag
from connector.offsets import OffsetGuard, ReadOffsets
from connector.processor import Processor
from connector.ratelimit import RateLimiter
from connector.recovery import install_recovery_fix
from connector.settings import Settings, TopicSettings
from connector.vendors.base import VendorClient
from connector.vendors.comeet import ComeetClient
from connector.vendors.kombo import KomboClient

__all__ = ["ConnectorApp", "create_app"]

logger = logging.getLogger(__name__)

OVERDUE_AFTER_S = 60.0  # a record handled longer than this is named in the log


def _broker_url(settings: Settings) -> str:
    servers = [s.strip() for s in settings.kafka.bootstrap_servers.split(",") if s.strip()]
    return ";".join(f"kafka://{s}" for s in servers)


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


class _KafkaSinks:
    """Audit, dead-letter and parking topics; each call returns once the broker has it.

    Records go straight to the app's aiokafka producer: Faust's ``Topic.send`` wraps
    each one in pending and future messages, a producer start check and its sensors
    (~30 µs of CPU per record) for nothing the connector uses. Same producer, so
    Faust's flush before a commit still covers them.
    """

    def __init__(
        self,
        producer: Callable[[], Any],
        topics: TopicSettings,
        metrics: Metrics,
    ) -> None:
        self._producer = producer  # the started AIOKafkaProducer (raises until then)
        self._audit = topics.audit
        self._dead_letter = topics.dead_letter
        self._parking = topics.parking
        self._metrics = metrics

    async def park(
        self, key: bytes, value: bytes, partition: int, headers: list[tuple[str, bytes]]
    ) -> None:
        # The input record's own partition: the parking topic is co-partitioned with
        # the events topic, so the order's state and its parked events stay together.
        fut = await self._producer().send(
            self._parking, value, key=key, partition=partition, headers=headers
        )
        await fut

    async def audit(self, record: AuditRecord) -> None:
        key = record.order_key.encode() if record.order_key else None
        fut = await self._producer().send(self._audit, record.model_dump_json().encode(), key=key)
        if record.terminal:
            # The event is acknowledged after this returns, so its terminal record must
            # be on the broker. Earlier records of the event share its key, partition and
            # producer, so they are written before it; waiting for them too buys nothing.
            await fut
        self._metrics.observe_audit(record)

    async def dead_letter(self, record: DeadLetter, key: bytes | None) -> None:
        fut = await self._producer().send(
            self._dead_letter, record.model_dump_json().encode(), key=key
        )
        await fut
        self._metrics.observe_dead_letter(record)


class OrderTable(faust.Table):
    """The Faust table, whose changelog records :class:`_TableStore` sends itself."""

    def on_key_set(self, key: Any, value: Any) -> None:
        # Faust's own sends the changelog record, sets a key expiry (windowed tables
        # only) and calls the sensors (the app has none): _TableStore sends the record.
        return None


class _TableStore:
    """:class:`connector.processor.StateStore` on the Faust table, with the decoded states cached.

    An event reads its order's state up to three times (decide, re-check before each
    attempt, finish); decoding it from RocksDB each time was ~5% of a worker's CPU.
    The cache holds what this worker last wrote or read. Only a rebalance changes the
    table behind its back (recovery from the changelog), so :meth:`forget` empties it
    when partitions are revoked; it is bounded by emptying it when full (events of one
    order come close together, so recent orders are what it must hold).

    A write goes to the table's RocksDB store (the partition of Faust's current event,
    which is the input record's) and, as a changelog record to that same partition,
    straight to the app's aiokafka producer, queued in call order: Faust's own path
    (a producer buffer drained by a task, then pending and future messages) cost
    ~30 µs of CPU per write, two writes per event. Like Faust, it records the
    changelog offset in the store once the broker has the record, which is where
    recovery resumes.
    """

    MAX_CACHED = 8192

    def __init__(self, table: OrderTable, producer: Callable[[], Any]) -> None:
        self._table = table
        self._producer = producer  # the started AIOKafkaProducer (raises until then)
        self._cache: dict[bytes, OrderState | None] = {}

    def get(self, key: bytes) -> OrderState | None:
        try:
            return self._cache[key]
        except KeyError:
            state = decode_state(self._table.get(key))
            self._remember(key, state)
            return state

    async def put(self, key: bytes, state: OrderState) -> Any:
        table = self._table
        value = encode_state(state)
        partition = table.partition_for_key(key)  # not None: the table has no partitioner
        assert partition is not None
        topic = table.changelog_topic.get_topic_name()
        # Queued first, then stored with no await in between: a job cancelled while the
        # producer makes room has written neither, so the store never holds a state
        # its changelog lacks.
        fut = await self._producer().send(topic, value, key=key, partition=partition)
        table[key] = value
        self._remember(key, state)
        fut.add_done_callback(functools.partial(self._persisted, TP(topic, partition)))
        return fut

    def _persisted(self, tp: TP, fut: Any) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return  # the processor sees the failure where it waits for the write
        try:
            self._table.data.set_persisted_offset(tp, fut.result().offset)
        except Exception as exc:  # e.g. the partition's store closed by a revoke
            logger.debug("changelog offset %s of %s not recorded: %r", fut.result().offset, tp, exc)

    def _remember(self, key: bytes, state: OrderState | None) -> None:
        if len(self._cache) >= self.MAX_CACHED:
            self._cache.clear()
        self._cache[key] = state

    def forget(self) -> None:
        self._cache.clear()


class _FencedApp(faust.App):
    """faust.App whose rebalances fence the connector's jobs instead of waiting for them."""

    connector: ConnectorApp | None = None
    managed_topics: set[str] = set()
    isolation_level = "read_committed"

    def _new_consumer(self) -> Any:
        consumer: Any = super()._new_consumer()
        # Before Faust's fetch loop binds the mapping's methods: see connector.offsets.
        consumer._read_offset = ReadOffsets(self.managed_topics)
        # Faust reads uncommitted records unless it is transactional itself.
        thread = consumer._thread
        create = thread._create_worker_consumer
        level = self.isolation_level

        def create_worker_consumer(transport: Any) -> Any:
            client = create(transport)
            client._isolation_level = level  # read by AIOKafkaConsumer.start()
            return client

        thread._create_worker_consumer = create_worker_consumer
        return consumer

    def on_init_dependencies(self) -> Any:
        services = super().on_init_dependencies()
        # Faust's Monitor sensor keeps per-message and per-send statistics for its web
        # pages (off here); the connector's own metrics replace it. Out of the sensor
        # set, it costs nothing per record. It stays the app's monitor, which Faust's
        # consumer still updates on commits and fetches.
        self.sensors.remove(self.monitor)
        return services

    def on_rebalance_start(self) -> None:
        # Called first when partitions are revoked, from Faust's consumer thread: one
        # attribute write fences the ending generation; the event loop does the rest.
        if self.connector is not None:
            self.connector.fence_generation(self.consumer_generation_id)
        super().on_rebalance_start()

    async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
        # Replaces "wait until every admitted record is acknowledged" (which waits for
        # retries and backoffs, past the group's rebalance timeout): fenced jobs end
        # now, unacknowledged; only requests on the wire are awaited, bounded.
        if self.connector is not None:
            await self.connector.fence_and_drain()
            if self.connector.offsets is not None:
                await self.connector.offsets.commit_done()
        # Faust tracks admitted messages until acked; fenced ones never will be.
        consumer._unacked_messages.clear()
        await consumer.commit()


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
    store: _TableStore | None = None
    _reported: set[tuple[str, Any, int]] = field(default_factory=set)  # report_overdue's

    def runtime(self) -> Processor:
        if self.processor is None:
            settings = self.settings
            self.store = _TableStore(self.table, self._kafka_producer)
            self.http = build_http_client(settings.delivery)
            clients: dict[str, VendorClient] = {
                "kombo": KomboClient(self.http, settings.kombo),
                "comeet": ComeetClient(self.http, settings.comeet),
            }
            self.dispatcher = OrderedDispatcher(
                settings.delivery.max_pending, settings.delivery.max_in_flight_bytes
            )
            self.processor = Processor(
                settings,
                self.store,
                clients,
                _KafkaSinks(self._kafka_producer, settings.topics, self.metrics),
                self.dispatcher,
                limiter=RateLimiter.from_settings(settings),
            )
            dispatcher = self.dispatcher
            consumer = self.app.consumer
            # Only the dispatchers acknowledge these topics, in offset order, and only
            # what they acknowledged is committed.
            self.offsets = OffsetGuard(
                consumer,
                {
                    self.settings.topics.events: dispatcher.position,
                    self.settings.topics.parking: self.processor.parking_dispatcher.position,
                },
            )
            processor = self.processor

            async def events(message: Any, source: SourceRef, ack: Callable[[], None]) -> None:
                await processor.handle(
                    source,
                    message.key,
                    message.value,
                    ack,
                    message.generation_id,
                    headers=message.headers,  # read for the W3C trace context only
                )

            async def parked(message: Any, source: SourceRef, ack: Callable[[], None]) -> None:
                headers = _headers(message.headers)
                await processor.handle_parked(
                    source, message.key, message.value, headers, ack, message.generation_id
                )

            topics = self.settings.topics
            routes = {
                topics.events: Route(events, dispatcher.has_room),
                topics.parking: Route(parked, processor.parking_dispatcher.has_room),
            }
            self.offsets.take(Intake(consumer, self.offsets, routes))
            self.metrics.bind_gauges(
                in_flight=lambda: dispatcher.pending,
                paused=lambda: len(getattr(consumer, "_paused_partitions", ())),
            )
        return self.processor

    def _kafka_producer(self) -> Any:
        """The app's started aiokafka producer (Faust raises NotReady before that)."""
        producer: Any = self.app.producer
        return producer._ensure_producer()

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
    # faust-streaming's table recovery can end for good after a timed-out step, or sit
    # on a round that stopped receiving records: see connector.recovery.
    install_recovery_fix()
    t = settings.topics
    data_dir = (Path(settings.data_dir) / settings.worker_id).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    app = _FencedApp(
        settings.app_id,
        broker=_broker_url(settings),
        broker_credentials=_credentials(settings),
        broker_session_timeout=settings.kafka.session_timeout_s,
        broker_heartbeat_interval=settings.kafka.heartbeat_interval_s,
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
        consumer_max_fetch_size=settings.kafka.max_message_bytes * 3,
        # At most this many records per fetch reach the intake: a partition held for room
        # keeps at most one such batch in memory (state run, 200k orders backlogged: 207
        # MB peak RSS against 291 MB with aiokafka's whole buffered fetch, BENCHMARKS.md).
        broker_max_poll_records=500,
        stream_wait_empty=False,  # replaced by fencing, see _FencedApp
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
        OrderTable(
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
        )
    )
    connector = ConnectorApp(settings, app, events, audit, dead_letter, parking, table)
    app.connector = connector
    app.managed_topics = {t.events, t.parking}
    app.isolation_level = settings.kafka.isolation_level

    # The agents subscribe the events and parking topics, so that Faust assigns them
    # together with the table; their records never reach these streams: the intake
    # takes them from each fetch (connector.intake).
    @app.agent(events, name="deliver", concurrency=1)
    async def deliver_events(stream: faust.StreamT) -> None:
        connector.runtime()
        await _unreached(stream)

    @app.agent(parking, name="parked", concurrency=1)
    async def deliver_parked(stream: faust.StreamT) -> None:
        connector.runtime()
        await _unreached(stream)

    @app.timer(5.0)
    async def retry_stale_rewinds() -> None:
        # A partition read again over a hole whose re-read never came (connector.offsets).
        if connector.offsets is not None:
            await connector.offsets.retry_stale_rewinds()
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
        # One order's state, from the worker owning its partition (connector.order_view).
        from connector.order_view import web_answer

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


def _headers(raw: Any) -> list[tuple[str, bytes]]:
    if not raw:
        return []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), bytes(v) if v is not None else b"") for k, v in items]


async def _unreached(stream: faust.StreamT) -> None:
    async for event in stream.noack().events():  # type: ignore[attr-defined]
        message = event.message
        logger.error(
            "%s[%s]@%s reached Faust's stream; the intake should have taken it",
            message.topic,
            message.partition,
            message.offset,
        )
