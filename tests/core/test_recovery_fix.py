"""connector.kafka.recovery: the faust-streaming recovery fixes, without a broker.

The ``vanilla`` tests show each upstream defect on Faust's own ``Recovery``; the
``installed`` ones its absence on :class:`~connector.kafka.recovery.ConnectorRecovery`.

The Recovery objects are real (``faust.App(...).tables.recovery``, never started); only
the broker calls of a round (highwaters, offsets, seek) and the end of a round are
replaced, so the tests run faust's own ``_restart_recovery`` loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.tables.manager import TableManager
from faust.tables.recovery import RebalanceAgain, Recovery, ServiceStopped
from faust.types import TP

from connector.kafka import recovery as fix

TP0 = TP("app-orders-changelog", 0)


# The table manager make_recovery() gives the app: Faust's own, or the connector's.
_manager: list[type[TableManager]] = [TableManager]


@pytest.fixture
def installed() -> Iterator[None]:
    """The connector's recovery (ConnectorTableManager), with short watchdog timings."""
    fix.configure_recovery(stall_timeout_s=0.2, check_interval_s=0.02)
    _manager[0] = fix.ConnectorTableManager
    try:
        yield
    finally:
        _manager[0] = TableManager
        fix.configure_recovery(stall_timeout_s=30.0, check_interval_s=5.0)


@pytest.fixture
def vanilla() -> None:
    """faust's own Recovery: the upstream defects show on it."""
    _manager[0] = TableManager


class StubConsumer:
    """What a round and the watchdog use of faust's Consumer (no thread, no event loop)."""

    def __init__(self) -> None:
        self.flow_active = True
        self._paused_partitions: set[TP] = set()
        self._active_partitions: set[TP] = set()
        self._read_offset: dict[TP, int | None] = {}

    def assignment(self) -> set[TP]:
        return {TP0}

    def pause_partitions(self, tps: Any) -> None:
        self._paused_partitions.update(tps)
        self._active_partitions.difference_update(tps)

    def resume_partitions(self, tps: Any) -> None:
        self._paused_partitions.difference_update(tps)
        self._active_partitions.update(tps)

    def stop_flow(self) -> None:
        self.flow_active = False

    def resume_flow(self) -> None:
        self.flow_active = True


def make_recovery() -> Recovery:
    app = faust.App(
        "recovery-fix-unit",
        broker="kafka://127.0.0.1:1",
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        broker_request_timeout=0.2,
        broker_session_timeout=0.2,
        TableManager=_manager[0],
        env={},
    )
    app.Table("orders", partitions=1)
    app._consumer = StubConsumer()  # type: ignore[assignment]
    return app.tables.recovery  # type: ignore[attr-defined]


class Round:
    """Stubs the broker steps of a round; the first seek hangs (past the step timeout)."""

    def __init__(self, recovery: Recovery) -> None:
        self.recovery = recovery
        self.seeks = 0
        self.completed = 0
        recovery.active_tps.add(TP0)
        recovery.tp_to_table[TP0] = next(iter(recovery.tables.values()))
        recovery._build_highwaters = self.highwaters  # type: ignore[method-assign]
        recovery._build_offsets = self.offsets  # type: ignore[method-assign]
        recovery._seek_offsets = self.seek  # type: ignore[method-assign]
        recovery.on_recovery_completed = self.done  # type: ignore[method-assign]

    async def highwaters(self, consumer: Any, tps: Any, destination: Any, title: str) -> None:
        destination.clear()
        for tp in tps:
            destination[tp] = 99

    async def offsets(self, consumer: Any, tps: Any, destination: Any, title: str) -> None:
        # Already applied up to the highwater: the round needs no reading and ends.
        for tp in tps:
            destination[tp] = 99

    async def seek(self, consumer: Any, tps: Any, offsets: Any, title: str) -> None:
        self.seeks += 1
        if self.seeks == 1:
            await asyncio.sleep(60)

    async def done(self, generation_id: int = 0) -> None:
        self.completed += 1
        self.recovery._set_recovery_ended()


