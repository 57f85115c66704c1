"""Partition safety (issue 14, item 5): co-partitioned topics that disagree stop everything.

Against the real broker: ``verify_partition_counts``, ``connector topics ensure`` and
``connector worker`` refuse (exit code 2) when the events, parking or changelog topic has
another partition count, naming the topics, the counts and the migration path.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from connector.errors import ConfigurationError
from connector.infra.kafka_clients import verify_partition_counts
from connector.infra.topics import changelog_topic
from connector.settings import Settings, child_environment
from tests.conftest import NameFactory, TopicFactory

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


def _env(kafka_bootstrap: str, unique_name: NameFactory, tmp_path: Path) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CONNECTOR_APP_ID": unique_name("app"),
        "CONNECTOR_TOPICS__EVENTS": unique_name("events"),
        "CONNECTOR_TOPICS__AUDIT": unique_name("audit"),
        "CONNECTOR_TOPICS__DEAD_LETTER": unique_name("dlq"),
        "CONNECTOR_TOPICS__PARTITIONS": "3",
        "CONNECTOR_DATA_DIR": str(tmp_path / "data"),
        "CONNECTOR_STORE": "memory://",
        "CONNECTOR_WEB_ENABLED": "false",
        # The worker refuses to start without credentials; these are never used.
        "CONNECTOR_KOMBO__API_KEY": "partition-safety-kombo-key",
        "CONNECTOR_COMEET__TOKEN": "partition-safety-comeet-token",
    }


def _settings(env: dict[str, str]) -> Settings:
    return Settings.model_validate(
        {
            "app_id": env["CONNECTOR_APP_ID"],
            "kafka": {"bootstrap_servers": env["KAFKA_BOOTSTRAP_SERVERS"]},
            "topics": {
                "events": env["CONNECTOR_TOPICS__EVENTS"],
                "audit": env["CONNECTOR_TOPICS__AUDIT"],
                "dead_letter": env["CONNECTOR_TOPICS__DEAD_LETTER"],
                "partitions": int(env["CONNECTOR_TOPICS__PARTITIONS"]),
            },
        }
    )


async def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "connector.cli", *args],
            env=child_environment(env),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=ROOT,
        )

    return await asyncio.to_thread(run)


async def test_grown_changelog_stops_check_ensure_and_worker(
    kafka_bootstrap: str, unique_name: NameFactory, create_topic: TopicFactory, tmp_path: Path
) -> None:
    env = _env(kafka_bootstrap, unique_name, tmp_path)
    settings = _settings(env)
    events = await create_topic(settings.topics.events, 3)
    parked = await create_topic(settings.topics.parking, 3)
    assert await verify_partition_counts(settings) == {events: 3, parked: 3}

    # Someone grew the changelog (or it was made by hand): partition p of the table no
    # longer lives with partition p of the events.
    changelog = await create_topic(changelog_topic(settings), 5)
    with pytest.raises(ConfigurationError) as caught:
        await verify_partition_counts(settings)
    message = str(caught.value)
    assert f"{changelog} (changelog) has 5" in message
    assert f"{events} (events) has 3" in message
    assert "CONNECTOR_TOPICS__PARTITIONS is 3" in message
    assert "connector topics migrate --partitions" in message

    ensured = await _cli(env, "topics", "ensure")
    assert ensured.returncode == 2, ensured.stderr
    assert "configuration error: partition counts disagree" in ensured.stderr
    assert changelog in ensured.stderr
    # Refused before creating anything: the audit topic was not made.
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert settings.topics.audit not in await admin.list_topics()
        worker = await _cli(env, "worker")
        assert worker.returncode == 2, worker.stderr[-2000:]
        assert f"{changelog} (changelog) has 5" in worker.stderr
        # ... and before joining the consumer group.
        groups = {group[0] for group in await admin.list_consumer_groups()}
        assert settings.app_id not in groups
    finally:
        await admin.close()


async def test_configured_count_must_match_existing_events_topic(
    kafka_bootstrap: str, unique_name: NameFactory, create_topic: TopicFactory, tmp_path: Path
) -> None:
    env = _env(kafka_bootstrap, unique_name, tmp_path)
    settings = _settings(env)
    await create_topic(settings.topics.events, 2)  # the count an older deployment used
    ensured = await _cli(env, "topics", "ensure")
    assert ensured.returncode == 2
    assert f"{settings.topics.events} (events) has 2 partitions" in ensured.stderr
    assert "CONNECTOR_TOPICS__PARTITIONS is 3" in ensured.stderr

    env["CONNECTOR_TOPICS__PARTITIONS"] = "2"
    fixed = await _cli(env, "topics", "ensure")
    assert fixed.returncode == 0, fixed.stderr
    assert await verify_partition_counts(_settings(env)) == {
        settings.topics.events: 2,
        settings.topics.parking: 2,
        settings.topics.control_topic: 1,
    }
