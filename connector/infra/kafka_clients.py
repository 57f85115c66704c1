"""aiokafka clients configured from the settings (security included), and topic admin."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from connector.errors import ConfigurationError
from connector.infra.topics import TopicDefinition, changelog_topic, definitions
from connector.settings import KafkaSettings, Settings

__all__ = [
    "CHANGELOG_FETCH_BYTES",
    "admin_client",
    "changelog_reader",
    "client_kwargs",
    "consumer",
    "ensure_topics",
    "partition_count_problems",
    "producer",
    "ssl_context",
    "verify_partition_counts",
]

logger = logging.getLogger(__name__)


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=kafka.ssl_cafile)
    if kafka.ssl_certfile:
        context.load_cert_chain(kafka.ssl_certfile, kafka.ssl_keyfile)
    return context


def client_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "security_protocol": kafka.security_protocol,
    }
    context = ssl_context(kafka)
    if context is not None:
        kwargs["ssl_context"] = context
    if kafka.security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = kafka.sasl_mechanism
        kwargs["sasl_plain_username"] = kafka.sasl_username
        kwargs["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return kwargs


def admin_client(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**client_kwargs(settings.kafka))


def producer(settings: Settings, **extra: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **client_kwargs(settings.kafka),
        acks="all",
        enable_idempotence=True,
        max_request_size=settings.kafka.max_message_bytes * 3,
        **extra,
    )


def consumer(settings: Settings, *topics: str, **extra: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(*topics, **client_kwargs(settings.kafka), **extra)


def changelog_reader(settings: Settings) -> AIOKafkaConsumer:
    """A consumer for reading the table's changelog in bulk (connector.kafka.bulk_recovery).

    No group and no commits (it is assigned partitions and sought); the worker's
    isolation level, as Faust's own consumer reads the changelog with it.
    """
    return consumer(
        settings,
        group_id=None,
        enable_auto_commit=False,
        isolation_level=settings.kafka.isolation_level,
        max_partition_fetch_bytes=CHANGELOG_FETCH_BYTES,
    )


# Per partition and fetch when a changelog is read in bulk. 4 MiB read no faster than
# 1 MiB and raised the recovering worker's peak RSS by 30 MB (100k orders: 197 MB
# against 167 MB, python -m bench.rebuild): the fetched bytes wait in aiokafka's buffer.
CHANGELOG_FETCH_BYTES = 1024 * 1024

MIGRATION_PATH = (
    "Adding partitions with Kafka's own tools moves keys to other partitions, which "
    "separates orders from their table state (a completed order could be reopened): do "
    "not add partitions to these topics by hand. To change the count, stop the producers "
    "and, once the lag is 0, the workers, then run `connector topics migrate --partitions "
    "N` (--dry-run first): it grows the events, parking and changelog topics and moves "
    "each order's state to its new partition; then set CONNECTOR_TOPICS__PARTITIONS=N. "
    "See README 'Changing the partition count'."
)


def partition_count_problems(settings: Settings, actual: Mapping[str, int]) -> list[str]:
    """What disagrees, given the partition counts of the topics that exist (by name).

    Pure, so ``connector check`` and tests can reason about it without a broker.
    The events topic, the parking topic and the table's changelog must have one count
    (they are co-partitioned: partition p of each lives on the same worker), and it must
    be ``CONNECTOR_TOPICS__PARTITIONS`` because Faust creates the missing ones with it.
    The control topic has one partition: operators' commands are written to and read
    from partition 0.
    """
    t = settings.topics
    expected = t.partitions
    co_partitioned = {
        "events": t.events,
        "parking": t.parking,
        "changelog": changelog_topic(settings),
    }
    problems: list[str] = []
    counts = {role: actual[name] for role, name in co_partitioned.items() if name in actual}
    if len(set(counts.values())) > 1:
        listing = ", ".join(
            f"{co_partitioned[role]} ({role}) has {count}" for role, count in counts.items()
        )
        problems.append(f"co-partitioned topics disagree: {listing}")
    for role, count in counts.items():
        if count != expected:
            problems.append(
                f"{co_partitioned[role]} ({role}) has {count} partitions but "
                f"CONNECTOR_TOPICS__PARTITIONS is {expected}"
            )
    control = t.control_topic
    if control in actual and actual[control] != 1:
        problems.append(
            f"{control} (control) has {actual[control]} partitions; it must have 1 "
            "(commands are written to and read from partition 0)"
        )
    return problems


async def _partition_counts(admin: AIOKafkaAdminClient, names: Iterable[str]) -> dict[str, int]:
    wanted = set(names)
    existing = wanted & set(await admin.list_topics())
    if not existing:
        return {}
    return {
        topic["topic"]: len(topic.get("partitions", []))
        for topic in await admin.describe_topics(sorted(existing))
        if topic.get("error_code", 0) == 0
    }


async def _check_partition_counts(admin: AIOKafkaAdminClient, settings: Settings) -> dict[str, int]:
    t = settings.topics
    names = [t.events, t.parking, t.control_topic, changelog_topic(settings)]
    actual = await _partition_counts(admin, names)
    problems = partition_count_problems(settings, actual)
    if problems:
        found = "; ".join(problems)
        raise ConfigurationError(
            f"partition counts disagree, refusing to run: {found}. {MIGRATION_PATH}"
        )
    return actual


async def verify_partition_counts(settings: Settings) -> dict[str, int]:
    """Raise :class:`ConfigurationError` when the co-partitioned topics disagree.

    Checks the events, parking, control and changelog topics that exist (a missing one
    is created later with the configured count). Returns the counts found, by topic.
    """
    admin = admin_client(settings)
    await admin.start()
    try:
        return await _check_partition_counts(admin, settings)
    finally:
        await admin.close()


async def ensure_topics(settings: Settings) -> list[TopicDefinition]:
    """Create the connector's topics that do not exist yet; returns those created.

    Refuses (:class:`ConfigurationError`) before creating anything when the existing
    topics' partition counts disagree: a worker must not join its group then.
    """
    admin = admin_client(settings)
    await admin.start()
    try:
        await _check_partition_counts(admin, settings)
        existing = set(await admin.list_topics())
        missing = [d for d in definitions(settings) if d.name not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            name=d.name,
                            num_partitions=d.partitions,
                            replication_factor=d.replication_factor,
                            topic_configs=d.configs,
                        )
                        for d in missing
                    ]
                )
            except TopicAlreadyExistsError:
                logger.info("topics created concurrently by another worker")
        for d in missing:
            logger.info("created topic %s (%d partitions)", d.name, d.partitions)
        return missing
    finally:
        await admin.close()