@contextlib.asynccontextmanager
async def recovery_loop(recovery: Recovery) -> AsyncIterator[asyncio.Task[Any]]:
    loop = asyncio.ensure_future(Recovery._restart_recovery(recovery))
    try:
        yield loop
    finally:
        recovery._stopped.set()
        recovery.signal_recovery_start.set()
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError, ServiceStopped):
            await loop


async def eventually(predicate: Any, timeout: float = 3.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


# -- 1. a timed-out step ------------------------------------------------------------------


async def test_faust_reports_a_timed_out_step_as_a_stopped_service(vanilla: None) -> None:
    recovery = make_recovery()
    with pytest.raises(ServiceStopped):
        await recovery._wait(asyncio.sleep(5), timeout=0.05)


async def test_faust_recovery_loop_ends_for_good_after_a_timed_out_step(vanilla: None) -> None:
    recovery = make_recovery()
    round_ = Round(recovery)
    async with recovery_loop(recovery) as loop:
        recovery.signal_recovery_start.set()  # the assignment
        assert await eventually(loop.done), "faust's loop kept running"
        recovery.signal_recovery_start.set()  # the next rebalance: nobody listens
        await asyncio.sleep(0.3)
    assert round_.completed == 0
    assert recovery.in_recovery  # what /health/ready sees: recovering, forever


async def test_a_timed_out_step_restarts_the_round(installed: None) -> None:
    recovery = make_recovery()
    with pytest.raises(RebalanceAgain):
        await recovery._wait(asyncio.sleep(5), timeout=0.05)
    assert recovery.signal_recovery_start.is_set()

    recovery = make_recovery()
    round_ = Round(recovery)
    async with recovery_loop(recovery) as loop:
        recovery.signal_recovery_start.set()
        assert await eventually(lambda: round_.completed == 1)
        assert not loop.done()
    assert round_.seeks == 2
    assert not recovery.in_recovery


async def test_a_stopping_service_still_stops(installed: None) -> None:
    recovery = make_recovery()
    recovery._stopped.set()
    with pytest.raises(ServiceStopped):
        await recovery._wait(asyncio.sleep(5), timeout=0.05)


async def test_a_rebalance_still_interrupts_a_step(installed: None) -> None:
    recovery = make_recovery()
    recovery.signal_recovery_start.set()
    with pytest.raises(RebalanceAgain):
        await recovery._wait(asyncio.sleep(5), timeout=1.0)


def test_the_connector_s_recovery_is_a_subclass_and_faust_s_stays_untouched(
    installed: None,
) -> None:
    recovery = make_recovery()
    assert type(recovery) is fix.ConnectorRecovery
    assert Recovery._wait is not fix.ConnectorRecovery._wait  # no patch of faust's class


# -- 2. the watchdog ----------------------------------------------------------------------


def fake(offset: int | None, highwater: int = 99, **kw: Any) -> Any:
    state = SimpleNamespace(
        in_recovery=True,
        _recovery_started_at=1.0,
        active_offsets={TP0: offset},
        active_highwaters={TP0: highwater},
        **kw,
    )
    state.active_remaining = lambda: {
        tp: hw - state.active_offsets[tp]
        for tp, hw in state.active_highwaters.items()
        if state.active_offsets[tp] is not None
    }
    return state


def test_a_partition_without_progress_is_stalled_after_the_timeout() -> None:
    progress = fix._Progress()
    recovery = fake(-1)
    assert fix.stalled_partitions(recovery, progress, 10.0, 5.0) == []
    assert fix.stalled_partitions(recovery, progress, 14.9, 5.0) == []
    assert fix.stalled_partitions(recovery, progress, 15.0, 5.0) == [TP0]


def test_progress_restarts_the_clock() -> None:
    progress = fix._Progress()
    recovery = fake(-1)
    fix.stalled_partitions(recovery, progress, 10.0, 5.0)
    recovery.active_offsets[TP0] = 40
    assert fix.stalled_partitions(recovery, progress, 14.0, 5.0) == []
    assert fix.stalled_partitions(recovery, progress, 18.0, 5.0) == []
    assert fix.stalled_partitions(recovery, progress, 19.0, 5.0) == [TP0]


@pytest.mark.parametrize(
    "change",
    [
        {"active_offsets": {TP0: 99}},  # done
        {"active_offsets": {TP0: 120}},  # past the highwater (later writes)
        {"in_recovery": False},
        {"_connector_revoking": True},  # a rebalance is between revoke and assign
        {"_connector_step": "step"},  # highwaters/offsets/seek: their own timeout
    ],
)
def test_no_stall_when_nothing_is_left_or_something_else_is_running(
    change: dict[str, Any],
) -> None:
    progress = fix._Progress()
    recovery = fake(-1)
    fix.stalled_partitions(recovery, progress, 10.0, 5.0)
    for key, value in change.items():
        setattr(recovery, key, value)
    assert fix.stalled_partitions(recovery, progress, 100.0, 5.0) == []


def test_a_new_round_restarts_the_clock() -> None:
    progress = fix._Progress()
    recovery = fake(-1)
    fix.stalled_partitions(recovery, progress, 10.0, 5.0)
    recovery._recovery_started_at = 12.0
    assert fix.stalled_partitions(recovery, progress, 16.0, 5.0) == []
    assert fix.stalled_partitions(recovery, progress, 21.0, 5.0) == [TP0]


async def test_the_watchdog_restarts_a_stalled_round(installed: None) -> None:
    recovery = make_recovery()
    recovery._set_recovery_started()
    recovery.active_tps.add(TP0)
    recovery.active_highwaters[TP0] = 99
    recovery.active_offsets[TP0] = -1
    consumer: Any = recovery.app.consumer
    consumer.resume_partitions([TP0])
    watchdog = asyncio.ensure_future(fix._watchdog(recovery))
    try:
        assert await eventually(recovery.signal_recovery_start.is_set)
    finally:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
    assert getattr(recovery, fix.RESTARTS) == 1
    # The flow is stopped as a revocation stops it; the new round resumes it.
    assert not consumer.flow_active
    assert TP0 in consumer._paused_partitions
    assert not recovery.app.flow_control.is_active()


async def test_the_watchdog_leaves_a_progressing_round_alone(installed: None) -> None:
    recovery = make_recovery()
    recovery._set_recovery_started()
    recovery.active_highwaters[TP0] = 10_000
    recovery.active_offsets[TP0] = 0
    watchdog = asyncio.ensure_future(fix._watchdog(recovery))
    try:
        for _ in range(40):  # 0.8 s: four stall timeouts
            recovery.active_offsets[TP0] += 1
            await asyncio.sleep(0.02)
    finally:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
    assert not recovery.signal_recovery_start.is_set()
    assert getattr(recovery, fix.RESTARTS, 0) == 0


async def lose_the_end_signal(recovery: Recovery) -> asyncio.Task[Any]:
    """The loop starts waiting for the end of reading; before its waiter registers,
    _slurp_changelogs ends the recovery and, on its next pass, clears the signal."""
    recovery._set_recovery_started()
    waiting = asyncio.ensure_future(recovery._wait(recovery.signal_recovery_end.wait()))
    await asyncio.sleep(0)  # _wait runs and schedules its waiter, which has not run yet
    recovery.signal_recovery_end.set()  # _maybe_signal_recovery_end ...
    recovery._set_recovery_ended()
    recovery.signal_recovery_end.clear()  # ... and the top of the slurp's next pass
    return waiting


async def test_faust_loop_can_miss_the_end_of_recovery(vanilla: None) -> None:
    recovery = make_recovery()
    waiting = await lose_the_end_signal(recovery)
    await asyncio.sleep(0.5)
    assert not waiting.done()
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting


async def test_the_watchdog_gives_a_missed_end_signal_again(installed: None) -> None:
    recovery = make_recovery()
    watchdog = asyncio.ensure_future(fix._watchdog(recovery))
    try:
        waiting = await lose_the_end_signal(recovery)
        assert await eventually(waiting.done)
        waiting.result()
    finally:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
