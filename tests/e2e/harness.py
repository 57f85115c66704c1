"""End-to-end harness: real broker, real sandboxes over sockets, real worker processes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from connector.local.worker import WorkerProcess
from tests.factories import record

KOMBO_KEY = "kombo-sk-e2e-5ecret-KEY-0001"
COMEET_TOKEN = "comeet-e2e-5ecret-TOKEN-0002"


@dataclass
class Deployment:
    """One isolated connector deployment: its own topics, group, state and workers."""

    bootstrap: str
    env: dict[str, str]
    tmp: Path
    workers: list[WorkerProcess] = field(default_factory=list)
    # Extra AIOKafkaProducer/AIOKafkaConsumer arguments (security_protocol, sasl_*, ssl_context)
    # for publish_raw/read against a secured listener; empty for the PLAINTEXT session broker.
    client_config: dict[str, Any] = field(default_factory=dict)

    @property
    def events_topic(self) -> str:
        return self.env["CONNECTOR_TOPICS__EVENTS"]

    @property
    def audit_topic(self) -> str:
        return self.env["CONNECTOR_TOPICS__AUDIT"]

    @property
    def dlq_topic(self) -> str:
        return self.env["CONNECTOR_TOPICS__DEAD_LETTER"]

    def worker(
        self,
        worker_id: str = "w1",
        *,
        start: bool = True,
        argv: list[str] | None = None,
        **env: str,
    ) -> WorkerProcess:
        worker = WorkerProcess(
            {**self.env, **env},
            worker_id=worker_id,
            log_path=self.tmp / f"{worker_id}.log",
            argv=argv,
        )
        self.workers.append(worker)
        if start:
            worker.start(wait_ready=90)
        return worker

    def stop_all(self) -> None:
        for worker in self.workers:  # all drain at once
            worker.terminate()
        for worker in self.workers:
            worker.stop()

    async def publish(self, events: Iterable[dict[str, Any]]) -> None:
        await self.publish_raw(record(e) for e in events)

    async def publish_raw(
        self, records: Iterable[tuple[bytes | None, bytes]]
    ) -> list[tuple[int, int]]:
        """Publish in order; returns (partition, offset) per record."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            max_request_size=4_000_000,
            **self.client_config,
        )
        await producer.start()
        try:
            futures = [
                await producer.send(self.events_topic, value, key=key) for key, value in records
            ]
            metadata = await asyncio.gather(*futures)
            return [(m.partition, m.offset) for m in metadata]
        finally:
            await producer.stop()

    async def read(
        self, topic: str, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        """All JSON records of ``topic`` from the start, once ``until(records)`` holds."""
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **self.client_config,
        )
        await consumer.start()
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=250)
                for messages in batch.values():
                    records.extend(json.loads(m.value) for m in messages)
                if until(records):
                    return records
        finally:
            await consumer.stop()
        raise AssertionError(
            f"timed out after {timeout}s waiting on {topic}; got {len(records)} records: "
            + json.dumps(records[-5:], indent=1)[:3000]
        )

    async def audit_until_terminal(
        self, event_ids: Iterable[str | None], timeout: float = 60.0, invalid: int = 0
    ) -> list[dict[str, Any]]:
        """Audit records, once every event id (and ``invalid`` id-less records) is terminal."""
        wanted = {e for e in event_ids if e is not None}

        def done(records: list[dict[str, Any]]) -> bool:
            terminal = [r for r in records if r["terminal"]]
            ids = {r["event_id"] for r in terminal if r["event_id"]}
            idless = sum(1 for r in terminal if not r["event_id"])
            return wanted <= ids and idless >= invalid

        return await self.read(self.audit_topic, done, timeout)


def terminal_by_event(audit: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in audit:
        if r["terminal"] and r["event_id"]:
            out.setdefault(r["event_id"], []).append(r["outcome"])
    return out
