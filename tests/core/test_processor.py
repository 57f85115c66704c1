"""The per-record path without Kafka or HTTP: exceptions, sink failures, fencing, intent.

Narrow unit tests with in-memory stand-ins for the table, the sinks and the
vendor client; the same paths run over the real broker in tests/e2e.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from connector.domain.audit import AuditRecord, DeadLetter, SourceRef
from connector.domain.events import parse_record
from connector.domain.lifecycle import OrderState, OrderStatus, decode_state, encode_state
from connector.errors import RetryableDeliveryError, RevokedError
from connector.pipeline import Processor
from connector.pipeline.delivery import OrderedDispatcher
from connector.pipeline.effects import Effects
from connector.pipeline.records import Job
from connector.settings import Settings
from connector.vendors import map_event
from connector.vendors.base import CallResult, VendorRequest
from tests.factories import make_event, record, target


class Store:
    """A dict; ``put`` returns a future that ``durable`` resolves (the changelog ack)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.writes: list[tuple[bytes, OrderState]] = []
        self.hold = False
        self.held: list[asyncio.Future[None]] = []

    def get(self, partition: int, key: bytes) -> OrderState | None:
        return decode_state(self.data.get(key))

    async def put(self, partition: int, key: bytes, state: OrderState) -> Awaitable[Any]:
        self.data[key] = encode_state(state)
        self.writes.append((key, state))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.hold:
            self.held.append(fut)
        else:
            fut.set_result(None)
        return fut


class Sinks:
    def __init__(self) -> None:
        self.audits: list[AuditRecord] = []
        self.letters: list[DeadLetter] = []
        self.fail_audits = 0

    async def audit(self, rec: AuditRecord) -> None:
        if self.fail_audits:
            self.fail_audits -= 1
            raise RuntimeError("broker said no")
        self.audits.append(rec)

    async def dead_letter(self, rec: DeadLetter, key: bytes | None) -> None:
        self.letters.append(rec)

    def terminal(self) -> list[AuditRecord]:
        return [r for r in self.audits if r.terminal]


class Client:
    vendor = "comeet"

    def __init__(self, behaviour: Callable[[VendorRequest], Awaitable[CallResult]]) -> None:
        self.behaviour = behaviour
        self.calls: list[VendorRequest] = []

    async def send(self, request: VendorRequest) -> CallResult:
        self.calls.append(request)
        return await self.behaviour(request)


async def ok(_: VendorRequest) -> CallResult:
    return CallResult(204)


def build(
    behaviour: Callable[[VendorRequest], Awaitable[CallResult]] = ok,
    **delivery: Any,
) -> tuple[Processor, Store, Sinks, Client, OrderedDispatcher]:
    settings = Settings(
        worker_id="w-test",
        delivery={"backoff_initial_s": 0.01, "backoff_max_s": 0.02, "max_attempts": 3, **delivery},
    )
    store, sinks, client = Store(), Sinks(), Client(behaviour)
    dispatcher = OrderedDispatcher(100)
    processor = Processor(settings, store, {"comeet": client, "kombo": client}, sinks, dispatcher)
    return processor, store, sinks, client, dispatcher


async def feed(
    processor: Processor, events: list[dict[str, Any]], acked: list[int], partition: int = 0
) -> None:
    for offset, event in enumerate(events):
        key, value = record(event)
        await processor.handle(
            SourceRef(topic="events", partition=partition, offset=offset),
            key,
            value,
            lambda o=offset: acked.append(o),
        )


async def test_an_exception_in_the_client_ends_as_a_dead_letter_not_an_ack() -> None:
    async def boom(_: VendorRequest) -> CallResult:
        "x".encode("ascii")
        raise UnicodeEncodeError("ascii", "ü", 0, 1, "ordinal not in range")

    processor, store, sinks, _, dispatcher = build(boom)
    acked: list[int] = []
    event = make_event("opened", target("comeet"))
    await feed(processor, [event], acked)
    await dispatcher.join()
    assert acked == [0]
    assert [r.outcome for r in sinks.terminal()] == ["dead_lettered"]
    assert len(sinks.letters) == 1 and "internal error" in sinks.letters[0].reason
    # The call may have gone out half-way: the guard keeps it as possibly at the vendor.
    state = store.get(0, next(iter(store.data)))
    assert state is not None and state.pending is not None


