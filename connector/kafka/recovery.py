"""Fixes for faust-streaming 0.15.3 table recovery stalls (issue 11, item 2).

:class:`ConnectorRecovery` is Faust's ``Recovery`` with the fixes below, and
:class:`ConnectorTableManager` the table manager that creates it, given to the app
through Faust's ``TableManager`` setting (its declared class override). Line numbers
below are those of
faust-streaming 0.15.3 (identical to upstream master at the time of writing, which has no
later change to this code) and mode-streaming as installed.

How faust decides that a worker has recovered its tables: after a rebalance,
``Recovery._restart_recovery`` (faust/tables/recovery.py line 338) runs a *round*:
``_set_recovery_started()`` (``in_recovery = True``, line 384), producer flush, highwaters,
start offsets, seek (each through ``self._wait(step, timeout=broker_request_timeout)``),
then ``resume_partitions(active_tps)`` (line 448) and ``await
self._wait(self.signal_recovery_end.wait())`` (line 465). ``_slurp_changelogs`` applies
the changelog records and sets ``signal_recovery_end`` once ``need_recovery()`` is false,
i.e. once every active partition has applied the record at ``highwater - 1``
(lines 788-805, 925-939). Until then the worker is not ready, and faust only *logs*
"No event received for active tp ... since recovery start" (``_verify_remaining``,
lines 1050-1108). Three ways for that state to last forever, and what this module does:

1. **A recovery step that times out ends table recovery for the life of the process.**
   ``Recovery._wait`` (lines 606-620) calls ``self.wait_first(coro, signal_recovery_start,
   timeout=...)``; mode's ``Service.wait_first`` returns ``WaitResults([], [], True)`` --
   ``stopped=True`` -- when nothing finished before the timeout (mode/services.py lines
   793-796). ``_wait`` turns that into ``ServiceStopped`` (line 617) and
   ``_restart_recovery`` answers ``break`` (lines 561-565): the loop is gone, later
   rebalances set ``signal_recovery_start`` for nobody. If the step was the seek (start
   offsets known), ``in_recovery`` stays true and the active changelog partitions stay
   paused: the worker logs "No event received for active tp ... since recovery start"
   every 5 s and never becomes ready. (If it was the highwater or offset step,
   ``need_recovery()`` is false for lack of offsets, the slurp's 5 s tick clears
   ``in_recovery``, and the worker is silently never ready: ``app.rebalancing`` stays
   true.) Fix: ``ServiceStopped`` only when the service is stopping; on a timeout the
   patched ``_wait`` logs, sets ``signal_recovery_start`` and raises ``RebalanceAgain``,
   so the loop runs the round again.

2. **A round whose active partitions stop delivering is never restarted.** Anything that
   keeps one active partition's records from reaching ``_slurp_changelogs`` while the loop
   waits at line 465 (the partition left paused, a position or ``Consumer._read_offset``
   past records never delivered, records dropped from the ``clear_on_resume`` changelog
   queue, the loop parked at its top after the ``IllegalStateError`` branch, lines
   556-560) leaves ``in_recovery`` set forever with no error. Fix: a watchdog, started
   with the ``Recovery`` service, restarts the round when an active partition with
   records remaining (``highwater - offset > 0``) applied nothing for ``stall_timeout_s``
   while the loop reads (or sits outside any step; never during a revocation, another
   step, or a pending rebalance). It logs the partition's consumer state (assigned,
   paused, fetching, read offset, last event, flow, fetcher) -- so the next occurrence
   names its cause -- stops the flow as a revocation does, and sets
   ``signal_recovery_start``: the new round flushes the buffers, rebuilds highwaters and
   start offsets from what the table applied, seeks there, resumes the partitions and the
   flow. That is a worker restart without losing the process; if no loop takes the
   signal up, it logs an error and ``/health/live`` lets the supervisor restart the worker.

3. **The end of reading can be missed.** The slurp sets ``signal_recovery_end`` (line 803)
   and clears it at the top of its next pass (line 832); a waiter that registers after
   both (the waiter task created by ``wait_first`` has not run yet) waits forever, with
   ``in_recovery`` already false. Fix: the watchdog sets the signal again when the loop
   waits for it although the slurp has ended recovery.

What was measured for the stall reported in the suite (about 1 run in 5 of
``tests/e2e/test_scale_out.py`` without standbys): the scenario replayed in a loop on a
local broker -- about 90 runs on the code the stall was reported on, the code before it
and the current code, also pinned to one CPU -- plus about 20 runs of a churn loop
(workers joining, leaving and being killed while others recover 180 000-360 000
changelog records), never stalled, so the reported stall was not tied to one cause by
observation. Ruled out in the code for a compact-only changelog written without
transactions: a compacted or control-marker tail (the log cleaner never cleans the active
segment, and the changelog producer is neither idempotent nor transactional, so every
offset below the highwater holds a record); a seek to ``-1`` (``_seek_offsets`` seeks
``0``; compaction never moves the log start); a reset to *latest*
(``consumer_auto_offset_reset="earliest"``). The three defects above are real, each
produces the reported state, and each is shown by ``tests/core/test_recovery_fix.py``
and ``tests/e2e/test_recovery_stall.py``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

from faust.tables.manager import TableManager
from faust.tables.recovery import RebalanceAgain, Recovery, ServiceStopped
from faust.types import TP

from connector.kafka.bulk_recovery import bulk_load

__all__ = [
    "RESTARTS",
    "ConnectorRecovery",
    "ConnectorTableManager",
    "configure_recovery",
    "stalled_partitions",
]

logger = logging.getLogger(__name__)

RESTARTS = "connector_restarts"


@dataclass
class _Config:
    stall_timeout_s: float = 30.0
    check_interval_s: float = 5.0


_config = _Config()


def configure_recovery(
    *, stall_timeout_s: float | None = None, check_interval_s: float | None = None
) -> None:
    """Set the watchdog's timings (process-wide; read by every :class:`ConnectorRecovery`).

    ``stall_timeout_s``: how long an active changelog partition with records remaining may
    apply nothing before its recovery round is restarted (default 30 s, faust's own
    ``event_timeout_secs``). ``check_interval_s``: how often the watchdog looks (5 s).
    """
    if stall_timeout_s is not None:
        if stall_timeout_s <= 0:
            raise ValueError("stall_timeout_s must be positive")
        _config.stall_timeout_s = stall_timeout_s
    if check_interval_s is not None:
        if check_interval_s <= 0:
            raise ValueError("check_interval_s must be positive")
        _config.check_interval_s = check_interval_s


# What the recovery loop is waiting on, per Recovery instance: "read" while it waits for the
# active changelog partitions to be read (the end-of-recovery signal), "step" during any
# other step of a round, absent otherwise. The watchdog acts only on "read" or absent.
_STEP = "_connector_step"
_REVOKING = "_connector_revoking"


def _is_end_wait(recovery: Recovery, coro: Any) -> bool:
    event = recovery._signal_recovery_end
    frame = getattr(coro, "cr_frame", None)
    return (
        event is not None
        and getattr(coro, "cr_code", None) is asyncio.Event.wait.__code__
        and frame is not None
        and frame.f_locals.get("self") is event
    )


class ConnectorRecovery(Recovery):
    """Faust's table recovery with the three fixes of this module."""

    async def _wait(self, coro: Any, timeout: Any = None) -> None:
        # Defect 1: a recovery step that times out ends table recovery for good.
        signal = self.signal_recovery_start
        setattr(self, _STEP, "read" if _is_end_wait(self, coro) else "step")
        try:
            result = await self.wait_first(coro, signal, timeout=timeout)  # type: ignore[arg-type]
        finally:
            setattr(self, _STEP, None)
        if result.stopped:
            if self.should_stop:
                raise ServiceStopped()
            # mode reports "nothing finished before the timeout" as stopped; faust would
            # end its recovery loop for good here. Run the round again instead.
            self.log.warning(
                "Recovery step did not finish within %s s: restarting the recovery round",
                timeout,
            )
            signal.set()
            raise RebalanceAgain()
        if signal in result.done:
            raise RebalanceAgain()

    async def _seek_offsets(self, consumer: Any, tps: Any, offsets: Any, title: str) -> None:
        # The active partitions are read in bulk first (connector.kafka.bulk_recovery):
        # Faust's per-record path costs ~80 µs of CPU per record. This step runs inside the round's
        # _wait, so a rebalance or the step's timeout cancels it like any other step.
        reader = getattr(self.app, "changelog_reader", None)
        if title == "active" and reader is not None:
            tables = {tp: self.tp_to_table[tp] for tp in tps if tp in self.tp_to_table}
            await bulk_load(reader, tables, offsets, self.active_highwaters)
        await super()._seek_offsets(consumer, tps, offsets, title)

    def on_partitions_revoked(self, revoked: Any) -> None:
        # A revocation stopped the flow and paused everything; the assignment that follows
        # (on_rebalance) starts the next round. Nothing to watch in between.
        setattr(self, _REVOKING, True)
        super().on_partitions_revoked(revoked)

    async def on_rebalance(self, *args: Any, **kwargs: Any) -> None:
        setattr(self, _REVOKING, False)
        await super().on_rebalance(*args, **kwargs)

    async def on_started(self) -> None:
        # Defects 2 and 3: a round that stops receiving records, a missed end signal.
        await super().on_started()
        self.add_future(_watchdog(self))


