"""A deployment's first start: a misspelt ``CONNECTOR_APP_ID`` must not replay the topic.

The app id is the consumer group and names the order table's changelog. A worker whose
group has no committed offsets and whose changelog holds nothing starts with empty
state at the beginning of the events topic (``auto_offset_reset=earliest``): right for
a first deployment, a replay of every retained event to the vendors when the id is a
typo of a running deployment's (issue 21, trap 7).

The rule (README "A new deployment, or a misspelt app id"): when this app id has no
committed offsets on the events topic and no state, the events topic holds records,
and **another connector deployment reads the events topic** -- a consumer group with
committed offsets on it and state of its own in ``<group>-orders-changelog`` (the topic
is already served: the typo case; a monitoring consumer or any other reader does not
count), ``connector worker`` refuses to start unless the
operator says it is a new deployment and where it starts:
``--new-deployment --from earliest|latest`` (``CONNECTOR_NEW_DEPLOYMENT``). A topic no
other group reads is a first deployment: the worker starts at the beginning, as
before, with a warning in its log. ``latest`` commits the group's offsets at the end of
the events and parking topics before Faust joins the group, so it really starts there.

Once the group has committed offsets or the changelog holds state, none of this
applies and the flag is ignored: it is safe to leave it set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from connector.errors import ConfigurationError
from connector.infra.kafka_clients import admin_client, client_kwargs, consumer
from connector.infra.topics import changelog_topic
from connector.settings import Settings

__all__ = [
    "StartFrom",
    "StartState",
    "check_status",
    "commit_end_offsets",
    "decide",
    "guard_first_start",
    "inspect",
]

logger = logging.getLogger(__name__)

StartFrom = Literal["", "earliest", "latest"]

# Groups whose offsets are read to find the topic's other readers, at most this many at once.
_CONCURRENT_OFFSET_FETCHES = 16
# How long a new broker's group coordinator may take to appear (it creates its topic).
_COORDINATOR_WAIT_S = 60.0


@dataclass(frozen=True)
class StartState:
    """What the broker says about this app id and its events topic."""

    app_id: str
    events_topic: str
    changelog: str
    committed: bool  # this group has an offset on some events partition
    state_records: int  # records ever written to the changelog (0: absent or never written)
    events_records: int  # records retained in the events topic
    other_groups: Sequence[str] = field(default_factory=tuple)  # with offsets on the topic

    @property
    def new_app_id(self) -> bool:
        return not self.committed and self.state_records == 0


def decide(state: StartState, start_from: StartFrom) -> tuple[str, str]:
    """(action, why) for a worker about to start: ``start``, ``refuse`` or ``latest``.

    Pure: :func:`guard_first_start` and the tests share it.
    """
    if not state.new_app_id:
        why = "not a new deployment (committed offsets or state exist)"
        return "start", why + ("; the new-deployment setting is ignored" if start_from else "")
    if start_from == "latest":
        return "latest", (
            f"new deployment {state.app_id!r}: starting at the end of {state.events_topic} "
            f"({state.events_records} retained records are not sent)"
        )
    if state.events_records == 0:
        return "start", f"new deployment {state.app_id!r}: {state.events_topic} is empty"
    if start_from == "earliest":
        return "start", (
            f"new deployment {state.app_id!r}: reading {state.events_records} retained "
            f"records of {state.events_topic} from the beginning (as asked)"
        )
    if state.other_groups:
        return "refuse", _refusal(state)
    return "start", (
        f"first deployment {state.app_id!r}: no consumer group reads {state.events_topic} "
        f"yet; reading its {state.events_records} retained records from the beginning"
    )


def _refusal(state: StartState) -> str:
    groups = ", ".join(sorted(state.other_groups)[:5])
    more = f" and {len(state.other_groups) - 5} more" if len(state.other_groups) > 5 else ""
    return (
        f"CONNECTOR_APP_ID={state.app_id!r} has no committed offsets and no state "
        f"({state.changelog} is empty or absent), while {state.events_topic} holds "
        f"{state.events_records} records already read by consumer group(s) {groups}{more}: "
        "starting would send every retained event to the vendors again with empty state. "
        "Fix: if the app id is misspelt, set CONNECTOR_APP_ID to the deployment's id; if this "
        "is a new deployment, start it with `connector worker --new-deployment --from latest` "
        "(only what is published from now on) or `--from earliest` (every retained event), "
        "or set CONNECTOR_NEW_DEPLOYMENT=latest|earliest"
    )


def check_status(state: StartState, start_from: StartFrom) -> tuple[str, str]:
    """(``ok`` | ``warn`` | ``FAIL``, detail) for ``connector check``."""
    action, why = decide(state, start_from)
    if action == "refuse":
        return "FAIL", f"the worker would refuse to start: {why}"
    if not state.new_app_id:
        if state.committed:
            return "ok", f"group {state.app_id} has committed offsets on {state.events_topic}"
        return "warn", (
            f"group {state.app_id} has no committed offsets on {state.events_topic} (expired "
            f"after a long stop?) but {state.changelog} holds state: workers start at the "
            "beginning and the guard skips what the vendors confirmed"
        )
    if state.events_records == 0 or action == "latest":
        return "ok", why
    return "warn", (
        f"CONNECTOR_APP_ID={state.app_id!r} has no committed offsets and no state: {why}. "
        "Expected for a first deployment; otherwise check CONNECTOR_APP_ID"
    )


# -- reading the broker -------------------------------------------------------------------


async def _partitions(admin: AIOKafkaAdminClient, topic: str) -> list[TopicPartition]:
    if topic not in set(await admin.list_topics()):
        return []
    [described] = await admin.describe_topics([topic])
    return [TopicPartition(topic, p["partition"]) for p in described.get("partitions", [])]


async def _records(reader: AIOKafkaConsumer, tps: list[TopicPartition]) -> tuple[int, int]:
    """(records retained, records ever written) over these partitions."""
    if not tps:
        return 0, 0
    begin = await reader.beginning_offsets(tps)
    end = await reader.end_offsets(tps)
    return sum(end[tp] - begin[tp] for tp in tps), sum(end.values())


async def _has_offsets(
    admin: AIOKafkaAdminClient,
    group: str,
    tps: list[TopicPartition],
    *,
    wait_s: float = _COORDINATOR_WAIT_S,
) -> bool:
    # On a new broker the first lookup creates the offsets topic: the coordinator is
    # "not available" or "loading" for a few seconds, which is no reason to fail a start.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
        except KafkaError as exc:
            if not exc.retriable or loop.time() >= deadline:
                raise
            logger.info("group coordinator not ready (%s); asking again", type(exc).__name__)
            await asyncio.sleep(0.5)
            continue
        return any(meta.offset >= 0 for tp, meta in offsets.items() if tp in tps)


async def _other_readers(
    admin: AIOKafkaAdminClient,
    reader: AIOKafkaConsumer,
    app_id: str,
    tps: list[TopicPartition],
) -> list[str]:
    """Other *connector deployments* reading the topic: groups with offsets on it and
    state of their own (a non-empty ``<group>-orders-changelog``).

    Any other reader (a monitoring consumer, a test judge, a replay tool) is no sign of
    a typo, and must never keep a first deployment from starting.
    """
    groups = [str(g[0]) for g in await admin.list_consumer_groups() if g[0] != app_id]
    topics = set(await admin.list_topics())
    deployments = [g for g in groups if f"{g}-orders-changelog" in topics]
    limit = asyncio.Semaphore(_CONCURRENT_OFFSET_FETCHES)

    async def reads(group: str) -> bool:
        async with limit:
            try:
                if not await _has_offsets(admin, group, tps, wait_s=5.0):
                    return False
                changelog = await _partitions(admin, f"{group}-orders-changelog")
                _, written = await _records(reader, changelog)
                return written > 0
            except KafkaError:  # a group being deleted, a coordinator moving: not a reader
                return False

    found = await asyncio.gather(*(reads(g) for g in deployments))
    return sorted(g for g, yes in zip(deployments, found, strict=True) if yes)


async def inspect(settings: Settings) -> StartState:
    """Read the group's offsets, the changelog, the events topic and its other readers."""
    events, changelog = settings.topics.events, changelog_topic(settings)
    admin = admin_client(settings)
    reader = consumer(settings, isolation_level=settings.kafka.isolation_level)
    await admin.start()
    try:
        await reader.start()
        event_tps = await _partitions(admin, events)
        changelog_tps = await _partitions(admin, changelog)
        committed = bool(event_tps) and await _has_offsets(admin, settings.app_id, event_tps)
        _, state_records = await _records(reader, changelog_tps)
        events_records, _ = await _records(reader, event_tps)
        others: list[str] = []
        if not committed and state_records == 0 and events_records:
            others = await _other_readers(admin, reader, settings.app_id, event_tps)
        return StartState(
            app_id=settings.app_id,
            events_topic=events,
            changelog=changelog,
            committed=committed,
            state_records=state_records,
            events_records=events_records,
            other_groups=tuple(others),
        )
    finally:
        await reader.stop()
        await admin.close()


