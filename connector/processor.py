"""One input record, from bytes to a terminal audited outcome.

Follow an event here: :meth:`Processor.handle` parses and key-checks it
(:mod:`connector.events`) and maps it to the vendor's request
(:mod:`connector.vendors`), then hands a job to the
:class:`~connector.delivery.OrderedDispatcher`, which runs one order's jobs one
after another. The job decides at send time (:func:`connector.lifecycle.judge`)
against what the vendor may already have, records the intent to send on the
changelog *before* the call, sends with retries
(:func:`~connector.delivery.deliver`), and ends with exactly one terminal audit
record (plus a dead-letter record when the event cannot be delivered).

While a target is down (its circuit is open, :mod:`connector.breaker`) and its
outage policy is ``park``, its events -- and every later event of the same
order -- move to the parking topic and the input partition moves on;
:meth:`Processor.handle_parked` delivers them in order once the target answers.
Their terminal audit record names the original input record.

Rules that keep the promise through crashes and rebalances:

* ``handle`` never raises, and a job never ends by raising: an unexpected
  exception becomes a dead letter with code ``internal``.
* A record is acknowledged only after its terminal audit record (and dead
  letter) is on the broker. When Kafka does not take one, the step is retried
  and the record stays unacknowledged, which holds the partition's committed
  offset: a crash then replays it instead of losing it.
* Every job holds its partition's :class:`~connector.delivery.Lease`. Once the
  partition is revoked the job sends nothing new, writes nothing and
  acknowledges nothing; the next owner replays the record.
* One order's sends never overlap, whichever topic they come from.
* Every job writes the order's state back, even when nothing changed, so a
  changelog that missed a write (a worker killed after its local store took
  it) heals on the order's next event.

The processor knows no Faust: state lives in a :class:`StateStore`, records go
to :class:`Sinks`. :mod:`connector.app` plugs in the Faust table and topics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from connector import tracing
from connector.audit import AuditRecord, DeadLetter, Header, Outcome, SourceRef
from connector.breaker import Breaker, Breakers
from connector.context import EventContext
from connector.delivery import (
    AttemptReport,
    DeliveryOutcome,
    Lease,
    OrderedDispatcher,
    RetryPolicy,
    deliver,
)
from connector.errors import (
    DeliveryError,
    InvalidEventError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    RevokedError,
)
from connector.events import (
    ComeetTarget,
    Event,
    KomboIntegrationTarget,
    KomboTarget,
    order_key_of_record,
    parse_record,
)
from connector.lifecycle import (
    Decision,
    Mark,
    OrderState,
    Verdict,
    abandon,
    begin,
    confirm,
    judge,
    park,
    status_after,
    unpark,
)
from connector.settings import OutagePolicy, Settings
from connector.vendors import VendorClient, VendorRequest, map_event

__all__ = ["PARKED_FROM_HEADER", "Limiter", "Processor", "Sinks", "StateStore"]

logger = logging.getLogger(__name__)

SINK_RETRY_MAX_S = 5.0
PARKED_FROM_HEADER = "connector-parked-from"  # JSON {topic, partition, offset} of the input
PARKED_AT_HEADER = "connector-parked-at"  # when it was parked: seconds since the epoch


class Sinks(Protocol):
    """Where records go. Every coroutine returns once Kafka has the record."""

    async def audit(self, record: AuditRecord) -> None: ...

    async def dead_letter(self, record: DeadLetter, key: bytes | None) -> None: ...

    async def park(
        self, key: bytes, value: bytes, partition: int, headers: list[tuple[str, bytes]]
    ) -> None: ...


class StateStore(Protocol):
    """Per-order state, co-partitioned with the record being processed."""

    def get(self, key: bytes) -> OrderState | None: ...

    async def put(self, key: bytes, state: OrderState) -> Awaitable[Any]:
        """Store the state and queue its changelog record, in call order.

        Awaiting the result waits until the changelog has it.
        """
        ...


class Limiter(Protocol):
    async def acquire(self, request: VendorRequest, *, deadline: float | None = None) -> bool: ...

    def on_rate_limited(self, request: VendorRequest) -> None: ...


class _Overtaken(Exception):
    """Judged again before a retry, the event may no longer be sent."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


