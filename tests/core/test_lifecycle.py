"""The lifecycle guard: OPEN -> COMPLETED | CANCELLED, never back, never across."""

from __future__ import annotations

import pytest

from connector.events import event_adapter
from connector.lifecycle import OrderState, OrderStatus, Verdict, decide, mark_delivered
from tests.factories import make_event, target


def ev(kind: str, tgt: dict, **kw):
    return event_adapter.validate_python(make_event(kind, tgt, **kw))


@pytest.fixture
def tgt() -> dict:
    return target("comeet")


def run(events, state=None, *, deliver=True):
    verdicts = []
    for event in events:
        decision = decide(state, event)
        verdicts.append(decision.verdict)
        state = decision.state
        if deliver and decision.verdict is Verdict.ACCEPTED:
            state = mark_delivered(state, event.event_id)
    return verdicts, state


def test_happy_path(tgt) -> None:
    verdicts, state = run([ev("opened", tgt), ev("progress", tgt), ev("completed", tgt)])
    assert verdicts == [Verdict.ACCEPTED] * 3
    assert state.status is OrderStatus.COMPLETED


@pytest.mark.parametrize("late", ["opened", "progress", "cancelled"])
def test_completed_order_never_reopens_or_flips(tgt, late: str) -> None:
    verdicts, state = run([ev("completed", tgt), ev(late, tgt)])
    assert verdicts == [Verdict.ACCEPTED, Verdict.REJECTED]
    assert state.status is OrderStatus.COMPLETED


@pytest.mark.parametrize("late", ["opened", "progress", "completed"])
def test_cancelled_order_never_reopens_or_flips(tgt, late: str) -> None:
    verdicts, state = run([ev("cancelled", tgt), ev(late, tgt)])
    assert verdicts == [Verdict.ACCEPTED, Verdict.REJECTED]
    assert state.status is OrderStatus.CANCELLED


def test_same_final_status_again_is_a_content_update(tgt) -> None:
    verdicts, _ = run([ev("completed", tgt), ev("completed", tgt, summary="Re-graded.")])
    assert verdicts == [Verdict.ACCEPTED, Verdict.ACCEPTED]


def test_rejection_reason_is_specific(tgt) -> None:
    _, state = run([ev("completed", tgt)])
    decision = decide(state, ev("progress", tgt))
    assert decision.reason == "order is COMPLETED: cannot report progress on a final order"
    decision = decide(state, ev("cancelled", tgt))
    assert decision.reason == "order is COMPLETED: cannot change a final order to CANCELLED"


def test_delivered_event_id_is_a_duplicate(tgt) -> None:
    done = ev("completed", tgt)
    verdicts, _ = run([done, done])
    assert verdicts == [Verdict.ACCEPTED, Verdict.DUPLICATE]


def test_undelivered_final_event_is_redelivered_not_rejected(tgt) -> None:
    final = ev("completed", tgt)
    first = decide(None, final)
    assert first.verdict is Verdict.ACCEPTED and not first.redelivery
    # Its delivery failed (dead-lettered); a replay of the same event comes back.
    again = decide(first.state, final)
    assert again.verdict is Verdict.ACCEPTED
    assert again.redelivery
    assert again.state.accepted.count(final.event_id) == 1


def test_crash_replay_redelivers_events_accepted_before_the_final_one(tgt) -> None:
    # Before the crash: opened and completed were accepted, neither delivered.
    opened, completed = ev("opened", tgt), ev("completed", tgt)
    state = decide(None, opened).state
    state = decide(state, completed).state
    assert state.status is OrderStatus.COMPLETED
    # After the crash the topic is replayed from the committed offset.
    replay_opened = decide(state, opened)
    assert replay_opened.verdict is Verdict.ACCEPTED
    assert replay_opened.redelivery
    assert replay_opened.state == state  # the status stays COMPLETED
    assert decide(state, completed).verdict is Verdict.ACCEPTED
    # A genuinely new reopen is still refused.
    assert decide(state, ev("opened", tgt)).verdict is Verdict.REJECTED


def test_replayed_interim_event_is_superseded_once_the_final_is_delivered(tgt) -> None:
    progress, completed = ev("progress", tgt), ev("completed", tgt)
    state = decide(None, progress).state  # accepted, never delivered
    state = decide(state, completed).state
    state = mark_delivered(state, completed.event_id, status=OrderStatus.COMPLETED)
    decision = decide(state, progress)
    assert decision.verdict is Verdict.REJECTED
    assert decision.reason == "superseded: the vendor already has the order as COMPLETED"


def test_event_id_memory_is_bounded(tgt) -> None:
    state = OrderState()
    for _ in range(10):
        event = ev("progress", tgt)
        state = mark_delivered(decide(state, event, id_limit=4).state, event.event_id, id_limit=4)
    assert len(state.accepted) == 4 and len(state.delivered) == 4


def test_packages_have_no_lifecycle() -> None:
    packages = ev("packages", target("kombo"))
    verdicts, state = run([packages, ev("packages", target("kombo"))])
    assert verdicts == [Verdict.ACCEPTED, Verdict.ACCEPTED]
    assert state.status is OrderStatus.OPEN