async def test_an_exception_anywhere_in_a_job_is_dead_lettered() -> None:
    processor, store, sinks, _, dispatcher = build()

    def broken(partition: int, key: bytes) -> OrderState | None:
        raise KeyError("a bug")

    store.get = broken  # type: ignore[method-assign]
    acked: list[int] = []
    await feed(processor, [make_event("opened", target("comeet"))], acked)
    await dispatcher.join()
    assert acked == [0]
    assert [r.outcome for r in sinks.terminal()] == ["dead_lettered"]
    assert sinks.letters[0].code == "internal"


async def test_a_failing_audit_sink_holds_the_ack_until_it_works() -> None:
    processor, _, sinks, _, dispatcher = build()
    sinks.fail_audits = 3
    acked: list[int] = []
    events = [make_event("opened", target("comeet")), make_event("opened", target("comeet"))]
    await feed(processor, events, acked)
    await asyncio.sleep(0.05)
    assert 0 not in acked  # not acknowledged while its records are not on the broker
    await dispatcher.join()
    assert acked == [0, 1]
    assert len(sinks.terminal()) == 2


async def test_a_sink_that_never_recovers_leaves_the_record_unacknowledged_on_revoke() -> None:
    processor, _, sinks, _, dispatcher = build()
    sinks.fail_audits = 10**9
    acked: list[int] = []
    await feed(processor, [make_event("opened", target("comeet"))], acked)
    await asyncio.sleep(0.3)
    dispatcher.revoke()
    await dispatcher.drain_revoked(1.0)
    assert acked == []
    assert dispatcher.pending == 0


async def test_the_intent_is_durable_before_the_call() -> None:
    processor, store, _, client, dispatcher = build()
    store.hold = True
    acked: list[int] = []
    await feed(processor, [make_event("completed", target("comeet"))], acked)
    await asyncio.sleep(0.05)
    assert client.calls == []  # the changelog has not confirmed the intent yet
    (key, intent), *_ = store.writes
    assert intent.pending is not None and intent.pending.status is OrderStatus.COMPLETED
    store.hold = False
    for fut in store.held:
        fut.set_result(None)
    await dispatcher.join()
    assert len(client.calls) == 1 and acked == [0]
    final = store.get(0, key)
    assert final is not None and final.status is OrderStatus.COMPLETED and final.pending is None


async def test_revoke_cancels_waiting_jobs_and_awaits_calls_on_the_wire() -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow_or_failing(request: VendorRequest) -> CallResult:
        if request.params.get("evaluation_id") == "on-wire":
            started.set()
            await release.wait()
            return CallResult(204)
        raise RetryableDeliveryError("503", http_status=503)

    processor, store, sinks, client, dispatcher = build(
        slow_or_failing, max_attempts=100, backoff_initial_s=0.05, backoff_max_s=0.05
    )
    acked: list[int] = []
    wire = make_event("opened", target("comeet", order="on-wire"))
    retrying = make_event("opened", target("comeet", order="retrying"))
    behind = make_event("progress", target("comeet", order="retrying"))
    await feed(processor, [wire, retrying, behind], acked)
    await started.wait()
    await asyncio.sleep(0.1)
    calls_before = len(client.calls)
    audits_before = len(sinks.audits)
    dispatcher.revoke()
    drain = asyncio.create_task(dispatcher.drain_revoked(5.0))
    await asyncio.sleep(0.1)
    assert not drain.done()  # the call on the wire is awaited
    release.set()
    await asyncio.wait_for(drain, 2.0)
    await asyncio.sleep(0.1)
    assert acked == []  # nothing acknowledged after the revoke
    assert len(client.calls) == calls_before  # no new request
    # The call that was on the wire has its result recorded (the revoke waited for it),
    # so the next owner finds it delivered instead of sending it again; nothing else.
    after = sinks.audits[audits_before:]
    assert [(r.outcome, r.order_key) for r in after] == [("delivered", "comeet|on-wire")]
    key = b"comeet|on-wire"
    state = store.get(0, key)
    assert state is not None and state.pending is None and state.confirmed is not None
    assert dispatcher.pending == 0


