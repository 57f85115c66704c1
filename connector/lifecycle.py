"""Per-order lifecycle rules, as pure functions on plain models.

An order is OPEN until it is COMPLETED or CANCELLED (OPEN is implicit for an
order never seen). Both vendors accept a result sent again, so a final order
takes *content updates with the same final status*; it never reopens and never
flips to the other final state. Progress is only meaningful while OPEN.

Two sets of event ids are kept apart:

* ``accepted``: events the guard let through (the order's status follows them);
* ``delivered``: events the vendor confirmed.

An event id in ``delivered`` is a duplicate and is not sent again. An id that
is accepted but not delivered (its delivery failed, or the worker crashed
before it finished) is *not* a duplicate: replaying it must deliver it, so the
guard recognises its own undelivered event instead of judging it again against
a status that later events set. After a crash the topic is replayed from the
last committed offset: an ``order.opened`` accepted before the order's
``order.completed`` comes back after the table already says COMPLETED, and it
must still go out, first, ahead of the completion it preceded. Only when the
vendor has already confirmed a final status (``delivered_status``) is such an
interim event stale: the vendor would refuse it, so it is rejected as
superseded. Both id sets are bounded (oldest forgotten first); an id forgotten
is judged by the status rules alone.

The module has no I/O: :func:`decide` and :func:`mark_delivered` return new
states and the caller persists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from connector.events import (
    Event,
    EventType,
    OrderCancelled,
    OrderCompleted,
    PackagesSet,
)

__all__ = [
    "Decision",
    "OrderState",
    "OrderStatus",
    "Verdict",
    "decide",
    "is_delivered",
    "mark_delivered",
    "status_after",
]


class OrderStatus(StrEnum):
    OPEN = "OPEN"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self is not OrderStatus.OPEN


class OrderState(BaseModel):
    """What the table holds per order key (JSON in the changelog)."""

    model_config = ConfigDict(frozen=True)

    status: OrderStatus = OrderStatus.OPEN
    accepted: tuple[str, ...] = Field(default=())
    delivered: tuple[str, ...] = Field(default=())
    final_event_id: str | None = None
    # The status the vendor has confirmed (set by delivered final events).
    delivered_status: OrderStatus = OrderStatus.OPEN


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    state: OrderState
    reason: str = ""
    redelivery: bool = False  # accepted before, never confirmed delivered


def status_after(event: Event) -> OrderStatus | None:
    """The status an event asks for; ``None`` for events outside the lifecycle."""
    if isinstance(event, OrderCompleted):
        return OrderStatus.COMPLETED
    if isinstance(event, OrderCancelled):
        return OrderStatus.CANCELLED
    if isinstance(event, PackagesSet):
        return None
    return OrderStatus.OPEN


def _remember(ids: tuple[str, ...], event_id: str, limit: int) -> tuple[str, ...]:
    if event_id in ids:
        return ids
    return (*ids, event_id)[-limit:]


def _transition_error(current: OrderStatus, event: Event, wanted: OrderStatus) -> str | None:
    if not current.is_final or current is wanted:
        return None
    if wanted is OrderStatus.OPEN:
        verb = "report progress on" if event.type is EventType.PROGRESS else "reopen"
        return f"order is {current}: cannot {verb} a final order"
    return f"order is {current}: cannot change a final order to {wanted}"


def decide(state: OrderState | None, event: Event, *, id_limit: int = 64) -> Decision:
    """Judge one event against the order's state. Pure; never raises."""
    state = state or OrderState()
    if event.event_id in state.delivered:
        return Decision(Verdict.DUPLICATE, state, "event id already delivered")
    redelivery = event.event_id in state.accepted
    wanted = status_after(event)
    if redelivery:
        confirmed = state.delivered_status
        if wanted is not None and confirmed.is_final and wanted is not confirmed:
            reason = f"superseded: the vendor already has the order as {confirmed}"
            return Decision(Verdict.REJECTED, state, reason, redelivery=True)
        # Accepted before: its transition was judged then; the status stays as it is.
        return Decision(Verdict.ACCEPTED, state, redelivery=True)
    if wanted is not None:
        error = _transition_error(state.status, event, wanted)
        if error is not None:
            return Decision(Verdict.REJECTED, state, error, redelivery=redelivery)
    new_state = state.model_copy(
        update={
            "status": wanted or state.status,
            "accepted": _remember(state.accepted, event.event_id, id_limit),
            "final_event_id": (
                event.event_id
                if wanted is not None and wanted.is_final and not state.status.is_final
                else state.final_event_id
            ),
        }
    )
    return Decision(Verdict.ACCEPTED, new_state, redelivery=redelivery)


def is_delivered(state: OrderState | None, event_id: str) -> bool:
    return state is not None and event_id in state.delivered


def mark_delivered(
    state: OrderState | None,
    event_id: str,
    *,
    status: OrderStatus | None = None,
    id_limit: int = 64,
) -> OrderState:
    """Record the vendor's confirmation of one event (``status``: the status it carried)."""
    state = state or OrderState()
    update: dict[str, object] = {"delivered": _remember(state.delivered, event_id, id_limit)}
    if status is not None and status.is_final:
        update["delivered_status"] = status
    return state.model_copy(update=update)
