"""Topic definitions: name, partitions, cleanup policy and configs.

``topics/topics.json`` is generated from :func:`definitions` (``connector
topics schema``) and a test fails when the checked-in file drifts.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from connector.settings import Settings

__all__ = ["TopicDefinition", "changelog_configs", "changelog_topic", "definitions"]

logger = logging.getLogger(__name__)

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicDefinition:
    role: str
    name: str
    partitions: int
    replication_factor: int
    description: str
    configs: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def changelog_topic(settings: Settings) -> str:
    """The order table's changelog, which Faust names ``<app id>-<table>-changelog``.

    Faust creates it when a worker starts, with ``CONNECTOR_TOPICS__PARTITIONS``
    partitions; it is co-partitioned with the events topic like the parking topic.
    """
    return f"{settings.app_id}-orders-changelog"


# The changelog's log cleaner settings. Every event writes its order's state twice (the
# intent, then the confirmation), so a completed order leaves six records and a worker
# taking its partition over reads all of them until the cleaner keeps only the last. The
# cleaner never touches the active segment (Kafka's default: up to 1 GiB, ~3.8M records
# of this table) and starts on the rest only once half of it is superseded records.
CHANGELOG_SEGMENT_BYTES = 64 * 1024 * 1024
CHANGELOG_SEGMENT_MS = 60 * 60 * 1000
CHANGELOG_DIRTY_RATIO = 0.1


def changelog_configs() -> dict[str, str]:
    """Configs Faust creates the table's changelog with (besides ``cleanup.policy=compact``).

    Smaller segments, rolled at least hourly, and compaction once 10% of the log is
    superseded: the changelog stays close to one record per order, which is what a
    recovering worker reads (python -m bench.rebuild --history). A changelog created
    before keeps its configs; ``kafka-configs --alter`` changes them in place.
    """
    return {
        "segment.bytes": str(CHANGELOG_SEGMENT_BYTES),
        "segment.ms": str(CHANGELOG_SEGMENT_MS),
        "min.cleanable.dirty.ratio": str(CHANGELOG_DIRTY_RATIO),
    }


def definitions(settings: Settings) -> list[TopicDefinition]:
    t = settings.topics
    # Twice the connector's own limit: a record over the limit still reaches the
    # connector, which dead-letters it with a clear reason instead of the producer
    # failing far from anyone who watches the audit topic.
    max_bytes = str(settings.kafka.max_message_bytes * 2)
    return [
        TopicDefinition(
            role="events",
            name=t.events,
            partitions=t.partitions,
            replication_factor=t.replication_factor,
            description="Lifecycle events from the vendor's systems; key = order key.",
            configs={
                "cleanup.policy": "delete",
                "retention.ms": str(7 * DAY_MS),
                "max.message.bytes": max_bytes,
            },
        ),
        TopicDefinition(
            role="audit",
            name=t.audit,
            partitions=t.partitions,
            replication_factor=t.replication_factor,
            description="One record per decision and per call result; key = order key.",
            configs={"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)},
        ),
        TopicDefinition(
            role="parked",
            name=t.parking,
            partitions=t.partitions,
            replication_factor=t.replication_factor,
            description=(
                "Events of a target that is down, in order, until it answers; "
                "co-partitioned with the events topic (same partition count)."
            ),
            configs={
                "cleanup.policy": "delete",
                # Longer than the maximum event age: a parked event ends before it expires.
                "retention.ms": str(int(settings.delivery.max_event_age_s * 1000) + 7 * DAY_MS),
                "max.message.bytes": max_bytes,
            },
        ),
        TopicDefinition(
            role="control",
            name=t.control_topic,
            partitions=1,
            replication_factor=t.replication_factor,
            description="Operators' pause/resume per target (connector target); key = target.",
            configs={"cleanup.policy": "compact"},
        ),
        TopicDefinition(
            role="dead_letter",
            name=t.dead_letter,
            partitions=t.partitions,
            replication_factor=t.replication_factor,
            description="Records that could not be delivered, with the original and the reason.",
            configs={
                "cleanup.policy": "delete",
                "retention.ms": str(30 * DAY_MS),
                # The original is base64 inside JSON: about 4/3 of its size.
                "max.message.bytes": str(settings.kafka.max_message_bytes * 3),
            },
        ),
    ]
