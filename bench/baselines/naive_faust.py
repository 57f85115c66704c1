"""Baseline (b): the Faust agent a first-time user writes.

One agent, one actor, and every event awaits its HTTP call before the next one
is read::

    @app.agent(topic)
    async def deliver(stream):
        async for key, value in stream.items():
            await client.request(...)

Per-order order holds trivially (everything is sequential), and so does
at-least-once (Faust acks an event when the agent moves past it), but the
throughput is one API round trip per event per process.

Run by the benchmark as ``python -m bench.baselines.naive_faust`` with ``BENCH_*``
variables (see :class:`bench.baselines.common.BaselineConfig`).
"""

from __future__ import annotations

import logging
from typing import Any

import faust
import httpx

from bench.baselines.common import MAX_EVENT_BYTES, BaselineConfig, announce
from connector.domain.events import parse_record
from connector.vendors import map_event

__all__ = ["build_app", "main"]

logger = logging.getLogger(__name__)


def build_app(config: BaselineConfig) -> faust.App:
    app = faust.App(
        config.group,
        broker=f"kafka://{config.bootstrap}",
        store="memory://",
        datadir=config.data_dir,
        autodiscover=False,
        web_enabled=False,
        topic_partitions=config.partitions,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
    )
    topic = app.topic(config.topic, key_type=bytes, value_type=bytes)

    @app.agent(topic)
    async def deliver(stream: faust.StreamT) -> None:
        async with httpx.AsyncClient(timeout=30.0) as client:
            async for key, value in stream.items():
                call = config.http_call(
                    map_event(parse_record(key, value, max_bytes=MAX_EVENT_BYTES))
                )
                await client.request(
                    call.method,
                    call.url,
                    params=call.params or None,
                    content=call.body,
                    headers=call.headers,
                )

    # Readiness for the benchmark, not part of the "naive" agent itself.
    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _assigned(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        announce([tp.partition for tp in assigned if tp.topic == config.topic])

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        announce([])

    return app


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    app = build_app(BaselineConfig.from_env())
    faust.Worker(app, loglevel="WARNING", override_logging=False).execute_from_commandline()


if __name__ == "__main__":
    main()