async def test_records_read_before_a_revoke_are_dropped_unacknowledged() -> None:
    processor, _, sinks, client, dispatcher = build()
    dispatcher._slots = asyncio.Semaphore(0)  # admission full: handle() waits
    acked: list[int] = []
    key, value = record(make_event("opened", target("comeet")))
    waiting = asyncio.create_task(
        processor.handle(
            SourceRef(topic="t", partition=0, offset=7), key, value, lambda: acked.append(7)
        )
    )
    await asyncio.sleep(0.05)
    dispatcher.revoke()
    dispatcher._slots.release()
    await asyncio.wait_for(waiting, 1.0)
    await dispatcher.join()
    assert acked == [] and client.calls == [] and sinks.audits == []


@pytest.mark.parametrize("copies", [1, 3])
async def test_a_replayed_copy_after_the_final_event_is_superseded(copies: int) -> None:
    processor, _, sinks, client, dispatcher = build()
    tgt = target("comeet")
    opened, completed = make_event("opened", tgt), make_event("completed", tgt)
    acked: list[int] = []
    await feed(processor, [opened, completed, *[opened] * copies], acked)
    await dispatcher.join()
    statuses = [c.body["status"] for c in client.calls]
    assert statuses == ["Assessment sent", "completed"]
    assert [r.outcome for r in sinks.terminal()] == ["delivered", "delivered"] + [
        "duplicate"
    ] * copies


async def test_a_fence_from_the_consumer_thread_stops_jobs_and_drops_stale_records() -> None:
    """Faust's consumer thread learns of a rebalance first; its fence must hold at once."""
    import threading

    gate = asyncio.Event()

    async def slow(_: VendorRequest) -> CallResult:
        await gate.wait()
        return CallResult(204)

    processor, _, _, client, dispatcher = build(slow)
    acked: list[int] = []
    tgt = target("comeet")
    first, second = make_event("opened", tgt), make_event("completed", tgt)
    k1, v1 = record(first)
    await processor.handle(
        SourceRef(topic="t", partition=0, offset=0), k1, v1, lambda: acked.append(0), 1
    )
    await asyncio.sleep(0.05)
    assert len(client.calls) == 1  # on the wire
    thread = threading.Thread(target=dispatcher.fence_generation, args=(1,))
    thread.start()
    thread.join()
    # A record of the fenced generation, read before the rebalance: dropped, unacknowledged.
    k2, v2 = record(second)
    await processor.handle(
        SourceRef(topic="t", partition=0, offset=1), k2, v2, lambda: acked.append(1), 1
    )
    await asyncio.sleep(0.05)
    assert len(client.calls) == 1
    gate.set()
    dispatcher.revoke()
    await dispatcher.drain_revoked(2.0)
    assert acked == []
    # The next generation's records are processed.
    await processor.handle(
        SourceRef(topic="t", partition=0, offset=1), k2, v2, lambda: acked.append(1), 2
    )
    await dispatcher.join()
    assert acked == [1]
    assert [c.body["status"] for c in client.calls] == ["Assessment sent", "completed"]


async def test_a_job_waiting_for_an_http_slot_sends_nothing_after_a_revoke() -> None:
    gate = asyncio.Event()

    async def slow(_: VendorRequest) -> CallResult:
        await gate.wait()
        return CallResult(204)

    processor, _, _, client, dispatcher = build(slow, max_in_flight=1)
    acked: list[int] = []
    await feed(
        processor,
        [make_event("opened", target("comeet")), make_event("opened", target("comeet"))],
        acked,
    )
    await asyncio.sleep(0.05)
    assert len(client.calls) == 1  # the second waits for the slot
    dispatcher.revoke()
    drain = asyncio.create_task(dispatcher.drain_revoked(2.0))
    await asyncio.sleep(0.05)
    gate.set()
    await drain
    await asyncio.sleep(0.05)
    assert len(client.calls) == 1 and acked == []


async def test_duplicates_and_rejections_write_the_state_back() -> None:
    """Issue 10.7: a changelog that missed a write heals on the order's next event."""
    processor, store, sinks, _, dispatcher = build()
    tgt = target("comeet")
    opened, completed = make_event("opened", tgt), make_event("completed", tgt)
    late = make_event("progress", tgt)
    acked: list[int] = []
    await feed(processor, [opened, completed, completed, late], acked)
    await dispatcher.join()
    assert [r.outcome for r in sinks.terminal()] == [
        "delivered",
        "delivered",
        "duplicate",
        "rejected",
    ]
    key = next(iter(store.data))
    writes = [state for k, state in store.writes if k == key]
    # intent + confirmation per delivered event, then one write back per later event
    assert len(writes) == 6
    assert writes[-1] == writes[-2] == writes[-3]


