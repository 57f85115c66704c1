"""aiokafka clients configured from the settings (security included), and topic admin."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from connector.settings import KafkaSettings, Settings
from connector.topics import TopicDefinition, definitions

__all__ = [
    "admin_client",
    "client_kwargs",
    "consumer",
    "ensure_topics",
    "producer",
    "ssl_context",
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


async def ensure_topics(settings: Settings) -> list[TopicDefinition]:
    """Create the connector's topics that do not exist yet; returns those created."""
    admin = admin_client(settings)
    await admin.start()
    try:
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
