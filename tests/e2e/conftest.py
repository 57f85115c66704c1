from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from connector.sandbox import Sandboxes
from tests.e2e.harness import COMEET_TOKEN, KOMBO_KEY, Deployment


@pytest.fixture
async def sandboxes() -> AsyncIterator[Sandboxes]:
    async with Sandboxes(kombo_key=KOMBO_KEY, comeet_token=COMEET_TOKEN, seed=7) as sb:
        yield sb


@pytest.fixture
def deployment(
    kafka_bootstrap: str, sandboxes: Sandboxes, unique_name, tmp_path: Path
) -> Iterator[Deployment]:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "CONNECTOR_APP_ID": unique_name("app"),
        "CONNECTOR_TOPICS__EVENTS": unique_name("events"),
        "CONNECTOR_TOPICS__AUDIT": unique_name("audit"),
        "CONNECTOR_TOPICS__DEAD_LETTER": unique_name("dlq"),
        "CONNECTOR_TOPICS__PARTITIONS": "4",
        "CONNECTOR_KOMBO__BASE_URL": sandboxes.kombo_url,
        "CONNECTOR_KOMBO__API_KEY": KOMBO_KEY,
        "CONNECTOR_COMEET__BASE_URL": sandboxes.comeet_url,
        "CONNECTOR_COMEET__TOKEN": COMEET_TOKEN,
        "CONNECTOR_DATA_DIR": str(tmp_path / "data"),
        "CONNECTOR_STORE": "rocksdb://",
        "CONNECTOR_DELIVERY__BACKOFF_INITIAL_S": "0.05",
        "CONNECTOR_DELIVERY__BACKOFF_MAX_S": "0.5",
        "CONNECTOR_DELIVERY__MAX_ATTEMPTS": "4",
        "CONNECTOR_LOG_JSON": "true",
    }
    dep = Deployment(bootstrap=kafka_bootstrap, env=env, tmp=tmp_path)
    try:
        yield dep
    finally:
        dep.stop_all()
