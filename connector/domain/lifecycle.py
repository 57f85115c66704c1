"""Per-order lifecycle rules, as pure functions on a small immutable state.

The one rule: **the vendor only ever moves forward.** An order is OPEN until
it is COMPLETED or CANCELLED; a final order takes content updates with the
same final status (both vendors accept a result sent again) but never reopens
and never flips to the other final status. And one order's events reach the
vendor in the order they sit in Kafka: an event older than one the vendor
*may* already have is never sent.

Every decision is made at send time, against what the vendor may have:

* ``confirmed`` is the newest event the vendor acknowledged, and ``status``
  the status it confirmed;
* ``pending`` is a send that *may* have reached the vendor but is not
  confirmed: recorded (durably, by the caller) before the call, so that a
  worker killed at any instant leaves a trace of what may be at the vendor.
  A definite refusal (the vendor answered with an error) clears it; an
  ambiguous failure (a timeout, a dropped connection) keeps it, because the
  request may have been applied.

An event's age is its *sequence*: the partition offset at which this order
first tried to send it. A copy of the same event published again (a producer
retry, an outbox re-publish, ``connector dlq replay``) keeps its first
sequence, so it stays as old as it was. Kombo's result ``PUT`` and Comeet's
status ``POST`` carry the whole current state, so after a crash only the
newest event needs to go out again; older ones are *superseded*.

Event ids are remembered per order, bounded (oldest forgotten first). An id
forgotten is new again: it is judged by the status rules alone.

No I/O here: :func:`judge` decides, :func:`begin`, :func:`confirm` and
:func:`abandon` return new states, and the caller persists them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, assert_never

import orjson

from connector.domain.events import (
    Event,
    EventType,
    OrderCancelled,
    OrderCompleted,
    OrderOpened,
    OrderProgress,
    PackagesSet,
)

__all__ = [
    "Decision",
    "Mark",
    "OrderState",
    "OrderStatus",
    "Verdict",
    "abandon",
    "begin",
    "confirm",
    "decode_state",
    "encode_state",
    "judge",
    "park",
    "relocate",
    "status_after",
    "unpark",
]


class OrderStatus(StrEnum):
    OPEN = "OPEN"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self is not OrderStatus.OPEN


@dataclass(frozen=True, slots=True)
class Mark:
    """One event as far as the vendor is concerned: its id, its age and its status."""

    event_id: str
    seq: int
    status: OrderStatus | None  # None: outside the lifecycle (a package list)


@dataclass(frozen=True, slots=True)
class OrderState:
    """What the table holds per order key."""

    status: OrderStatus = OrderStatus.OPEN  # confirmed by the vendor
    confirmed: Mark | None = None
    pending: Mark | None = None
    # An earlier send of the pending event may have arrived (it timed out, or the
    # worker died during it): a later definite refusal of a resend proves nothing.
    uncertain: bool = False
    # An older send whose fate is unknown, kept when a newer one starts: the vendor
    # may still have it, so it still blocks older events and status changes.
    maybe: Mark | None = None
    # The offset of the newest record of this order moved to the parking topic and
    # not yet ended there: while set, every later event of the order parks behind it.
    parked: int | None = None
    # Once ids have been forgotten, an unknown id may be an old event published again.
    # ``horizon`` (the newest occurred_at sent, epoch seconds) then dates it: one that
    # happened before what the vendor may have is superseded.
    forgot: bool = False
    horizon: float | None = None
    # (event id, first sequence, delivered) for the most recent ids, oldest first.
    ids: tuple[tuple[str, int, bool], ...] = ()

    def seq_of(self, event_id: str) -> int | None:
        for known, seq, _ in self.ids:
            if known == event_id:
                return seq
        return None

    def delivered(self, event_id: str) -> bool:
        return any(known == event_id and done for known, _, done in self.ids)

    @property
    def newest(self) -> Mark | None:
        """The newest event the vendor has or may have."""
        marks = [m for m in (self.pending, self.maybe, self.confirmed) if m is not None]
        return max(marks, key=lambda m: m.seq) if marks else None

    def possible_status(self, exclude: str | None = None) -> tuple[OrderStatus, Mark | None]:
        """The most advanced status the vendor may have, and the unconfirmed send behind it.

        An unconfirmed final send counts: statuses only move forward, so if it did
        arrive the vendor is final. ``exclude`` skips a pending send of that event.
        """
        if not self.status.is_final:
            for mark in (self.pending, self.maybe):
                if (
                    mark is not None
                    and mark.event_id != exclude
                    and mark.status is not None
                    and mark.status.is_final
                ):
                    return mark.status, mark
        return self.status, None


class Verdict(StrEnum):
    SEND = "send"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    mark: Mark  # the event being judged, with its sequence
    reason: str = ""
    resend: bool = False  # tried before, never confirmed: the same content goes again


def status_after(event: Event) -> OrderStatus | None:
    """The status an event asks for; ``None`` for events outside the lifecycle.

    Exhaustive (mypy checks the ``assert_never``): a new event type must say its status
    here; an unknown one raises, it never counts as OPEN.
    """
    match event:
        case OrderCompleted():
            return OrderStatus.COMPLETED
        case OrderCancelled():
            return OrderStatus.CANCELLED
        case PackagesSet():
            return None
        case OrderOpened() | OrderProgress():
            return OrderStatus.OPEN
        case _:
            assert_never(event)


def judge(
    state: OrderState | None,
    event_id: str,
    offset: int,
    wanted: OrderStatus | None,
    event_type: str = "",
    occurred_at: float | None = None,
) -> Decision:
    """Decide whether one event may be sent now. Pure; never raises.

    ``offset`` is the record's offset: the event's sequence unless the order
    saw this event id before. ``occurred_at`` (epoch seconds) dates an id the
    order may have forgotten.
    """
    state = state or OrderState()
    first = state.seq_of(event_id)
    mark = Mark(event_id, offset if first is None else first, wanted)
    confirmed = state.confirmed
    if state.delivered(event_id) or (confirmed is not None and confirmed.event_id == event_id):
        return Decision(Verdict.DUPLICATE, mark, "event id already delivered")
    if (
        first is None
        and state.forgot
        and occurred_at is not None
        and state.horizon is not None
        and occurred_at < state.horizon
    ):
        reason = (
            "superseded: it happened before events the vendor may have "
            "(an old event published again; its id is no longer remembered)"
        )
        return Decision(Verdict.REJECTED, mark, reason)
    newest = state.newest
    if newest is not None and newest.event_id != event_id and newest.seq > mark.seq:
        how = "already has" if newest is confirmed else "may already have"
        reason = f"superseded: the vendor {how} the newer event {newest.event_id}"
        return Decision(Verdict.REJECTED, mark, reason)
    resend = first is not None  # tried before, never confirmed
    if wanted is not None:
        possible, unconfirmed = state.possible_status(exclude=event_id)
        if possible.is_final and wanted is not possible:
            where = (
                f"may be {possible} at the vendor (unconfirmed send of event "
                f"{unconfirmed.event_id})"
                if unconfirmed is not None
                else f"is {possible} at the vendor"
            )
            if wanted is OrderStatus.OPEN:
                verb = "report progress on" if event_type == EventType.PROGRESS else "reopen"
                return Decision(
                    Verdict.REJECTED, mark, f"order {where}: cannot {verb} a final order"
                )
            return Decision(
                Verdict.REJECTED, mark, f"order {where}: cannot change a final order to {wanted}"
            )
    return Decision(Verdict.SEND, mark, resend=resend)


def _remember(
    ids: tuple[tuple[str, int, bool], ...], mark: Mark, delivered: bool, limit: int
) -> tuple[tuple[str, int, bool], ...]:
    kept = tuple(entry for entry in ids if entry[0] != mark.event_id)
    return (*kept, (mark.event_id, mark.seq, delivered))[-limit:]


def _forgets(ids: tuple[tuple[str, int, bool], ...], mark: Mark, limit: int) -> bool:
    return len(ids) >= limit and all(entry[0] != mark.event_id for entry in ids)


def begin(
    state: OrderState | None,
    mark: Mark,
    *,
    id_limit: int = 64,
    occurred_at: float | None = None,
) -> OrderState:
    """Record the intent to send ``mark``: from now on the vendor may have it."""
    state = state or OrderState()
    horizon = state.horizon
    if occurred_at is not None and (horizon is None or occurred_at > horizon):
        horizon = occurred_at
    # A pending send found here has an unknown fate (a timeout, or a worker that
    # died during it). The same event: its resend inherits the doubt. Another,
    # older one: the vendor may still have it.
    previous = state.pending
    again = previous is not None and previous.event_id == mark.event_id
    maybe = state.maybe
    if previous is not None and not again and (maybe is None or previous.seq > maybe.seq):
        maybe = previous
    return replace(
        state,
        pending=mark,
        uncertain=again,
        maybe=maybe,
        forgot=state.forgot or _forgets(state.ids, mark, id_limit),
        horizon=horizon,
        ids=_remember(state.ids, mark, False, id_limit),
    )


def confirm(state: OrderState | None, mark: Mark, *, id_limit: int = 64) -> OrderState:
    """The vendor acknowledged ``mark``.

    Monotonic: a confirmation never lowers what is known, even if a slower,
    older call is confirmed after a newer one (which the per-order serial
    sending rules out, but the state does not rely on it).
    """
    state = state or OrderState()
    newer = state.confirmed if state.confirmed and state.confirmed.seq > mark.seq else mark
    status = state.status
    if not status.is_final and mark.status is not None:
        status = mark.status
    pending = state.pending
    if pending is not None and (pending.event_id == mark.event_id or pending.seq <= newer.seq):
        pending = None
    maybe = state.maybe if state.maybe is not None and state.maybe.seq > newer.seq else None
    return replace(
        state,
        status=status,
        confirmed=newer,
        pending=pending,
        uncertain=state.uncertain if pending is not None else False,
        maybe=maybe,
        forgot=state.forgot or _forgets(state.ids, mark, id_limit),
        ids=_remember(state.ids, mark, True, id_limit),
    )


def abandon(state: OrderState | None, mark: Mark, *, may_have_arrived: bool) -> OrderState:
    """A send of ``mark`` failed for good.

    When the vendor answered every attempt with an error the request did not
    apply: the pending mark goes, and the order's status stays what the vendor
    confirmed, so later legitimate events are judged against that. When any
    attempt may have arrived (a timeout, a dropped connection, an earlier send
    whose fate a crash hid) the mark stays.
    """
    state = state or OrderState()
    if state.pending is None or state.pending.event_id != mark.event_id:
        return state
    if may_have_arrived or state.uncertain:
        return replace(state, uncertain=True)
    return replace(state, pending=None, uncertain=False)


def park(state: OrderState | None, offset: int) -> OrderState:
    """The record at ``offset`` moved to the parking topic; later ones follow it there."""
    state = state or OrderState()
    newest = offset if state.parked is None else max(state.parked, offset)
    return replace(state, parked=newest)


def unpark(state: OrderState | None, offset: int) -> OrderState | None:
    """The parked record at ``offset`` ended; the order leaves parking with its newest one."""
    if state is None or state.parked is None or state.parked > offset:
        return state
    return replace(state, parked=None)


def relocate(state: OrderState, shift: int) -> OrderState:
    """The state of an order whose events move to another partition (``connector topics
    migrate``): every sequence shifted by ``shift``, the parked marker dropped.

    Sequences are offsets of the order's input partition, compared with the offsets of
    its later events (an older event is superseded). In the new partition those start
    at its end offset, which may be far below the old partition's: unshifted, the next
    legitimate event would look older than what the vendor has and be rejected. The
    caller shifts by ``new end - old end``, so the order's past sits just below the new
    partition's next offset, in the same order. ``parked`` is an offset of the old
    parking partition, meaningless in the new one (an event parked behind it would wait
    for an offset that never ends there); the migration runs only once the parking topic
    is drained, so what it marked has ended.
    """

    def moved(mark: Mark | None) -> Mark | None:
        return None if mark is None else replace(mark, seq=mark.seq + shift)

    return replace(
        state,
        confirmed=moved(state.confirmed),
        pending=moved(state.pending),
        maybe=moved(state.maybe),
        parked=None,
        ids=tuple((event_id, seq + shift, done) for event_id, seq, done in state.ids),
    )


# -- encoding -------------------------------------------------------------------------------
# A compact JSON document; decoding also reads the first version's pydantic layout.


def _mark_json(mark: Mark | None) -> list[Any] | None:
    if mark is None:
        return None
    return [mark.event_id, mark.seq, mark.status.value if mark.status else None]


def _mark(raw: Any) -> Mark | None:
    if not raw:
        return None
    event_id, seq, status = raw
    return Mark(str(event_id), int(seq), OrderStatus(status) if status else None)


def encode_state(state: OrderState) -> bytes:
    doc = {
        "v": 2,
        "s": state.status.value,
        "c": _mark_json(state.confirmed),
        "p": _mark_json(state.pending),
        "u": 1 if state.uncertain else 0,
        "m": _mark_json(state.maybe),
        "k": state.parked,
        "f": 1 if state.forgot else 0,
        "h": state.horizon,
        "i": [[event_id, seq, 1 if done else 0] for event_id, seq, done in state.ids],
    }
    return orjson.dumps(doc)


def decode_state(raw: bytes | str | dict[str, Any] | None) -> OrderState | None:
    if raw is None:
        return None
    doc = raw if isinstance(raw, dict) else orjson.loads(raw)
    if doc.get("v") == 2:
        return OrderState(
            status=OrderStatus(doc["s"]),
            confirmed=_mark(doc.get("c")),
            pending=_mark(doc.get("p")),
            uncertain=bool(doc.get("u")),
            maybe=_mark(doc.get("m")),
            parked=doc.get("k"),
            forgot=bool(doc.get("f")),
            horizon=doc.get("h"),
            ids=tuple((str(i), int(s), bool(d)) for i, s, d in doc.get("i", ())),
        )
    return _decode_v1(doc)


def _decode_v1(doc: dict[str, Any]) -> OrderState:
    """The first version kept accepted and delivered ids and the confirmed final status.

    Its ids carry no offsets. The last delivered id becomes the confirmed mark
    (sequence -1) and every other id is older (-2), so replaying one of them
    after it is superseded; an accepted final status beyond the confirmed one
    was an unconfirmed send: it stays possible, and that event may go again.
    """
    confirmed_status = OrderStatus(doc.get("delivered_status", "OPEN"))
    accepted_status = OrderStatus(doc.get("status", "OPEN"))
    delivered = list(doc.get("delivered", ()))
    final_id = doc.get("final_event_id")
    known = dict.fromkeys([*doc.get("accepted", ()), *delivered])
    last = delivered[-1] if delivered else None
    confirmed = Mark(str(last), -1, None) if last is not None else None
    ids = tuple((str(i), -1 if i in (last, final_id) else -2, i in delivered) for i in known)
    pending = None
    if accepted_status.is_final and accepted_status is not confirmed_status:
        pending = Mark(final_id or "?", -1, accepted_status)
    return OrderState(
        status=confirmed_status,
        confirmed=confirmed,
        pending=pending,
        uncertain=pending is not None,
        ids=ids,
    )
