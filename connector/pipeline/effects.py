"""The effect executor: state writes and records, each durable, fenced by the lease.

Every effect of a job goes through :class:`Effects`:

* a *durable* step (an audit record, a dead letter, a parked copy, a state write
  that must be on the changelog) is retried until Kafka takes it, unless the
  partition is revoked first; the record stays unacknowledged meanwhile, which
  holds the partition's committed offset (a crash then replays it);
* :meth:`Effects.end` is the one place an event ends: its dead letter, then its
  terminal audit record, then the order's state after it. Once the terminal record
  is out, a failing state write is logged, never turned into a second ending.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from connector.domain.audit import AuditRecord, DeadLetter
from connector.domain.lifecycle import OrderState
from connector.errors import RevokedError
from connector.pipeline.delivery import Lease
from connector.pipeline.records import Ending, Job

__all__ = ["SINK_RETRY_MAX_S", "Effects", "Sinks", "StateStore"]

logger = logging.getLogger(__name__)

SINK_RETRY_MAX_S = 5.0


class Sinks(Protocol):
    """Where records go. Every coroutine returns once Kafka has the record."""

    async def audit(self, record: AuditRecord) -> None: ...

    async def dead_letter(self, record: DeadLetter, key: bytes | None) -> None: ...

    async def park(
        self, key: bytes, value: bytes, partition: int, headers: list[tuple[str, bytes]]
    ) -> None: ...


class StateStore(Protocol):
    """Per-order state, co-partitioned with the input: ``partition`` is the partition
    of the record being processed (the events topic's, or the parking topic's, which
    has the same number for the same order)."""

    def get(self, partition: int, key: bytes) -> OrderState | None: ...

    async def put(self, partition: int, key: bytes, state: OrderState) -> Awaitable[Any]:
        """Store the state and queue its changelog record to ``partition``, in call order.

        Awaiting the result waits until the changelog has it.
        """
        ...


class Effects:
    """Runs a job's effects against the state store and the sinks."""

    def __init__(self, store: StateStore, sinks: Sinks) -> None:
        self._store = store
        self._sinks = sinks
        # Jobs whose terminal record is out: an error after that is never a second ending.
        self._ended: weakref.WeakSet[Job] = weakref.WeakSet()

    def ended(self, job: Job) -> bool:
        """Whether ``job``'s terminal record is on the broker."""
        return job in self._ended

    def state(self, job: Job) -> OrderState | None:
        """The order's state, from the partition the job's record was read from."""
        return self._store.get(job.partition, job.key)

    async def durably(self, lease: Lease, step: Callable[[], Awaitable[Any]], what: str) -> None:
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

    async def emit(self, lease: Lease, record: AuditRecord) -> None:
        await self.durably(lease, lambda: self._sinks.audit(record), "audit")

    async def park(
        self, lease: Lease, key: bytes, value: bytes, partition: int, headers: list[Any]
    ) -> None:
        await self.durably(
            lease, lambda: self._sinks.park(key, value, partition, headers), "parking"
        )

    async def save(self, job: Job, state: OrderState | None) -> None:
        """Write the state and wait until the changelog has it."""
        if state is None:
            return
        store, partition, key = self._store, job.partition, job.key

        async def put() -> None:
            await (await store.put(partition, key, state))

        await self.durably(job.lease, put, "state")

    async def write_behind(self, job: Job, state: OrderState) -> None:
        """Write the state without waiting for the broker (the callers say why).

        Not once the partition is revoked (raises :class:`RevokedError`).
        """
        job.lease.check()
        try:
            await self._store.put(job.partition, job.key, state)
        except Exception as exc:
            # The changelog keeps the order's previous state; its next event heals it.
            logger.warning("could not queue a state write (%s: %s)", type(exc).__name__, exc)

    async def end(
        self,
        lease: Lease,
        ending: Ending,
        after: Callable[[], OrderState | None] | None = None,
        *,
        job: Job | None = None,
        durable: bool = False,
    ) -> None:
        """End an event: its dead letter, its terminal record, then its state ``after``.

        The state is written behind (the record is acknowledged after this, and the
        producer is flushed before any commit; if the worker dies first, the pending
        intent makes the replay send the same event again), or ``durable``-ly. Once
        the terminal record is out, only a revoke escapes from here.
        """
        letter = ending.letter
        if letter is not None:
            key = ending.letter_key
            await self.durably(lease, lambda: self._sinks.dead_letter(letter, key), "dead-letter")
        await self.emit(lease, ending.audit)
        if job is None:
            return
        self._ended.add(job)
        if after is None:
            return
        try:
            state = after()
            lease.check()
            if state is None:
                return
            if durable:
                await self.save(job, state)
            else:
                await self.write_behind(job, state)
        except RevokedError:
            raise
        except Exception:
            event_id = ending.audit.event_id
            logger.exception("error after event %s ended", event_id)
