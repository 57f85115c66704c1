"""Which partition counts disagree: the pure part of verify_partition_counts."""

from __future__ import annotations

from connector.errors import ConfigurationError, ConnectorError
from connector.infra.kafka_clients import MIGRATION_PATH, partition_count_problems
from connector.infra.topics import changelog_topic
from connector.settings import Settings


def _settings(partitions: int = 6) -> Settings:
    return Settings.model_validate(
        {
            "app_id": "app",
            "kafka": {"bootstrap_servers": "x:1"},
            "topics": {"partitions": partitions},
        }
    )


def test_agreeing_or_missing_topics_are_fine() -> None:
    settings = _settings()
    assert partition_count_problems(settings, {}) == []
    t = settings.topics
    counts = {t.events: 6, t.parking: 6, changelog_topic(settings): 6, t.control_topic: 1}
    assert partition_count_problems(settings, counts) == []
    # Audit and dead-letter counts do not matter for ordering.
    assert partition_count_problems(settings, {t.audit: 2, t.dead_letter: 9}) == []


def test_each_disagreement_is_named() -> None:
    settings = _settings()
    t = settings.topics
    assert changelog_topic(settings) == "app-orders-changelog"
    problems = partition_count_problems(settings, {t.events: 12, t.parking: 6})
    assert problems[0] == (
        "co-partitioned topics disagree: assessment.events (events) has 12, "
        "assessment.events.parked (parking) has 6"
    )
    assert "assessment.events (events) has 12 partitions but CONNECTOR_TOPICS__PARTITIONS is 6" in (
        problems
    )
    assert partition_count_problems(settings, {t.control_topic: 3}) == [
        "assessment.events.control (control) has 3 partitions; it must have 1 "
        "(commands are written to and read from partition 0)"
    ]


def test_error_type_and_migration_path() -> None:
    assert issubclass(ConfigurationError, ConnectorError)
    assert "connector topics migrate --partitions" in MIGRATION_PATH
    assert "CONNECTOR_TOPICS__PARTITIONS=N" in MIGRATION_PATH
    assert "do not add partitions to these topics by hand" in MIGRATION_PATH
