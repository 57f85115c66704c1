"""The lifecycle guard: the vendor only ever moves forward, through failures and crashes."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.domain.lifecycle import (
    Mark,
    OrderState,
    OrderStatus,
    Verdict,
    abandon,
    begin,
    confirm,
    decode_state,
    encode_state,
    judge,
    status_after,
)

OPEN, COMPLETED, CANCELLED = OrderStatus.OPEN, OrderStatus.COMPLETED, OrderStatus.CANCELLED


def send_ok(state: OrderState | None, event_id: str, offset: int, wanted) -> OrderState:
    decision = judge(state, event_id, offset, wanted)
    assert decision.verdict is Verdict.SEND, decision.reason
    return confirm(begin(state, decision.mark), decision.mark)


def test_happy_path() -> None:
    state = send_ok(None, "e1", 0, OPEN)
    state = send_ok(state, "e2", 1, OPEN)
    state = send_ok(state, "e3", 2, COMPLETED)
    assert state.status is COMPLETED
    assert state.confirmed == Mark("e3", 2, COMPLETED)
    assert state.pending is None


@pytest.mark.parametrize(
    ("final", "late", "words"),
    [
        (COMPLETED, OPEN, "cannot reopen"),
        (COMPLETED, CANCELLED, "cannot change a final order to CANCELLED"),
        (CANCELLED, COMPLETED, "cannot change a final order to COMPLETED"),
        (CANCELLED, OPEN, "cannot reopen"),
    ],
)
def test_final_order_never_reopens_or_flips(final, late, words) -> None:
    state = send_ok(send_ok(None, "e1", 0, OPEN), "e2", 1, final)
    decision = judge(state, "e3", 2, late)
    assert decision.verdict is Verdict.REJECTED
    assert words in decision.reason


def test_progress_on_final_order_names_progress() -> None:
    state = send_ok(None, "e1", 0, COMPLETED)
    decision = judge(state, "e2", 1, OPEN, "order.progress")
    assert "cannot report progress on a final order" in decision.reason


def test_final_order_takes_content_updates_with_the_same_status() -> None:
    state = send_ok(None, "e1", 0, COMPLETED)
    assert judge(state, "e2", 1, COMPLETED).verdict is Verdict.SEND


def test_delivered_event_is_a_duplicate_wherever_it_comes_back() -> None:
    state = send_ok(send_ok(None, "e1", 0, OPEN), "e2", 1, COMPLETED)
    assert judge(state, "e1", 7, OPEN).verdict is Verdict.DUPLICATE
    assert judge(state, "e2", 8, COMPLETED).verdict is Verdict.DUPLICATE


def test_scenario_replayed_earlier_event_after_final_was_delivered() -> None:
    """Issue 10.2: E1 opened, E2 completed, E1 again; E1 fails, E2 delivered, E1's copy waits."""
    e1 = judge(None, "E1", 0, OPEN)
    state = begin(None, e1.mark)
    state = abandon(state, e1.mark, may_have_arrived=False)  # 503s until exhausted
    state = send_ok(state, "E2", 1, COMPLETED)
    copy = judge(state, "E1", 2, OPEN)  # the copy keeps E1's first sequence
    assert copy.verdict is Verdict.REJECTED
    assert "superseded" in copy.reason and "E2" in copy.reason


def test_scenario_crash_between_vendor_answer_and_state_write() -> None:
    """Issue 10.3: the final event was sent; only its intent reached the changelog."""
    e1 = judge(None, "E1", 0, OPEN)
    state = abandon(begin(None, e1.mark), e1.mark, may_have_arrived=False)  # dead-lettered
    e2 = judge(state, "E2", 1, CANCELLED)
    durable = begin(state, e2.mark)  # the intent is on the changelog before the call
    # ... the call reached the vendor, the worker died before the confirmation write.
    replay_e1 = judge(durable, "E1", 0, OPEN)
    assert replay_e1.verdict is Verdict.REJECTED  # never OPEN after CANCELLED
    replay_e2 = judge(durable, "E2", 1, CANCELLED)
    assert replay_e2.verdict is Verdict.SEND and replay_e2.resend


def test_scenario_refused_final_event_leaves_the_order_open() -> None:
    """Issue 10.4: a dead-lettered completion does not block a later cancellation."""
    state = send_ok(None, "E1", 0, OPEN)
    e2 = judge(state, "E2", 1, COMPLETED)
    state = abandon(begin(state, e2.mark), e2.mark, may_have_arrived=False)
    assert state.status is OPEN and state.pending is None
    assert judge(state, "E3", 2, CANCELLED).verdict is Verdict.SEND


def test_ambiguous_final_send_is_treated_as_possibly_final() -> None:
    state = send_ok(None, "E1", 0, OPEN)
    e2 = judge(state, "E2", 1, COMPLETED)
    state = abandon(begin(state, e2.mark), e2.mark, may_have_arrived=True)  # timeouts
    assert state.pending == e2.mark
    flip = judge(state, "E3", 2, CANCELLED)
    assert flip.verdict is Verdict.REJECTED and "may be COMPLETED" in flip.reason
    assert judge(state, "E4", 3, OPEN).verdict is Verdict.REJECTED
    assert judge(state, "E5", 4, COMPLETED).verdict is Verdict.SEND
    assert judge(state, "E2", 9, COMPLETED).verdict is Verdict.SEND  # a replay delivers it


def test_package_lists_never_go_back_to_an_older_one() -> None:
    state = send_ok(None, "p1", 0, None)
    state = send_ok(state, "p2", 1, None)
    assert judge(state, "p1", 2, None).verdict is Verdict.DUPLICATE
    p3 = judge(state, "p3", 2, None)
    state = begin(state, p3.mark)
    old = judge(state, "p2x", 1, None)
    assert old.verdict is Verdict.REJECTED


