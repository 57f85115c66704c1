"""Shared fixtures: one real Kafka broker per test session, per-test topic and group names.

With ``KAFKA_BOOTSTRAP_SERVERS`` set (see :func:`connector.settings.external_bootstrap_servers`)
the tests use that broker and start none; otherwise one local Apache Kafka broker
(:class:`connector.local.kafka.LocalKafka`) runs for the whole session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from typing import Protocol

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

from connector.local.kafka import LocalKafka, find_local_brokers, kill_orphaned_brokers
from connector.settings import external_bootstrap_servers

log = logging.getLogger(__name__)

# The session's own broker, so the per-test leak check can tell it from strays without
# requesting (and so starting) it.
_session_broker: LocalKafka | None = None


def use_external_kafka() -> str | None:
    """The external bootstrap servers to use, or ``None`` to start a local broker."""
    return external_bootstrap_servers() or None


# -- broker -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka | None]:
    global _session_broker
    if use_external_kafka() is not None:
        yield None
        return
    log_file = tmp_path_factory.mktemp("kafka") / "broker.log"
    kafka = LocalKafka(log_file=log_file)
    kafka.start()
    record_kafka_startup("session broker", kafka)
    _session_broker = kafka
    try:
        yield kafka
    finally:
        _session_broker = None
        kafka.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(_kafka_broker: LocalKafka | None) -> str:
    """Bootstrap servers of the session's broker: the external one, or a local one."""
    if _kafka_broker is None:
        external = use_external_kafka()
        assert external is not None
        return external
    return _kafka_broker.bootstrap_servers


@pytest.fixture(scope="session")
def local_kafka(_kafka_broker: LocalKafka | None) -> LocalKafka:
    """The session's local broker, for tests that stop, kill or restart it.

    Such a test must leave it running (``restart()``/``start()``) for the tests after it.
    """
    if _kafka_broker is None:
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS is set: this test needs the local broker to control")
    return _kafka_broker


# -- per-test names and topics ------------------------------------------------------------


class NameFactory(Protocol):
    def __call__(self, prefix: str) -> str: ...


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> NameFactory:
    """``make_name("events")`` -> ``"events-<test name>-<8 hex>"``, valid as topic and group id."""
    test = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name.removeprefix("test_")).strip("-")
    test = test[:40].rstrip("-._") or "test"

    def make_name(prefix: str) -> str:
        return f"{prefix}-{test}-{uuid.uuid4().hex[:8]}"

    return make_name


class TopicFactory(Protocol):
    def __call__(
        self,
        name: str | None = None,
        partitions: int = 1,
        *,
        replication_factor: int = 1,
        config: Mapping[str, str] | None = None,
    ) -> Awaitable[str]: ...


@pytest.fixture
async def create_topic(
    kafka_bootstrap: str, unique_name: NameFactory
) -> AsyncIterator[TopicFactory]:
    """``await create_topic(partitions=3)`` -> a new topic's name; deleted after the test.

    Returns once every partition has a leader.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    created: list[str] = []

    async def create(
        name: str | None = None,
        partitions: int = 1,
        *,
        replication_factor: int = 1,
        config: Mapping[str, str] | None = None,
    ) -> str:
        topic = name or unique_name("topic")
        response = await admin.create_topics(
            [NewTopic(topic, partitions, replication_factor, topic_configs=dict(config or {}))]
        )
        for result in response.topic_errors:
            if result[1] != 0:
                raise for_code(result[1])(f"creating topic {result[0]!r}: {result[2:]}")
        created.append(topic)
        await _wait_for_leaders(admin, topic, partitions)
        return topic

    try:
        yield create
    finally:
        if created:
            try:
                await admin.delete_topics(created, timeout_ms=10_000)
            except Exception:  # best effort: the broker may be down by design
                log.warning("Could not delete topics %s", created, exc_info=True)
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, topic: str, partitions: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15.0
    while True:
        [description] = await admin.describe_topics([topic])
        leaders = [p["leader"] for p in description.get("partitions", [])]
        if len(leaders) == partitions and all(leader >= 0 for leader in leaders):
            return
        if loop.time() > deadline:
            raise TimeoutError(f"topic {topic!r} has no leader for every partition: {description}")
        await asyncio.sleep(0.1)


# -- no broker left behind ----------------------------------------------------------------


def _stray_brokers() -> dict[int, int]:
    """Brokers launched by this test process other than the session's own."""
    strays = find_local_brokers(owner_pid=os.getpid())
    if _session_broker is not None and _session_broker.pid is not None:
        strays.pop(_session_broker.pid, None)
    return strays


def _kill(pids: Iterator[int] | list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


@pytest.fixture(autouse=True)
def _no_broker_left_behind() -> Iterator[None]:
    """Fail a test that leaves a Kafka JVM of its own running (and kill it)."""
    yield
    strays = _stray_brokers()
    if strays:
        _kill(list(strays))
        pytest.fail(f"test left Kafka broker process(es) running: {sorted(strays)} (killed)")


def pytest_sessionstart(session: pytest.Session) -> None:
    # Brokers of an earlier run whose pytest was SIGKILLed would hold memory and ports.
    kill_orphaned_brokers()


@pytest.hookimpl(trylast=True)  # after the session fixtures have been torn down
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leftovers = find_local_brokers(owner_pid=os.getpid())
    if not leftovers:
        return
    _kill(list(leftovers))
    message = f"Kafka broker process(es) still running at session end, killed: {sorted(leftovers)}"
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write("\n")
        reporter.write_line(message, red=True)
    else:
        log.error("%s", message)
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_report_header(config: pytest.Config) -> str:
    external = use_external_kafka()
    return f"kafka: {'external ' + external if external else 'local broker (started on demand)'}"


_startup_times: list[tuple[str, float]] = []


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _startup_times:
        terminalreporter.write_line(
            "local Kafka start-to-ready: "
            + ", ".join(f"{what} {seconds:.1f} s" for what, seconds in _startup_times)
        )


def record_kafka_startup(what: str, kafka: LocalKafka) -> None:
    """Note a broker start-to-ready time for the end-of-session summary."""
    if kafka.startup_seconds is not None:
        _startup_times.append((what, kafka.startup_seconds))
