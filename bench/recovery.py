"""Table recovery time: a warm RocksDB store against a cold one, N orders in state.

    python -m bench.recovery --orders 100000

Fills the order table through one real worker (``order.opened`` per order, the
sandbox at zero latency), stops it, then measures the time from process start to
``/health/ready`` for a restart with the same worker id (its RocksDB store is on
disk: warm) and for a new worker id (empty store: everything is read back from
the changelog topic: cold). Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from connector.local.kafka import LocalKafka
from connector.local.worker import WorkerProcess
from connector.sandbox import SandboxProcess
from connector.settings import external_bootstrap_servers


async def _produce(bootstrap: str, topic: str, orders: int) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        pending = []
        for n in range(orders):
            event = {
                "event_id": f"rec-{n}",
                "type": "order.opened",
                "occurred_at": "2026-11-23T10:00:00Z",
                "target": {"vendor": "comeet", "evaluation_id": f"eval-{n}"},
            }
            pending.append(
                await producer.send(
                    topic, json.dumps(event).encode(), key=f"comeet|eval-{n}".encode()
                )
            )
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def _wait_terminal(bootstrap: str, topic: str, count: int, timeout: float) -> None:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    seen, deadline = 0, time.monotonic() + timeout
    try:
        while seen < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for messages in batch.values():
                seen += sum(1 for m in messages if b'"terminal":true' in m.value)
    finally:
        await consumer.stop()
    if seen < count:
        raise TimeoutError(f"only {seen} of {count} events ended in {timeout}s")


def _timed_start(env: dict[str, str], worker_id: str, log: Path) -> tuple[WorkerProcess, float]:
    worker = WorkerProcess(env, worker_id=worker_id, log_path=log)
    started = time.monotonic()
    worker.start(wait_ready=900)
    return worker, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
        workdir = Path(tmp)
        kafka = None
        bootstrap = external_bootstrap_servers()
        if not bootstrap:
            kafka = LocalKafka(log_file=workdir / "kafka.log")
            kafka.start()
            bootstrap = kafka.bootstrap_servers
        token = secrets.token_hex(16)
        sandbox = SandboxProcess(kombo_key=token, comeet_token=token, max_recorded=1000)
        urls = sandbox.start()
        run = uuid.uuid4().hex[:8]
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "CONNECTOR_APP_ID": f"bench-recovery-{run}",
            "CONNECTOR_TOPICS__EVENTS": f"bench-recovery-{run}.events",
            "CONNECTOR_TOPICS__AUDIT": f"bench-recovery-{run}.audit",
            "CONNECTOR_TOPICS__DEAD_LETTER": f"bench-recovery-{run}.dlq",
            "CONNECTOR_KOMBO__BASE_URL": urls.kombo_url,
            "CONNECTOR_KOMBO__API_KEY": token,
            "CONNECTOR_COMEET__BASE_URL": urls.comeet_url,
            "CONNECTOR_COMEET__TOKEN": token,
            "CONNECTOR_STORE": "rocksdb://",
            "CONNECTOR_DATA_DIR": str(workdir / "state"),
            "CONNECTOR_LOG_LEVEL": "WARNING",
        }
        try:
            filler, _ = _timed_start(env, "filler", workdir / "filler.log")
            fill_started = time.monotonic()
            asyncio.run(_produce(bootstrap, env["CONNECTOR_TOPICS__EVENTS"], args.orders))
            asyncio.run(
                _wait_terminal(bootstrap, env["CONNECTOR_TOPICS__AUDIT"], args.orders, timeout=3600)
            )
            fill_s = time.monotonic() - fill_started
            filler.stop()
            warm, warm_s = _timed_start(env, "filler", workdir / "warm.log")
            warm.stop()
            cold, cold_s = _timed_start(env, "fresh", workdir / "cold.log")
            cold.stop()
        finally:
            sandbox.stop()
            if kafka is not None:
                kafka.stop()
    print(
        f"| orders in state | fill (events/s) | warm start to ready | cold start to ready |\n"
        f"| --- | --- | --- | --- |\n"
        f"| {args.orders:,} | {args.orders / fill_s:,.0f} | {warm_s:.1f} s | {cold_s:.1f} s |"
    )


if __name__ == "__main__":
    main()