class _Park(Exception):
    """The target's circuit opened while the event was being retried."""


def _target_fields(target: KomboTarget | ComeetTarget | KomboIntegrationTarget) -> dict[str, str]:
    return target.model_dump(exclude={"vendor"})


@dataclass(frozen=True, slots=True)
class _Record:
    """One event being processed: where it came from and what it asks for."""

    lease: Lease
    source: SourceRef  # the input record (for a parked event: where it was first read)
    key: bytes
    value: bytes | None
    event: Event
    request: VendorRequest
    parked_at: float | None = None  # a parked event: when it was parked
    headers: tuple[tuple[str, bytes], ...] = ()  # the input record's, for its dead letter


class _OrderLocks:
    """One order's sends never overlap, whether they come from the input or parking."""

    def __init__(self) -> None:
        self._locks: dict[bytes, tuple[asyncio.Lock, list[int]]] = {}

    @asynccontextmanager
    async def hold(self, key: bytes) -> AsyncIterator[None]:
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]


class Processor:
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
        self._settings = settings
        self._worker = settings.worker_id
        self._store = store
        self._clients = clients
        self._sinks = sinks
        self._dispatcher = dispatcher
        self._parking = parking_dispatcher or OrderedDispatcher(
            settings.delivery.max_pending_parked, settings.delivery.max_in_flight_bytes
        )
        self._policy = RetryPolicy.from_settings(settings.delivery)
        # "stop": retryable failures never run out; the breaker paces the probes.
        self._endless = RetryPolicy(
            max_attempts=2**62,
            initial_s=self._policy.initial_s,
            max_s=self._policy.max_s,
            deadline_s=float("inf"),
        )
        self._once = RetryPolicy(max_attempts=1, deadline_s=float("inf"))
        self._id_limit = settings.state.event_ids_per_order
        self._max_bytes = settings.kafka.max_message_bytes
        self._limiter = limiter
        d = settings.delivery
        self._breakers = breakers or Breakers(
            d.breaker_failures, d.breaker_cool_down_s, d.breaker_max_cool_down_s
        )
        self._locks = _OrderLocks()
        # Only the HTTP call takes one of these: an event sleeping before a retry, or
        # waiting behind an earlier event of its order, leaves them to healthy orders.
        self._http_slots = asyncio.Semaphore(settings.delivery.max_in_flight)

    @property
    def breakers(self) -> Breakers:
        return self._breakers

    @property
    def parking_dispatcher(self) -> OrderedDispatcher:
        return self._parking

    def _outage_policy(self, request: VendorRequest) -> OutagePolicy:
        return self._settings.outage_policy(request.vendor)

    # -- entry points ----------------------------------------------------------------------
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
        (its W3C trace context, :mod:`connector.tracing`).
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
        lease = self._parking.lease(parked_at.partition, generation)
        source, since = _origin(headers)
        job, order_key = self._job_for(
            lease, source or parked_at, key, value, parked=True, parked_since=since, headers=headers
        )
        await self._parking.submit(
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
            job = self._invalid_job(lease, source, key, value, exc, None, ctx, headers)
            return job, None
        except Exception as exc:  # a bug must not stop the stream: dead-letter and go on
            # Outside any job: the record's place goes into the line itself (connector.logs).
            logger.exception(
                "unexpected error while decoding offset %s",
                source.offset,
                extra={"partition": source.partition, "offset": source.offset},
            )
            error = InvalidEventError(f"internal error: {type(exc).__name__}", code="internal")
            ctx = tracing.event_context(source.topic, source.partition, source.offset, headers)
            job = self._invalid_job(lease, source, key, value, error, None, ctx, headers)
            return job, None
        assert key is not None  # parse_record checked it
        inputs = _input_headers(headers)
        rec = _Record(lease, source, key, value, event, request, parked_since, inputs)
        run = self._run_parked if parked else self._run_order
        # Logs, metrics, traces and audit records of this job read it (connector.context).
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
        return self._order_job(rec, run, ctx), key

    # -- records ---------------------------------------------------------------------------
    def _audit(self, event: Event | None, source: SourceRef, **fields: Any) -> AuditRecord:
        if event is not None:
            fields.setdefault("event_id", event.event_id)
            fields.setdefault("event_type", str(event.type))
            fields.setdefault("order_key", event.key)
            fields.setdefault("vendor", event.target.vendor)
            fields.setdefault("target", _target_fields(event.target))
            fields.setdefault("unknown_fields", list(event.unknown_fields))
        return AuditRecord(worker_id=self._worker, source=source, **fields)

    def _record(self, rec: _Record, outcome: Outcome, terminal: bool, **fields: Any) -> AuditRecord:
        return self._audit(
            rec.event,
            rec.source,
            outcome=outcome,
            terminal=terminal,
            action=rec.request.action,
            **fields,
        )

    def _failed(
        self,
        rec: _Record,
        error: DeliveryError,
        latency_ms: float,
        retryable: bool,
        *,
        attempt: int | None = None,
    ) -> AuditRecord:
        """One failed attempt."""
        return self._record(
            rec,
            Outcome.FAILED,
            False,
            reason=error.message,
            http_status=error.http_status,
            vendor_code=error.vendor_code,
            latency_ms=round(latency_ms, 3),
            attempt=attempt,
            retryable=retryable,
        )

    def _letter(
        self,
        source: SourceRef,
        key: bytes | None,
        value: bytes | None,
        event: Event | None,
        **fields: Any,
    ) -> DeadLetter:
        return DeadLetter(
            worker_id=self._worker,
            event_id=event.event_id if event else None,
            order_key=event.key if event else order_key_of_record(key),
            source=source,
            original_key_b64=DeadLetter.encode(key),
            original_value_b64=DeadLetter.encode(value),
            **fields,
        )

    async def _durably(self, lease: Lease, step: Callable[[], Awaitable[Any]], what: str) -> None:
        """Run one sink step until Kafka takes it, unless the partition is revoked first.

        The record stays unacknowledged meanwhile, so the partition's committed
        offset waits here; the consumer keeps reading other partitions.
        """
        delay = 0.1
        while True:
            lease.check()
            try:
                await step()
                return
            except RevokedError:
                raise
            except Exception as exc:
                logger.warning(
                    "could not write the %s record (%s: %s); retrying in %.1f s",
                    what,
                    type(exc).__name__,
                    exc,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(SINK_RETRY_MAX_S, delay * 2)

    async def _emit(self, lease: Lease, record: AuditRecord) -> None:
        await self._durably(lease, lambda: self._sinks.audit(record), "audit")

    async def _save(self, lease: Lease, key: bytes, state: OrderState | None) -> None:
        """Write the state and wait until the changelog has it."""
        if state is not None:
            await self._durably(lease, lambda: self._put_durably(key, state), "state")

    async def _put_durably(self, key: bytes, state: OrderState) -> None:
        await (await self._store.put(key, state))

    async def _write_behind(self, key: bytes, state: OrderState) -> None:
        """Write the state without waiting for the broker (the callers say why)."""
        try:
            await self._store.put(key, state)
        except Exception as exc:
            # The changelog keeps the order's previous state; its next event heals it.
            logger.warning("could not queue a state write (%s: %s)", type(exc).__name__, exc)

    async def _dead_letter(
        self,
        lease: Lease,
        source: SourceRef,
        key: bytes | None,
        value: bytes | None,
        event: Event | None,
        audit: AuditRecord,
        **fields: Any,
    ) -> None:
        letter = self._letter(source, key, value, event, **fields)
        await self._durably(lease, lambda: self._sinks.dead_letter(letter, key), "dead-letter")
        await self._emit(lease, audit)

    # -- jobs ------------------------------------------------------------------------------
    def _invalid_job(
        self,
        lease: Lease,
        source: SourceRef,
        key: bytes | None,
        value: bytes | None,
        error: InvalidEventError,
        event: Event | None,
        ctx: EventContext,
        headers: Any = None,
    ) -> Callable[[], Awaitable[None]]:
        kept = Header.of(_input_headers(headers))
        known = {} if event is not None else {"order_key": order_key_of_record(key)}

        async def job() -> None:
            tracing.start(ctx)
            try:
                reason = f"{error.code}: {error.reason}"
                invalid = self._audit(
                    event, source, outcome=Outcome.INVALID, terminal=False, reason=reason, **known
                )
                await self._emit(lease, invalid)
                ended = self._audit(
                    event,
                    source,
                    outcome=Outcome.DEAD_LETTERED,
                    terminal=True,
                    reason=reason,
                    **known,
                )
                await self._dead_letter(
                    lease,
                    source,
                    key,
                    value,
                    event,
                    ended,
                    code=error.code,
                    reason=error.reason,
                    headers=kept,
                )
            finally:
                tracing.finish(ctx)

        return job

    def _order_job(
        self,
        rec: _Record,
        run: Callable[[_Record, list[bool]], Awaitable[None]],
        ctx: EventContext,
    ) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            ended = [False]
            # The job's own task context: every log line, audit record and vendor call
            # of this job carries the event's identity and trace context from here on.
            tracing.start(ctx)
            try:
                await run(rec, ended)
            except RevokedError:
                raise
            except Exception as exc:
                if ended[0]:  # the terminal record is out; only a later step failed
                    logger.exception("error after event %s ended", rec.event.event_id)
                    return
                logger.exception("unexpected error on event %s", rec.event.event_id)
                reason = f"internal error: {type(exc).__name__}"
                audit = self._record(rec, Outcome.DEAD_LETTERED, True, reason=reason)
                await self._dead_letter(
                    rec.lease,
                    rec.source,
                    rec.key,
                    rec.value,
                    rec.event,
                    audit,
                    code="internal",
                    reason=reason,
                    headers=Header.of(rec.headers),
                )
            finally:
                tracing.finish(ctx)

        return job

    def _judge(self, rec: _Record, state: OrderState | None) -> Decision:
        event = rec.event
        return judge(
            state,
            event.event_id,
            rec.source.offset,
            status_after(event),
            str(event.type),
            event.occurred_at.timestamp(),
        )

    def _begin(self, rec: _Record, state: OrderState | None, mark: Mark) -> OrderState:
        return begin(
            state, mark, id_limit=self._id_limit, occurred_at=rec.event.occurred_at.timestamp()
        )

    async def _not_sent(
        self, rec: _Record, state: OrderState | None, decision: Decision, ended: list[bool]
    ) -> None:
        """A duplicate or a rejection: the terminal record, and the state written back."""
        if state is not None:
            await self._write_behind(rec.key, state)  # heal a changelog that missed a write
        outcome = Outcome.DUPLICATE if decision.verdict is Verdict.DUPLICATE else Outcome.REJECTED
        await self._emit(rec.lease, self._record(rec, outcome, True, reason=decision.reason))
        ended[0] = True

    async def _run_order(self, rec: _Record, ended: list[bool]) -> None:
        rec.lease.check()
        async with self._locks.hold(rec.key):
            state = self._store.get(rec.key)
            decision = self._judge(rec, state)
            if decision.verdict is Verdict.DUPLICATE:
                await self._not_sent(rec, state, decision, ended)
                return
            if state is not None and state.parked is not None:
                # Behind a parked event of its order: it follows it to the parking topic,
                # where it is judged in order once the earlier one has ended.
                await self._park(rec, "an earlier event of this order is parked", ended)
                return
            if decision.verdict is not Verdict.SEND:
                await self._not_sent(rec, state, decision, ended)
                return
            breaker = self._breakers[rec.request.limit_key]
            parks = self._outage_policy(rec.request) == "park" or breaker.paused
            if parks and not breaker.closed:
                reason = f"target {rec.request.limit_key} is down (circuit open)"
                await self._park(rec, reason, ended)
                return
            await self._send(rec, state, decision, ended)

    async def _send(
        self, rec: _Record, state: OrderState | None, decision: Decision, ended: list[bool]
    ) -> None:
        lease, key, request = rec.lease, rec.key, rec.request
        mark = decision.mark
        # The intent is on the changelog before the request leaves: whoever replays
        # this order after a crash knows the vendor may have this event.
        await self._save(lease, key, self._begin(rec, state, mark))
        if decision.resend:
            # The one decision a terminal record would not show: this is a second try.
            reason = "sent before, not confirmed: sending it again"
            await self._emit(lease, self._record(rec, Outcome.ACCEPTED, False, reason=reason))
        policy_name = self._outage_policy(request)
        breaker = self._breakers[request.limit_key]
        last_latency_ms = [0.0]
        maybe_arrived = [False]

        async def on_attempt(report: AttemptReport) -> None:
            last_latency_ms[0] = report.latency_ms
            error = report.error
            _observe(breaker, error)
            if error is None:
                return
            maybe_arrived[0] = maybe_arrived[0] or error.may_have_arrived
            failed = self._failed(
                rec, error, report.latency_ms, report.will_retry, attempt=report.attempt
            )
            await self._emit(lease, failed)
            if report.will_retry:
                lease.check(strict=True)  # revoked: no backoff, no retry

        async def before_attempt(deadline: float) -> bool:
            # Judged again before every attempt: only this job may have moved the
            # order, and only while its partition is ours.
            lease.check(strict=True)
            again = self._judge(rec, self._store.get(key))
            if again.verdict is not Verdict.SEND:
                raise _Overtaken(again)
            if (policy_name == "park" or breaker.paused) and not breaker.closed:
                raise _Park
            if policy_name == "stop":
                await self._await_breaker(lease, breaker)
            if self._limiter is None:
                return True
            allowed = await self._limiter.acquire(request, deadline=deadline)
            lease.check(strict=True)
            return allowed

        try:
            outcome = await deliver(
                request,
                self._clients[request.vendor],
                self._endless if policy_name == "stop" else self._policy,
                on_attempt=on_attempt,
                http_slots=self._http_slots,
                before_attempt=before_attempt,
                on_wire=lease.on_wire,
                on_rate_limited=self._limiter.on_rate_limited if self._limiter else None,
            )
        except _Overtaken as overtaken:
            await self._not_sent(rec, self._store.get(key), overtaken.decision, ended)
            return
        except _Park:
            after = abandon(self._store.get(key), mark, may_have_arrived=maybe_arrived[0])
            await self._save(lease, key, after)
            await self._park(rec, f"target {request.limit_key} is down (circuit open)", ended)
            return
        # Revoked while the call was on the wire: the result is still recorded (the
        # revoke waits for it), so the next owner finds it instead of sending again.
        lease.check()
        if (
            not outcome.ok
            and policy_name == "park"
            and isinstance(outcome.error, RetryableDeliveryError)
        ):
            after = abandon(self._store.get(key), mark, may_have_arrived=outcome.may_have_arrived)
            await self._save(lease, key, after)
            await self._park(rec, f"retries ran out: {outcome.error.message}", ended)
            return
        await self._finish(rec, mark, outcome, last_latency_ms[0], ended)

    async def _finish(
        self,
        rec: _Record,
        mark: Mark,
        outcome: DeliveryOutcome,
        latency_ms: float,
        ended: list[bool],
        *,
        leave_parking: bool = False,
    ) -> None:
        lease, key = rec.lease, rec.key
        if outcome.ok:
            assert outcome.result is not None
            delivered = self._record(
                rec,
                Outcome.DELIVERED,
                True,
                http_status=outcome.result.http_status,
                latency_ms=round(latency_ms, 3),
                attempt=outcome.attempts,
                warnings=list(outcome.result.warnings),
            )
            # Audit first: if the worker dies before the state write, the replay sends
            # again (a harmless repeat) instead of calling a delivered event a duplicate.
            await self._emit(lease, delivered)
            ended[0] = True
            after: OrderState | None = confirm(self._store.get(key), mark, id_limit=self._id_limit)
        else:
            error = outcome.error
            assert error is not None
            await self._give_up(rec, error, outcome.attempts)
            ended[0] = True
            # What the vendor has decides what later events may do: a refused final
            # event leaves the order open there, so a later cancellation is legitimate.
            after = abandon(self._store.get(key), mark, may_have_arrived=outcome.may_have_arrived)
        if leave_parking:
            after = unpark(after, rec.source.offset)
        # Queued, not waited for: the record is acknowledged after this, and Faust
        # flushes its producer before it commits (and when a revoke ends); if the worker
        # dies first, the pending intent makes the replay send the same event again.
        lease.check()
        if after is not None:
            await self._write_behind(key, after)

    async def _give_up(self, rec: _Record, error: DeliveryError, attempts: int) -> None:
        code = "permanent" if isinstance(error, PermanentDeliveryError) else "retries_exhausted"
        reason = (
            f"vendor refused the request: {error.message}"
            if code == "permanent"
            else f"gave up after {attempts} attempts: {error.message}"
        )
        failure = {"http_status": error.http_status, "vendor_code": error.vendor_code}
        audit = self._record(
            rec, Outcome.DEAD_LETTERED, True, reason=reason, attempt=attempts, **failure
        )
        await self._dead_letter(
            rec.lease,
            rec.source,
            rec.key,
            rec.value,
            rec.event,
            audit,
            code=code,
            reason=reason,
            last_error=error.message,
            attempts=attempts,
            headers=Header.of(rec.headers),
            **failure,
        )

    # -- parking ---------------------------------------------------------------------------
    async def _park(self, rec: _Record, reason: str, ended: list[bool]) -> None:
        """Move the event to the parking topic; the input record is then done."""
        lease, key = rec.lease, rec.key
        # Marked first: from here on the order's later events park behind this one.
        await self._save(lease, key, park(self._store.get(key), rec.source.offset))
        origin = rec.source.model_dump_json().encode()
        headers = [
            (PARKED_FROM_HEADER, origin),
            (PARKED_AT_HEADER, repr(time.time()).encode()),
            # The input's own headers go along (its trace context among them), so a
            # dead letter of the parked event keeps them and a replay restores them.
            *rec.headers,
        ]
        value = rec.value or b""
        await self._durably(
            lease, lambda: self._sinks.park(key, value, rec.source.partition, headers), "parking"
        )
        await self._emit(lease, self._record(rec, Outcome.PARKED, False, reason=reason))

    async def _await_breaker(self, lease: Lease, breaker: Breaker) -> None:
        while not breaker.try_probe():
            lease.check(strict=True)
            wait = breaker.wait_s()
            await breaker.changed(min(wait, 1.0) if wait > 0 else 1.0)

    def _expired(self, parked_at: float | None) -> bool:
        # Measured from parking, not from occurred_at: a producer backfilling old
        # events (or with a skewed clock) must not see them expire on the first outage.
        if parked_at is None:
            return False
        return time.time() - parked_at > self._settings.delivery.max_event_age_s

    async def _run_parked(self, rec: _Record, ended: list[bool]) -> None:
        """A parked event: wait for its target, then one attempt at a time, in order.

        Nothing here dead-letters a retryable failure: the event waits for the
        target's breaker instead. It ends delivered, refused (dead letter), too
        old (dead letter ``expired``), a duplicate, or rejected by the guard.
        """
        lease, key, request = rec.lease, rec.key, rec.request
        breaker = self._breakers[request.limit_key]
        while True:
            lease.check(strict=True)
            if self._expired(rec.parked_at):
                await self._expire(rec, ended)
                return
            await self._await_breaker(lease, breaker)
            if self._limiter is not None:
                await self._limiter.acquire(request)
                lease.check(strict=True)
            async with self._locks.hold(key):
                state = self._store.get(key)
                decision = self._judge(rec, state)
                if decision.verdict is not Verdict.SEND:
                    breaker.on_neutral()
                    await self._not_sent(rec, unpark(state, rec.source.offset), decision, ended)
                    return
                mark = decision.mark
                await self._save(lease, key, self._begin(rec, state, mark))
                latency = [0.0]

                async def on_attempt(report: AttemptReport, latency: list[float] = latency) -> None:
                    latency[0] = report.latency_ms

                outcome = await deliver(
                    request,
                    self._clients[request.vendor],
                    self._once,
                    on_attempt=on_attempt,
                    http_slots=self._http_slots,
                    on_wire=lease.on_wire,
                )
                lease.check()
                error = outcome.error
                _observe(breaker, error)
                if isinstance(error, RetryableDeliveryError):
                    failed = self._failed(rec, error, latency[0], True)
                    after = abandon(
                        self._store.get(key), mark, may_have_arrived=outcome.may_have_arrived
                    )
                    await self._save(lease, key, after)
                    await self._emit(lease, failed)
                    continue
                await self._finish(rec, mark, outcome, latency[0], ended, leave_parking=True)
                return

    async def _expire(self, rec: _Record, ended: list[bool]) -> None:
        max_age = self._settings.delivery.max_event_age_s
        reason = f"parked longer than the maximum event age ({max_age:.0f} s)"
        audit = self._record(rec, Outcome.DEAD_LETTERED, True, reason=reason)
        async with self._locks.hold(rec.key):
            await self._dead_letter(
                rec.lease,
                rec.source,
                rec.key,
                rec.value,
                rec.event,
                audit,
                code="expired",
                reason=reason,
                headers=Header.of(rec.headers),
            )
            ended[0] = True
            await self._save(
                rec.lease, rec.key, unpark(self._store.get(rec.key), rec.source.offset)
            )


def _observe(breaker: Breaker, error: DeliveryError | None) -> None:
    """What one attempt says of its target: only retryable failures count against it."""
    if error is None:
        breaker.on_success()
    elif isinstance(error, RetryableDeliveryError):
        breaker.on_failure()
    else:
        breaker.on_neutral()


def _size(key: bytes | None, value: bytes | None) -> int:
    # Raw bytes plus the parsed event and the request body: about three copies.
    return 3 * (len(value or b"") + len(key or b""))


def _input_headers(headers: Any) -> tuple[tuple[str, bytes], ...]:
    """A record's headers as the producer wrote them: without the parking topic's own."""
    if not headers:
        return ()
    items = headers.items() if isinstance(headers, dict) else headers
    return tuple(
        (str(name), b"" if raw is None else bytes(raw))
        for name, raw in items
        if name not in (PARKED_FROM_HEADER, PARKED_AT_HEADER)
    )


def _origin(headers: list[tuple[str, bytes]] | None) -> tuple[SourceRef | None, float | None]:
    """The input record a parked one came from, and when it was parked."""
    source: SourceRef | None = None
    since: float | None = None
    for name, raw in headers or ():
        try:
            if name == PARKED_FROM_HEADER:
                source = SourceRef.model_validate(json.loads(raw))
            elif name == PARKED_AT_HEADER:
                since = float(raw)
        except ValueError:
            logger.warning("parked record with an unreadable %s header", name)
    return source, since