async def commit_end_offsets(settings: Settings, topics: Iterable[str]) -> dict[str, int]:
    """Commit this group's offsets at the end of ``topics`` (those that exist).

    The group has no members yet (it has no offsets), so a consumer that assigns the
    partitions itself may commit for it. Returns the records skipped, by topic.
    """
    admin = admin_client(settings)
    await admin.start()
    try:
        tps = [tp for topic in topics for tp in await _partitions(admin, topic)]
    finally:
        await admin.close()
    if not tps:
        return {}
    committer = AIOKafkaConsumer(
        **client_kwargs(settings.kafka),
        group_id=settings.app_id,
        enable_auto_commit=False,
        isolation_level=settings.kafka.isolation_level,
    )
    await committer.start()
    try:
        committer.assign(tps)
        begin = await committer.beginning_offsets(tps)
        end = await committer.end_offsets(tps)
        await committer.commit({tp: end[tp] for tp in tps})
    finally:
        await committer.stop()
    skipped: dict[str, int] = {}
    for tp in tps:
        skipped[tp.topic] = skipped.get(tp.topic, 0) + end[tp] - begin[tp]
    return skipped


async def guard_first_start(settings: Settings, start_from: StartFrom) -> StartState:
    """Before a worker joins its group: refuse a typo, or move a new group to the end.

    Raises :class:`ConfigurationError` (the CLI exits with code 2) when :func:`decide`
    refuses.
    """
    state = await inspect(settings)
    action, why = decide(state, start_from)
    if action == "refuse":
        raise ConfigurationError(why)
    if action == "latest":
        try:
            skipped = await commit_end_offsets(
                settings, [settings.topics.events, settings.topics.parking]
            )
        except KafkaError as exc:
            # Another worker of this new deployment committed and joined first: the
            # group now has members (and offsets), so its commit stands.
            if not (await inspect(settings)).committed:
                raise
            logger.info("%s: another worker set the start first (%s)", why, type(exc).__name__)
            return state
        logger.warning("%s; committed the end offsets (%s)", why, _listing(skipped))
    elif state.new_app_id and state.events_records:
        logger.warning("%s", why)
    else:
        logger.info("%s", why)
    return state


def _listing(skipped: dict[str, int]) -> str:
    return ", ".join(f"{topic}: {n} records skipped" for topic, n in sorted(skipped.items()))
