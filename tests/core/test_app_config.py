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
