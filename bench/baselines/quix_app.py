"""Contender: a quix-streams 3.x ``Application``, written the way quix documents it.

What a team that picks quix-streams for this job writes:

- one ``StreamingDataFrame`` over the events topic (raw bytes in, as every other
  implementation reads them), a stateful ``apply`` that parses, judges and maps each
  record, a ``filter`` that drops what is not sent, and a ``sink`` that calls the vendors;
- per-order state in quix's state store (RocksDB, backed by its changelog topic), keyed
  by the Kafka key (the order key): the connector's own forward-only rule,
  :func:`connector.domain.lifecycle.judge`, decides against it, so a final order never
  reopens or flips and an event older than what the vendor has is not sent;
- the vendor calls in a :class:`VendorSink` (a quix ``BatchingSink``): records gather
  between checkpoints and the checkpoint flushes the sink *before* it produces the
  changelog and commits the offsets, so nothing is committed (offsets or state) until
  every call of the checkpoint has answered: at-least-once, as quix promises it;
- the calls of one flush run concurrently across orders and one after another within
  an order (grouped by Kafka key, in offset order), on aiohttp, with the same retries
  as the hand-written loop (:func:`bench.baselines.common.send_with_retries`).

Run by the benchmark as ``python -m bench.baselines.quix_app`` with ``BENCH_*``
variables (see :class:`bench.baselines.common.BaselineConfig`), in the contenders'
environment (``bench/contenders``): quixstreams caps pydantic below the connector's.
SIGTERM is quix's own: ``Application.run`` installs the handler, finishes the message
in hand, commits a last checkpoint (which flushes the sink) and closes the consumer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from quixstreams import Application, State, message_context
from quixstreams.sinks import BatchingSink, SinkBackpressureError
from quixstreams.sinks.base import SinkBatch

from bench.baselines.common import (
    MAX_EVENT_BYTES,
    AiohttpSender,
    BaselineConfig,
    HttpCall,
    announce,
    send_with_retries,
)
from connector.domain.events import parse_record
from connector.domain.lifecycle import (
    Verdict,
    begin,
    confirm,
    decode_state,
    encode_state,
    judge,
    status_after,
)
from connector.errors import InvalidEventError
from connector.vendors import map_event

__all__ = ["VendorSink", "build_app", "main"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# The checkpoint: quix commits every `commit_interval` seconds (default 5 s) or every
# `commit_every` input messages (default 0 = off), whichever comes first. With a
# batching sink the checkpoint *is* the send: records wait in the sink until it, and
# the consumer stops while the flush waits for the calls. So:
# - a small checkpoint pays an API round trip, a synchronous offset commit and a
#   changelog flush for few calls (at 50 ms API latency, 100 records per checkpoint
#   would cap a worker near 2,000 events/s whatever its CPU);
# - a huge one (the 5 s default) holds events back for seconds and turns a short run
#   into a few bursts.
# What a user tuning for throughput settles on: every 2,000 records (under a second
# of this workload, enough calls per flush to keep the 256-connection pool busy), with
# a 1 s interval so a slow trickle is still sent within a second. Tried on this
# workload (3,000 orders, 1 worker, 2 shared cores under others' load of 1.5 cores, so
# only the CPU figures compare): 500 records 0.44-0.48 ms CPU/event, 2,000 records
# 0.40, 5,000 records 0.39-0.40; quix's debug log shows a 2,000-record checkpoint
# spends ~0.3 s processing and ~0.45 s flushing at 0 ms API latency.
COMMIT_EVERY = 2_000
COMMIT_INTERVAL_S = 1.0
# After a flush whose calls failed transiently past their retries: quix pauses the
# partitions this long, rewinds them to the checkpoint's start and processes again.
BACKPRESSURE_RETRY_S = 1.0
# The state key inside each message key's scope: quix scopes `State` by the Kafka key,
# so the order's state sits under (order key, "order").
STATE_KEY = "order"

_TRANSIENT = frozenset({0, 429, 500, 502, 503, 504})  # send_with_retries' statuses to retry


class _LoopThread:
    """One asyncio loop for the life of the process, in a thread of its own.

    Why not ``asyncio.run`` per flush: aiohttp binds its session (and its pool of
    keep-alive connections) to one loop, so a loop per flush means a new session and
    new TCP connections per checkpoint. Why not run the loop in quix's thread: quix
    calls ``flush`` from its processing thread normally but from a helper thread on
    revocation (a bounded flush, joined with a timeout; a flush that timed out may
    still be running when the next begins), and one loop cannot be driven from two
    threads. ``run_coroutine_threadsafe`` from whichever thread calls is safe in all
    cases, and costs one hand-over per checkpoint, not per call.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vendor-calls")
        self._thread.daemon = True  # never keeps a killed process alive
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        self._loop.close()


