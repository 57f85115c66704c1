"""A minimal Faust worker whose table recovery meets one injected fault.

Run by ``tests/e2e/test_recovery_stall.py`` as a child process::

    python tests/e2e/recovery_worker.py BOOTSTRAP APP_ID EVENTS_TOPIC WEB_PORT FAULT FIX

The app has one table (``orders``, one partition, memory store) co-partitioned with
``EVENTS_TOPIC``, like the connector's. Its changelog is filled by the test before the
worker starts, so the worker's first assignment runs an active recovery round.

``FAULT`` is one of:

* ``slow-step``: the recovery round's seek (the step after the highwaters and the start
  offsets) takes longer than ``broker_request_timeout`` (6 s here), as a consumer thread
  busy elsewhere, or a producer flush behind an unavailable topic in the step before,
  would.
* ``lost-resume``: the recovery's first ``resume_partitions`` leaves the active changelog
  partition paused (the state a lost resume, a stale position or read offset, or records
  dropped between the consumer and the recovery all end in: no record arrives).

``FIX`` is ``1`` to run with :class:`connector.kafka.recovery.ConnectorTableManager`.
``GET /state`` answers the recovery state and the number of keys in the table.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import faust
from faust.tables.recovery import Recovery
from faust.transport.consumer import ThreadDelegateConsumer

SLOW_STEP_S = 8.0  # > broker_request_timeout below


def main() -> None:
    bootstrap, app_id, events_topic, web_port, fault, fix = sys.argv[1:7]
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # faust waits 30 s before warning that an active partition received nothing, and
    # publishes its recovery stats every 5 s: shorten both so a stall shows in seconds.
    Recovery.event_timeout_secs = 2.0
    Recovery.stats_interval = 1.0
    managers: dict[str, Any] = {}
    if fix == "1":
        from connector.kafka.recovery import ConnectorTableManager, configure_recovery

        configure_recovery(stall_timeout_s=3.0, check_interval_s=0.5)
        managers["TableManager"] = ConnectorTableManager
    inject(fault)

    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        # Faust's default data directory is "<app id>-data" in the working directory.
        datadir=tempfile.mkdtemp(prefix="recovery-worker-"),
        web_port=int(web_port),
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        broker_session_timeout=6.0,
        broker_request_timeout=6.0,
        broker_heartbeat_interval=1.0,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        topic_partitions=1,
        key_serializer="raw",
        value_serializer="raw",
        autodiscover=False,
        web_router_enabled=False,
        web_tables_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        logging_config=None,
        env={},
        **managers,
    )
    events = app.topic(events_topic, key_type=bytes, value_type=bytes, partitions=1)
    table = app.Table("orders", key_type=bytes, value_type=bytes, default=None, partitions=1)

    @app.agent(events)
    async def write(stream: Any) -> None:
        async for event in stream.events():
            table[event.key] = event.value

    @app.page("/state")
    async def state(web: Any, request: Any) -> Any:
        recovery = app.tables.recovery  # type: ignore[attr-defined]
        return web.json(
            {
                "ready": recovery.completed.is_set()
                and not app.in_recovery
                and not app.rebalancing,
                "in_recovery": app.in_recovery,
                "keys": len(table),
                "restarts": getattr(recovery, "connector_restarts", 0),  # connector.kafka.recovery
            }
        )

    worker = faust.Worker(app, loglevel="INFO", override_logging=False)
    sys.argv = [sys.argv[0], "worker"]
    worker.execute_from_commandline()


def inject(fault: str) -> None:
    if fault == "slow-step":
        original = ThreadDelegateConsumer.seek_wait
        calls = [0]

        async def seek_wait(self: Any, partitions: Any) -> None:
            calls[0] += 1
            if calls[0] == 1:
                logging.getLogger("fault").warning("slow-step: seek_wait sleeps")
                await asyncio.sleep(SLOW_STEP_S)
            await original(self, partitions)

        ThreadDelegateConsumer.seek_wait = seek_wait  # type: ignore[method-assign]
    elif fault == "lost-resume":
        from faust.transport.consumer import Consumer

        original_resume = Consumer.resume_partitions
        dropped = [False]

        def resume_partitions(self: Any, tps: Any) -> None:
            tps = set(tps)
            changelog = {tp for tp in tps if tp.topic.endswith("-changelog")}
            if changelog and not dropped[0] and self.app.in_recovery:
                dropped[0] = True
                logging.getLogger("fault").warning("lost-resume: %s stay paused", changelog)
                tps -= changelog
            original_resume(self, tps)

        Consumer.resume_partitions = resume_partitions  # type: ignore[method-assign]
    elif fault != "none":
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    main()
