"""One input record, from bytes to a terminal audited outcome.

Follow an event here: :meth:`Processor.handle` parses and key-checks it
(:mod:`connector.domain.events`) and maps it to the vendor's request
(:mod:`connector.vendors`), then hands its job to the
:class:`~connector.pipeline.delivery.OrderedDispatcher`, which runs one order's jobs one
after another. The job (:mod:`connector.pipeline.order`) decides at send time
(:func:`connector.domain.lifecycle.judge`) against what the vendor may already have,
records the intent to send on the changelog *before* the call, sends with
retries, and ends with exactly one terminal audit record (plus a dead-letter
record when the event cannot be delivered), through the effect executor
(:mod:`connector.pipeline.effects`). An event whose target is down goes to the
parking topic (:mod:`connector.pipeline.parking`).

Rules that keep the promise through crashes and rebalances:

* ``handle`` never raises, and a job never ends by raising: an unexpected
  exception becomes a dead letter with code ``internal``.
* A record is acknowledged only after its terminal audit record (and dead
  letter) is on the broker. When Kafka does not take one, the step is retried
  and the record stays unacknowledged, which holds the partition's committed
  offset: a crash then replays it instead of losing it.
* Every job holds its partition's :class:`~connector.pipeline.delivery.Lease`. Once the
  partition is revoked the job sends nothing new, writes nothing and
  acknowledges nothing; the next owner replays the record.
* One order's sends never overlap, whichever topic they come from.
* Every job writes the order's state back, even when nothing changed, so a
  changelog that missed a write (a worker killed after its local store took
  it) heals on the order's next event.

The processor knows no Faust: state lives in a
:class:`~connector.pipeline.effects.StateStore` (told the partition
explicitly), records go to :class:`~connector.pipeline.effects.Sinks`.
:mod:`connector.kafka.faust_app` provides both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from connector.domain.audit import Header, Outcome, SourceRef
from connector.domain.context import EventContext
from connector.domain.events import order_key_of_record, parse_record
from connector.errors import InvalidEventError, RevokedError
from connector.infra import tracing
from connector.pipeline.breaker import Breakers
from connector.pipeline.delivery import Lease, OrderedDispatcher
from connector.pipeline.effects import Effects, Sinks, StateStore
from connector.pipeline.order import OrderRun
from connector.pipeline.parking import Parking, input_headers, origin
from connector.pipeline.records import Ending, Job, RecordBuilder
from connector.pipeline.steps import OrderLocks, Steps
from connector.settings import Settings
from connector.vendors import VendorClient, VendorRequest, map_event

__all__ = ["InputRecord", "Limiter", "Processor"]

logger = logging.getLogger(__name__)


class Limiter(Protocol):
    async def acquire(self, request: VendorRequest, *, deadline: float | None = None) -> bool: ...

    def on_rate_limited(self, request: VendorRequest) -> None: ...


class InputRecord(Protocol):
    """One fetched record, as the Kafka side hands it on (``connector.kafka.intake.Fetched``)."""

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Any: ...

    @property
    def generation_id(self) -> int: ...


class Processor:
    """Admits input and parked records as jobs, and runs each to its audited end."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        clients: dict[str, VendorClient],
        sinks: Sinks,
        dispatcher: OrderedDispatcher,
        *,
        limiter: Limiter | None = None,
        breakers: Breakers | None = None,
        parking_dispatcher: OrderedDispatcher | None = None,
    ) -> None:
        d = settings.delivery
        self._dispatcher = dispatcher
        self._parking_dispatcher = parking_dispatcher or OrderedDispatcher(
            d.max_pending_parked, d.max_in_flight_bytes
        )
        self._max_bytes = settings.kafka.max_message_bytes
        self._breakers = breakers or Breakers(
            d.breaker_failures, d.breaker_cool_down_s, d.breaker_max_cool_down_s
        )
        self._records = RecordBuilder(settings.worker_id)
        self._effects = Effects(store, sinks)
        steps = Steps(self._effects, self._records, id_limit=settings.state.event_ids_per_order)
        locks = OrderLocks()
        # Only the HTTP call takes one of these: an event sleeping before a retry, or
        # waiting behind an earlier event of its order, leaves them to healthy orders.
        http_slots = asyncio.Semaphore(d.max_in_flight)
        self._parking = Parking(
            steps,
            self._breakers,
            locks,
            clients,
            limiter=limiter,
            http_slots=http_slots,
            max_event_age_s=d.max_event_age_s,
        )
        self._orders = OrderRun(
            steps,
            self._parking,
            self._breakers,
            locks,
            clients,
            delivery=d,
            outage_policy=settings.outage_policy,
            limiter=limiter,
            http_slots=http_slots,
        )

    @property
    def breakers(self) -> Breakers:
        return self._breakers

    @property
    def parking_dispatcher(self) -> OrderedDispatcher:
        return self._parking_dispatcher

    # -- entry points ----------------------------------------------------------------------
    async def handle_record(
        self, record: InputRecord, source: SourceRef, ack: Callable[[], None]
    ) -> None:
        """An events-topic record, as the intake hands it on. Never raises."""
        # The headers are read for the W3C trace context only.
        await self.handle(
            source, record.key, record.value, ack, record.generation_id, headers=record.headers
        )

    async def handle_parked_record(
        self, record: InputRecord, source: SourceRef, ack: Callable[[], None]
    ) -> None:
        """A parking-topic record, as the intake hands it on. Never raises."""
        headers = _header_list(record.headers)
        await self.handle_parked(
            source, record.key, record.value, headers, ack, record.generation_id
        )

    async def handle(
        self,
        source: SourceRef,
        key: bytes | None,
        value: bytes | None,
        ack: Callable[[], None],
        generation: int | None = None,
        headers: Any = None,
    ) -> None:
        """Admit one input record's job. Never raises.

        ``generation``: the consumer group generation the record was read in; a
        record of a fenced generation is dropped unacknowledged (read again by
        its partition's next owner). ``headers``: the record's Kafka headers
        (its W3C trace context, :mod:`connector.infra.tracing`).
        """
        lease = self._dispatcher.lease(source.partition, generation)
        job, order_key = self._job_for(lease, source, key, value, parked=False, headers=headers)
        await self._dispatcher.submit(
            source.partition, source.offset, order_key, job, ack, _size(key, value), lease=lease
        )

    async def handle_parked(
        self,
        parked_at: SourceRef,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None,
        ack: Callable[[], None],
        generation: int | None = None,
    ) -> None:
        """Admit one parking-topic record's job. Never raises."""
        lease = self._parking_dispatcher.lease(parked_at.partition, generation)
        source, since = origin(headers)
        job, order_key = self._job_for(
            lease, source or parked_at, key, value, parked=True, parked_since=since, headers=headers
        )
        await self._parking_dispatcher.submit(
            parked_at.partition,
            parked_at.offset,
            order_key,
            job,
            ack,
            _size(key, value),
            lease=lease,
        )

    def _job_for(
        self,
        lease: Lease,
        source: SourceRef,
        key: bytes | None,
        value: bytes | None,
        *,
        parked: bool,
        parked_since: float | None = None,
        headers: Any = None,
    ) -> tuple[Callable[[], Awaitable[None]], bytes | None]:
        try:
            event = parse_record(key, value, max_bytes=self._max_bytes)
            request = map_event(event)
        except InvalidEventError as exc:
            ctx = tracing.event_context(source.topic, source.partition, source.offset, headers)
            return self._invalid_job(lease, source, key, value, exc, ctx, headers), None
        except Exception as exc:  # a bug must not stop the stream: dead-letter and go on
            # Outside any job: the record's place goes into the line itself (connector.infra.logs).
            logger.exception(
                "unexpected error while decoding offset %s",
                source.offset,
                extra={"partition": source.partition, "offset": source.offset},
            )
            error = InvalidEventError(f"internal error: {type(exc).__name__}", code="internal")
            ctx = tracing.event_context(source.topic, source.partition, source.offset, headers)
            return self._invalid_job(lease, source, key, value, error, ctx, headers), None
        assert key is not None  # parse_record checked it
        job = Job(lease, source, key, value, event, request, parked_since, input_headers(headers))
        run = self._parking.run if parked else self._orders.run
        # Logs, metrics, traces and audit records of this job read it (connector.domain.context).
        ctx = tracing.event_context(
            source.topic,
            source.partition,
            source.offset,
            headers,
            event_id=event.event_id,
            order_key=event.key,
            vendor=request.vendor,
            occurred_at=event.occurred_at.timestamp(),
        )
        return self._order_job(job, run, ctx), key

    # -- jobs ------------------------------------------------------------------------------
    def _invalid_job(
        self,
        lease: Lease,
        source: SourceRef,
        key: bytes | None,
        value: bytes | None,
        error: InvalidEventError,
        ctx: EventContext,
        headers: Any = None,
    ) -> Callable[[], Awaitable[None]]:
        kept = Header.of(input_headers(headers))
        records, effects = self._records, self._effects
        # The Kafka key, when it is an order key's form: audit tail --order and order show
        # then find the unreadable record too.
        known = {"order_key": order_key_of_record(key)}

        async def job() -> None:
            tracing.start(ctx)
            try:
                reason = f"{error.code}: {error.reason}"
                invalid = records.audit(
                    None, source, outcome=Outcome.INVALID, terminal=False, reason=reason, **known
                )
                await effects.emit(lease, invalid)
                terminal = records.audit(
                    None,
                    source,
                    outcome=Outcome.DEAD_LETTERED,
                    terminal=True,
                    reason=reason,
                    **known,
                )
                letter = records.letter(
                    source, key, value, None, code=error.code, reason=error.reason, headers=kept
                )
                await effects.end(lease, Ending(terminal, letter, key))
            finally:
                tracing.finish(ctx)

        return job

    def _order_job(
        self, job: Job, run: Callable[[Job], Awaitable[None]], ctx: EventContext
    ) -> Callable[[], Awaitable[None]]:
        records, effects = self._records, self._effects

        async def contained() -> None:
            # The job's own task context: every log line, audit record and vendor call
            # of this job carries the event's identity and trace context from here on.
            tracing.start(ctx)
            try:
                await run(job)
            except RevokedError:
                raise
            except Exception as exc:
                if effects.ended(job):  # the terminal record is out; only a later step failed
                    logger.exception("error after event %s ended", job.event.event_id)
                    return
                logger.exception("unexpected error on event %s", job.event.event_id)
                reason = f"internal error: {type(exc).__name__}"
                await effects.end(
                    job.lease, records.dead_lettered(job, "internal", reason), job=job
                )
            finally:
                tracing.finish(ctx)

        return contained


def _size(key: bytes | None, value: bytes | None) -> int:
    # Raw bytes plus the parsed event and the request body: about three copies.
    return 3 * (len(value or b"") + len(key or b""))


def _header_list(raw: Any) -> list[tuple[str, bytes]]:
    if not raw:
        return []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), bytes(v) if v is not None else b"") for k, v in items]