class VendorSink(BatchingSink):
    """quix's batching sink: a checkpoint's vendor calls, sent when the checkpoint flushes.

    ``add`` (quix's own) keeps the records per topic partition; the checkpoint calls
    ``flush`` before it commits anything. The calls are grouped by Kafka key (the order
    key): different orders go concurrently, one order's calls one after another in
    offset order, so per-order order holds. Across checkpoints it holds too: a flush
    returns only when every call of it has answered, and the next one starts after.
    """

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__()
        self._limit = config.max_in_flight
        self._loop: _LoopThread | None = None
        self._sender: AiohttpSender | None = None

    def setup(self) -> None:
        # Called by quix when the application starts (BaseSink.start).
        self._loop = _LoopThread()
        self._sender = self._loop.run(self._open())

    async def _open(self) -> AiohttpSender:
        # Made inside the loop: aiohttp binds the session to the loop it is made in. The
        # pool size is the loop's max_in_flight (256), so both bound concurrency alike.
        return AiohttpSender(self._limit)

    def close(self) -> None:
        """After ``Application.run`` returned (quix sinks have no teardown hook)."""
        if self._loop is None:
            return
        if self._sender is not None:
            self._loop.run(self._sender.aclose())
        self._loop.close()
        self._loop = None

    def write(self, batch: SinkBatch) -> None:
        """One topic partition's batch (BatchingSink's contract; ``flush`` sends them all)."""
        self._send_batches([batch])

    def flush(self) -> None:
        # BatchingSink.flush writes the partitions' batches one after another, so a
        # checkpoint would wait one API round trip per partition it holds. One send for
        # all of them spreads the checkpoint's calls over every order at once; the
        # batches go whatever happens (as BatchingSink does): on failure the checkpoint
        # is processed again from its first offset.
        try:
            self._send_batches(list(self._batches.values()))
        finally:
            self._batches.clear()

    def _send_batches(self, batches: Iterable[SinkBatch]) -> None:
        by_order: dict[bytes, list[HttpCall]] = {}
        for batch in batches:
            for item in batch:  # in offset order within the partition
                by_order.setdefault(item.key, []).append(item.value)
        if not by_order:
            return
        assert self._loop is not None, "the sink was not started"
        delivered = self._loop.run(self._send_all(by_order.values()))
        if not delivered:
            # quix's documented answer to a destination that cannot take the writes now:
            # the checkpoint is not committed (no offsets, no state), the partitions pause
            # and are rewound to its first offset. Its calls that did answer go again:
            # the vendors' PUT / status POST carry the whole state, so a repeat is harmless.
            raise SinkBackpressureError(retry_after=BACKPRESSURE_RETRY_S)

    async def _send_all(self, orders: Iterable[list[HttpCall]]) -> bool:
        results = await asyncio.gather(*(self._send_order(calls) for calls in orders))
        return all(results)

    async def _send_order(self, calls: list[HttpCall]) -> bool:
        assert self._sender is not None
        for call in calls:
            status = await send_with_retries(self._sender, call)
            if status in _TRANSIENT:
                # Out of retries on a transient failure: stop this order here (a later
                # event must not overtake it) and have the checkpoint redone.
                logger.warning("vendor call failed transiently (%s): %s", status, call.url)
                return False
            if not 200 <= status < 300:
                # A definite refusal, logged and passed as the loop does. (The state already
                # counts the event as sent: a sink cannot write back to quix's state.)
                logger.warning("vendor answered %s: %s", status, call.url)
        return True