class ConnectorTableManager(TableManager):
    """Faust's table manager, whose recovery service is :class:`ConnectorRecovery`."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = ConnectorRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


# -- 2. the watchdog ----------------------------------------------------------------------


@dataclass
class _Progress:
    """What the watchdog saw: per active partition, its offset and since when."""

    round_started_at: float | None = None
    seen: dict[TP, tuple[int | None, float]] = field(default_factory=dict)

    def reset(self, round_started_at: float | None) -> None:
        self.round_started_at = round_started_at
        self.seen.clear()


def stalled_partitions(
    recovery: Any, progress: _Progress, now: float, stall_timeout_s: float
) -> list[TP]:
    """Active changelog partitions with records remaining and no progress for the timeout.

    Only while the recovery loop reads the changelog (or sits outside any step, as after
    faust's ``IllegalStateError`` path); a new round (``_recovery_started_at`` changes)
    starts the clock again.
    """
    if (
        not recovery.in_recovery
        or getattr(recovery, _REVOKING, False)
        or getattr(recovery, _STEP, None) == "step"
    ):
        progress.reset(None)
        return []
    round_started_at = recovery._recovery_started_at
    if round_started_at != progress.round_started_at:
        progress.reset(round_started_at)
    stalled = []
    remaining = recovery.active_remaining()
    for tp in list(progress.seen):
        if remaining.get(tp, 0) <= 0:
            del progress.seen[tp]
    for tp, left in remaining.items():
        if left <= 0:
            continue
        offset = recovery.active_offsets.get(tp)
        previous = progress.seen.get(tp)
        if previous is None or previous[0] != offset:
            progress.seen[tp] = (offset, now)
        elif now - previous[1] >= stall_timeout_s:
            stalled.append(tp)
    return sorted(stalled)


async def _watchdog(recovery: Recovery) -> None:
    progress = _Progress()
    unanswered_since: float | None = None
    ended_since: float | None = None
    while not recovery.should_stop:
        await recovery.sleep(_config.check_interval_s)
        if recovery.should_stop:
            break
        try:
            now = monotonic()
            if _end_signal_lost(recovery):
                # _slurp_changelogs ended the recovery (in_recovery is False) but the loop
                # still waits for signal_recovery_end: the set() was undone by the slurp's
                # clear() before the waiter registered. Give the signal again.
                ended_since = ended_since or now
                if now - ended_since >= _config.stall_timeout_s:
                    logger.warning("Table recovery ended but its loop missed it: resuming")
                    recovery.signal_recovery_end.set()
                    ended_since = None
            else:
                ended_since = None
            signal = recovery.signal_recovery_start
            if unanswered_since is not None:
                if not signal.is_set():
                    unanswered_since = None
                elif now - unanswered_since >= _config.stall_timeout_s:
                    logger.error(
                        "Table recovery restart was not taken up within %.0f s: the "
                        "recovery loop is not running; the worker needs a restart",
                        now - unanswered_since,
                    )
                    unanswered_since = now
                continue
            stalled = stalled_partitions(recovery, progress, now, _config.stall_timeout_s)
            if not stalled or signal.is_set():
                continue
            logger.warning(
                "Table recovery stalled: no progress for %.0f s on %s; restarting the "
                "recovery round. State: %s",
                _config.stall_timeout_s,
                ", ".join(f"{tp.topic}:{tp.partition}" for tp in stalled),
                _describe(recovery, stalled, now),
            )
            _restart_round(recovery)
            setattr(recovery, RESTARTS, getattr(recovery, RESTARTS, 0) + 1)
            progress.reset(None)
            unanswered_since = now
        except asyncio.CancelledError:
            raise
        except Exception:  # the watchdog must never take the recovery service down
            logger.exception("Table recovery watchdog failed")


def _end_signal_lost(recovery: Any) -> bool:
    return (
        getattr(recovery, _STEP, None) == "read"
        and not recovery.in_recovery
        and not recovery.need_recovery()
        and not recovery.signal_recovery_end.is_set()
    )


def _restart_round(recovery: Recovery) -> None:
    # Stop the flow as a revocation does (faust App._on_partitions_revoked): records fetched
    # from the old positions must not be delivered after the new round seeks, and the
    # changelog queue (cleared again by the round's flow_control.resume()) starts empty.
    app = recovery.app
    consumer = app.consumer
    consumer.stop_flow()
    app.flow_control.suspend()
    consumer.pause_partitions(recovery.active_tps)
    app.flow_control.clear()
    recovery.signal_recovery_start.set()


def _describe(recovery: Recovery, tps: list[TP], now: float) -> str:
    consumer: Any = recovery.app.consumer
    try:
        assignment = consumer.assignment()
    except Exception:  # consumer not started
        assignment = set()
    paused: set[TP] = getattr(consumer, "_paused_partitions", set())
    fetching = getattr(consumer, "_active_partitions", None) or set()
    read_offset = getattr(consumer, "_read_offset", {})
    parts = []
    for tp in tps:
        last = recovery._active_events_received_at.get(tp)
        parts.append(
            f"{tp.topic}:{tp.partition} highwater={recovery.active_highwaters.get(tp)} "
            f"offset={recovery.active_offsets.get(tp)} assigned={tp in assignment} "
            f"paused={tp in paused} fetching={tp in fetching} "
            f"read_offset={read_offset.get(tp)} "
            f"last_event={'never' if last is None else f'{now - last:.0f} s ago'}"
        )
    fetcher: Any = getattr(recovery.app, "_fetcher", None)
    return (
        "; ".join(parts)
        + f"; step={getattr(recovery, _STEP, None)} flow_active="
        + f"{getattr(consumer, 'flow_active', None)} fetcher={getattr(fetcher, 'state', None)}"
    )