# -- issue 14 items 3-4: unknown fields in the audit, input headers in dead letters -----------


async def test_unknown_fields_are_listed_in_every_audit_record_of_the_event() -> None:
    processor, _, sinks, client, dispatcher = build()
    event = make_event("opened", target("comeet")) | {"schema_version": "1.9", "team": "x"}
    await feed(processor, [event], [])
    await dispatcher.join()
    assert [r.unknown_fields for r in sinks.audits] == [["team"]]
    assert "team" not in str(client.calls[0].body)


async def test_dead_letters_keep_the_input_headers_without_the_parking_ones() -> None:
    async def refused(_: VendorRequest) -> CallResult:
        from connector.errors import PermanentDeliveryError

        raise PermanentDeliveryError("gone", http_status=404)

    processor, _, sinks, _, dispatcher = build(refused)
    headers = [("traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"), ("x", b"")]
    key, value = record(make_event("completed", target("comeet")))
    await processor.handle(
        SourceRef(topic="ev", partition=0, offset=0), key, value, lambda: None, headers=headers
    )
    await processor.handle(
        SourceRef(topic="ev", partition=0, offset=1),
        key,
        b"junk",
        lambda: None,
        headers=[("x-producer", b"svc")],
    )
    await processor.handle_parked(
        SourceRef(topic="parked", partition=0, offset=0),
        key,
        b"junk",
        [("connector-parked-from", b'{"topic":"ev","partition":0,"offset":7}'), ("y", b"1")],
        lambda: None,
    )
    await dispatcher.join()
    await processor.parking_dispatcher.join()
    by_offset = {lt.source.offset: lt for lt in sinks.letters if lt.source is not None}
    assert by_offset[0].code == "permanent"
    assert [h.pair() for h in by_offset[0].headers] == headers
    assert [h.pair() for h in by_offset[1].headers] == [("x-producer", b"svc")]
    # A parked record: its origin (offset 7) and the producer's headers, not the parking ones.
    assert [h.pair() for h in by_offset[7].headers] == [("y", b"1")]


@pytest.mark.parametrize(
    ("key", "order_key"),
    [
        (b"comeet|eval-bad", "comeet|eval-bad"),
        (b"kombo|workday:ACME1|ord-42", "kombo|workday:ACME1|ord-42"),
        (b"not an order key", None),
        (b"comeet|\x1b[2J", None),  # a terminal escape never becomes an order key
        (None, None),
    ],
)
async def test_an_unreadable_record_is_audited_under_the_order_its_key_names(
    key: bytes | None, order_key: str | None
) -> None:
    processor, _, sinks, _, dispatcher = build()
    await processor.handle(SourceRef(topic="ev", partition=0, offset=0), key, b"junk", lambda: None)
    await dispatcher.join()
    assert [(r.outcome.value, r.order_key) for r in sinks.audits] == [
        ("invalid", order_key),
        ("dead_lettered", order_key),
    ]
    assert [(lt.code, lt.order_key) for lt in sinks.letters] == [("not_json", order_key)]


async def test_an_error_after_the_terminal_record_is_not_a_second_ending() -> None:
    processor, store, sinks, _, dispatcher = build()
    read = store.get

    def broken_once_ended(partition: int, key: bytes) -> OrderState | None:
        if sinks.terminal():  # the confirmation after "delivered" reads the state again
            raise KeyError("a bug after the end")
        return read(partition, key)

    store.get = broken_once_ended  # type: ignore[method-assign]
    acked: list[int] = []
    await feed(processor, [make_event("opened", target("comeet"))], acked)
    await dispatcher.join()
    assert acked == [0]
    assert [r.outcome for r in sinks.terminal()] == ["delivered"]
    assert sinks.letters == []


async def test_a_revoked_job_writes_no_state_behind() -> None:
    store, sinks = Store(), Sinks()
    dispatcher = OrderedDispatcher(10)
    lease = dispatcher.lease(0, 1)
    event = make_event("opened", target("comeet"))
    key, value = record(event)

    parsed = parse_record(key, value, max_bytes=1_000_000)
    job = Job(
        lease,
        SourceRef(topic="events", partition=0, offset=0),
        key,
        value,
        parsed,
        map_event(parsed),
    )
    dispatcher.revoke()
    with pytest.raises(RevokedError):
        await Effects(store, sinks).write_behind(job, OrderState())
    assert store.writes == []
