"""Operator control: pause and resume one target on every worker, through Kafka.

The control topic is compacted, one partition, keyed by target (``kombo|<integration>``
or ``comeet``, the rate-limit and breaker key); its value says whether the target
is paused, by whom and why. Every worker follows the whole topic from the start
(no consumer group), so a change reaches all of them within a poll interval and a
worker that starts later reads the current state first.

A paused target behaves like one whose circuit is open and never probes: its events
park in order (whatever its outage policy) and are delivered when it is resumed.
The CLI writes the change to the audit topic too.

A target name is checked before it is written (:func:`target_problem`): a name that no
vendor call is keyed by (``kombo`` alone, a typo) would pause nothing while the CLI
answered success and every worker reported its circuit open. Workers also ignore such
records (written before the check existed); ``connector target forget`` writes the
key's tombstone, which resumes the target and removes it from ``connector target list``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition

from connector.domain.audit import AuditRecord, Outcome
from connector.infra.kafka_clients import consumer, producer
from connector.settings import Settings

__all__ = [
    "TargetControl",
    "follow_control",
    "forget",
    "read_control",
    "set_paused",
    "target_forms",
    "target_problem",
]

logger = logging.getLogger(__name__)

# The keys breakers and rate limits use (VendorRequest.limit_key), as each registered
# vendor declares them (connector.vendors.registry): Comeet is one target, each Kombo
# integration is one. A field is visible ASCII without '|' (connector.domain.events._key_safe_id).
_FIELD = "[\x21-\x7b\x7d\x7e]+"


def target_forms() -> list[str]:
    """``kombo|<integration_id>``, ``comeet``, …: what ``connector target`` takes."""
    from connector.vendors import registry

    return registry.limit_key_forms()


def _target_pattern() -> re.Pattern[str]:
    from connector.vendors import registry

    patterns = []
    for vendor in registry.entries():
        for form in vendor.keys:
            parts = re.split(r"\{[a-z_]+\}", form.limit)
            patterns.append(_FIELD.join(re.escape(part) for part in parts))
    return re.compile("|".join(dict.fromkeys(patterns)))


def target_problem(name: str) -> str | None:
    """Why ``name`` is not a target, or None when it is one."""
    if _target_pattern().fullmatch(name):
        return None
    hint = ""
    if name == "kombo":
        hint = " (Kombo is paused per integration: kombo|<integration_id>)"
    elif name.startswith("kombo|") and name.count("|") > 1:
        hint = " (that looks like an order key; its target is kombo|<integration_id>)"
    elif name.startswith("comeet|"):
        hint = " (Comeet is one target: comeet)"
    return f"{name!r} is not a target{hint}; a target is one of: " + ", ".join(target_forms())


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
                        if control is not None and target_problem(control.target):
                            # Would pause nothing and report a phantom open circuit.
                            logger.warning(
                                "control record for %r ignored: not a target "
                                "(connector target forget removes it)",
                                control.target,
                            )
                        elif control is not None:
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
    """The current state of every target ever paused and not forgotten."""
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
                    if message.key and message.value is None:  # forgotten (a tombstone)
                        state.pop(message.key.decode("utf-8", "replace"), None)
                        continue
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
    done = "paused" if paused else "resumed"
    outcome = Outcome.PAUSED if paused else Outcome.RESUMED
    await _publish(settings, target, control.to_json(), outcome, done, reason)


async def forget(settings: Settings, target: str, reason: str = "") -> None:
    """Remove the target's entry (a tombstone): workers resume it, the list drops it."""
    done = "forgotten (resumed, removed from the list)"
    await _publish(settings, target, None, Outcome.RESUMED, done, reason)


async def _publish(
    settings: Settings,
    target: str,
    value: bytes | None,
    outcome: Outcome,
    done: str,
    reason: str,
) -> None:
    who = f"cli@{socket.gethostname()}"
    audit = AuditRecord(
        worker_id=who,
        outcome=outcome,
        terminal=False,
        vendor=None if target_problem(target) else target.split("|", 1)[0],
        reason=f"target {target} {done} by an operator" + (f": {reason}" if reason else ""),
    )
    writer = producer(settings)
    await writer.start()
    try:
        await writer.send_and_wait(
            settings.topics.control_topic, value, key=target.encode(), partition=0
        )
        await writer.send_and_wait(
            settings.topics.audit, audit.model_dump_json().encode(), key=target.encode()
        )
    finally:
        await writer.stop()