def test_forgotten_ids_are_judged_by_the_status_rules() -> None:
    state = None
    for i in range(5):
        state = send_ok(state, f"e{i}", i, OPEN)
    state = send_ok(state, "done", 5, COMPLETED)
    small = OrderState(
        status=state.status, confirmed=state.confirmed, ids=state.ids[-2:]
    )  # e0..e2 forgotten
    assert judge(small, "e0", 10, OPEN).verdict is Verdict.REJECTED


def test_ids_are_bounded() -> None:
    state = None
    for i in range(10):
        state = (
            send_ok(state, f"e{i}", i, OPEN)
            if state is None
            else confirm(
                begin(state, Mark(f"e{i}", i, OPEN), id_limit=4), Mark(f"e{i}", i, OPEN), id_limit=4
            )
        )
    assert [i for i, _, _ in state.ids] == ["e6", "e7", "e8", "e9"]


def test_encoding_round_trips() -> None:
    state = OrderState(
        status=COMPLETED,
        confirmed=Mark("a", 3, COMPLETED),
        pending=Mark("b", 9, None),
        ids=(("a", 3, True), ("b", 9, False), ("ü|/?", 10, False)),
    )
    assert decode_state(encode_state(state)) == state
    assert decode_state(None) is None


def test_first_version_states_are_read() -> None:
    v1 = {
        "status": "COMPLETED",
        "accepted": ["e1", "e2"],
        "delivered": ["e1"],
        "final_event_id": "e2",
        "delivered_status": "OPEN",
    }
    state = decode_state(v1)
    assert state is not None
    assert state.status is OPEN
    assert state.pending == Mark("e2", -1, COMPLETED)  # accepted, not confirmed: possible
    assert judge(state, "e1", 5, OPEN).verdict is Verdict.DUPLICATE
    assert judge(state, "e3", 6, CANCELLED).verdict is Verdict.REJECTED  # no flip
    assert judge(state, "e2", 7, COMPLETED).verdict is Verdict.SEND


# -- a model of the whole path: records, calls, crashes ------------------------------------


@dataclass
class World:
    """One order's records, a vendor that applies what arrives, and a worker that may die."""

    log: list[tuple[str, OrderStatus | None]]
    durable: OrderState | None = None  # what the changelog has
    local: OrderState | None = None  # what the worker's store has
    committed: int = 0
    vendor: list[tuple[int, str, OrderStatus | None]] = field(default_factory=list)
    first: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for offset, (event_id, _) in enumerate(self.log):
            self.first.setdefault(event_id, offset)


OUTCOMES = ["ok", "refused", "timeout-applied", "timeout-lost"]


@settings(max_examples=800, deadline=None)
@given(
    log=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d", "e", "f"]),
            st.sampled_from([OPEN, COMPLETED, CANCELLED]),
        ),
        min_size=1,
        max_size=12,
    ),
    outcomes=st.lists(st.sampled_from(OUTCOMES), min_size=40, max_size=40),
    crashes=st.lists(st.integers(0, 30), max_size=3),
    keep_local=st.booleans(),
    flushes=st.lists(st.booleans(), min_size=40, max_size=40),
    id_limit=st.sampled_from([1, 2, 64]),
)
def test_the_vendor_only_moves_forward(
    log, outcomes, crashes, keep_local, flushes, id_limit
) -> None:
    # An event id always carries the same status (copies are copies).
    statuses: dict[str, OrderStatus] = {}
    log = [(i, statuses.setdefault(i, s)) for i, s in log]
    world = World(log)
    step = 0
    crash_at = sorted(set(crashes))
    position = 0
    while position < len(log) and step < 39:
        step += 1
        if crash_at and step == crash_at[0]:
            crash_at.pop(0)
            # Death at this instant: the changelog keeps what was flushed; a worker
            # with the same id keeps its local store, a new one rebuilds from the log.
            world.local = world.local if keep_local else world.durable
            position = world.committed
            continue
        event_id, wanted = log[position]
        happened = float(world.first[event_id])  # copies keep the time they happened
        decision = judge(world.local, event_id, position, wanted, "", happened)
        if decision.verdict is Verdict.SEND:
            intent = begin(world.local, decision.mark, id_limit=id_limit, occurred_at=happened)
            world.local = world.durable = intent  # awaited before the call
            outcome = outcomes[step]
            if outcome in ("ok", "timeout-applied"):
                world.vendor.append((world.first[event_id], event_id, wanted))
            if outcome == "ok":
                world.local = confirm(world.local, decision.mark, id_limit=id_limit)
            else:
                arrived = outcome != "refused"
                world.local = abandon(world.local, decision.mark, may_have_arrived=arrived)
        position += 1
        if flushes[step]:  # Faust flushes the producer, then commits
            world.durable = world.local
            world.committed = position

    statuses_seen = [s for _, _, s in world.vendor if s is not None]
    final = None
    for status in statuses_seen:
        if final is not None:
            assert status is final, f"vendor moved from {final} to {status}: {world.vendor}"
        if status.is_final:
            final = status
    ages = [age for age, _, _ in world.vendor]
    assert ages == sorted(ages), f"an older event after a newer one: {world.vendor}"


def test_an_unknown_event_type_never_becomes_open() -> None:
    # A type this code does not know (as a newer schema might bring): no status is guessed.
    event = SimpleNamespace(type="order.reopened", event_id="evt-1")
    with pytest.raises(AssertionError):
        status_after(event)