def _decide(config: BaselineConfig, value: bytes, key: bytes, state: State) -> HttpCall | None:
    """One record: parse, judge against the order's state, map; None when not sent.

    Runs in quix's processing thread, inside the checkpoint's state transaction: the
    new state reaches RocksDB and the changelog only when the checkpoint commits, that
    is after the sink has flushed (every call of the checkpoint answered). So the state
    can say "confirmed" as it is written: if the worker dies first, the state and the
    offsets roll back together and the records are judged again.
    """
    try:
        event = parse_record(key, value, max_bytes=MAX_EVENT_BYTES)
        request = map_event(event)
    except InvalidEventError as exc:
        logger.warning("skipping invalid record: %s", exc)
        return None
    occurred_at = event.occurred_at.timestamp()
    previous = decode_state(state.get_bytes(STATE_KEY))
    decision = judge(
        previous,
        event.event_id,
        message_context().offset,  # the event's sequence, as the connector uses it
        status_after(event),
        str(event.type),
        occurred_at,
    )
    if decision.verdict is not Verdict.SEND:
        # A duplicate, or refused by the forward-only rule (a final order reopened or
        # flipped, or older than what the vendor has): not sent.
        logger.info("not sent (%s): %s", decision.verdict, decision.reason)
        return None
    after = confirm(begin(previous, decision.mark, occurred_at=occurred_at), decision.mark)
    state.set_bytes(STATE_KEY, encode_state(after))
    return config.http_call(request)


class _AnnouncingApplication(Application):
    """quix's Application, telling the benchmark its partitions (readiness only).

    quix has no public rebalance hook: it subscribes with its own bound ``_on_assign``
    / ``_on_revoke`` / ``_on_lost``, so those are extended here, after quix's own work
    (state partitions assigned or revoked, the revoke's checkpoint committed). quix
    forces the eager ``range`` assignor, so each assignment is the whole of it.
    """

    def __init__(self, *args: Any, events_topic: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._events_topic = events_topic

    def _on_assign(self, consumer: Any, topic_partitions: list[Any]) -> None:
        super()._on_assign(consumer, topic_partitions)
        # The changelog partitions come in the same list: only the events topic counts.
        announce([tp.partition for tp in topic_partitions if tp.topic == self._events_topic])

    def _on_revoke(self, consumer: Any, topic_partitions: list[Any]) -> None:
        super()._on_revoke(consumer, topic_partitions)
        announce([])

    def _on_lost(self, consumer: Any, topic_partitions: list[Any]) -> None:
        super()._on_lost(consumer, topic_partitions)
        announce([])


def build_app(config: BaselineConfig) -> tuple[Application, VendorSink]:
    app = _AnnouncingApplication(
        broker_address=config.bootstrap,
        consumer_group=config.group,
        auto_offset_reset="earliest",
        commit_interval=COMMIT_INTERVAL_S,
        commit_every=COMMIT_EVERY,
        # One state directory per process: on one machine two workers would otherwise
        # share RocksDB directories (in production each pod has its own volume).
        state_dir=Path(config.data_dir) / f"quix-{os.getpid()}",
        loglevel="WARNING",
        events_topic=config.topic,
        # The defaults kept on purpose: at-least-once (exactly-once would only make the
        # changelog and offsets transactional; the HTTP calls stay at-least-once) and
        # changelog topics on (the state survives a lost worker).
    )
    # Raw bytes in: parse_record validates key and value itself, as in every baseline.
    topic = app.topic(config.topic, key_deserializer="bytes", value_deserializer="bytes")
    sink = VendorSink(config)
    sdf = app.dataframe(topic)

    def decide(value: bytes, key: bytes, timestamp: int, headers: Any, state: State) -> Any:
        return _decide(config, value, key, state)

    sdf = sdf.apply(decide, stateful=True, metadata=True)
    sdf = sdf.filter(lambda call: call is not None)
    sdf.sink(sink)
    return app, sink


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    app, sink = build_app(BaselineConfig.from_env())
    try:
        app.run()  # until SIGTERM / SIGINT; quix commits the last checkpoint on the way out
    finally:
        sink.close()


if __name__ == "__main__":
    main()
