"""Operator control: pause and resume one target on every worker, through Kafka.

The control topic is compacted, one partition, keyed by target (``kombo|<integration>``
or ``comeet``, the rate-limit and breaker key); its value says whether the target
is paused, by whom and why. Every worker follows the whole topic from the start
(no consumer group), so a change reaches all of them within a poll interval and a
worker that starts later reads the current state first.

A paused target behaves like one whose circuit is open and never probes: its events
park in order (whatever its outage policy) and are delivered when it is resumed.
The CLI writes the change to the audit topic too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition

from connector.audit import AuditRecord, Outcome
from connector.kafka_clients import consumer, producer
from connector.settings import Settings

__all__ = ["TargetControl", "follow_control", "read_control", "set_paused"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetControl:
    target: str
    paused: bool
    by: str = ""
    reason: str = ""
    time: str = ""

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "paused": self.paused,
                "by": self.by,
                "reason": self.reason,
                "time": self.time,
            }
        ).encode()

    @classmethod
    def from_record(cls, key: bytes | None, value: bytes | None) -> TargetControl | None:
        if not key:
            return None
        target = key.decode("utf-8", "replace")
        if value is None:
            return cls(target, False)
        try:
            doc = json.loads(value)
            return cls(
                target,
                bool(doc.get("paused")),
                str(doc.get("by", "")),
                str(doc.get("reason", "")),
                str(doc.get("time", "")),
            )
        except (ValueError, AttributeError):
            logger.warning("unreadable control record for %s", target)
            return None


def _reader(settings: Settings) -> Any:
    return consumer(settings, enable_auto_commit=False, group_id=None)


async def follow_control(
    settings: Settings,
    apply: Callable[[TargetControl], None],
    *,
    poll_ms: int = 500,
) -> None:
    """Apply every control record, from the beginning, until cancelled."""
    tp = TopicPartition(settings.topics.control_topic, 0)
    while True:
        reader = _reader(settings)
        try:
            await reader.start()
            reader.assign([tp])
            await reader.seek_to_beginning(tp)
            while True:
                batch = await reader.getmany(timeout_ms=poll_ms)
                for messages in batch.values():
                    for message in messages:
                        control = TargetControl.from_record(message.key, message.value)
                        if control is not None:
                            logger.info(
                                "target %s %s",
                                control.target,
                                "paused" if control.paused else "resumed",
                            )
                            apply(control)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the control channel must not take the worker down
            logger.warning("control topic: %s: %s; retrying", type(exc).__name__, exc)
            await asyncio.sleep(2.0)
        finally:
            await reader.stop()


async def read_control(settings: Settings) -> dict[str, TargetControl]:
    """The current state of every target ever paused."""
    tp = TopicPartition(settings.topics.control_topic, 0)
    reader = _reader(settings)
    await reader.start()
    state: dict[str, TargetControl] = {}
    try:
        reader.assign([tp])
        await reader.seek_to_beginning(tp)
        end = (await reader.end_offsets([tp]))[tp]
        while await reader.position(tp) < end:
            batch = await reader.getmany(timeout_ms=500)
            for messages in batch.values():
                for message in messages:
                    control = TargetControl.from_record(message.key, message.value)
                    if control is not None:
                        state[control.target] = control
    finally:
        await reader.stop()
    return state


async def set_paused(settings: Settings, target: str, paused: bool, reason: str = "") -> None:
    """Publish the change for every worker, and record it in the audit trail."""
    who = f"cli@{socket.gethostname()}"
    control = TargetControl(target, paused, who, reason, datetime.now(UTC).isoformat())
    audit = AuditRecord(
        worker_id=who,
        outcome=Outcome.PAUSED if paused else Outcome.RESUMED,
        terminal=False,
        vendor=target.split("|", 1)[0],
        reason=f"target {target} {'paused' if paused else 'resumed'} by an operator"
        + (f": {reason}" if reason else ""),
    )
    writer = producer(settings)
    await writer.start()
    try:
        await writer.send_and_wait(
            settings.topics.control_topic, control.to_json(), key=target.encode(), partition=0
        )
        await writer.send_and_wait(
            settings.topics.audit, audit.model_dump_json().encode(), key=target.encode()
        )
    finally:
        await writer.stop()
