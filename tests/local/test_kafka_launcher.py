"""Acceptance tests for the local Apache Kafka launcher (``connector/local/kafka.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.protocol.admin import ApiVersionRequest
from aiokafka.structs import ConsumerRecord

from connector.local.kafka import (
    KAFKA_VERSION,
    LocalKafka,
    LocalKafkaError,
    find_local_brokers,
    kafka_cache_dir,
)
from tests.conftest import NameFactory, TopicFactory, record_kafka_startup, use_external_kafka

REPO_ROOT = Path(__file__).resolve().parents[2]

FETCH_API_KEY = 1
CONSUMER_GROUP_HEARTBEAT_API_KEY = 68


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _port_free(port: int) -> bool:
    """A new server could listen on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
    return True


async def _topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()


async def _read_all(bootstrap: str, topic: str, count: int) -> list[bytes | None]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        values: list[bytes | None] = []
        async with asyncio.timeout(30):
            while len(values) < count:
                values.append((await consumer.getone()).value)
        return values
    finally:
        await consumer.stop()


@pytest.mark.kafka
async def test_broker_is_a_real_kafka_4(
    kafka_bootstrap: str, request: pytest.FixtureRequest
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    assert cluster["cluster_id"]
    assert cluster["brokers"]

    host, port = kafka_bootstrap.split(",")[0].rsplit(":", 1)
    conn = await create_conn(host, int(port))
    try:
        response = await conn.send(ApiVersionRequest())
    finally:
        conn.close()
    versions = {key: (low, high) for key, low, high in response.api_versions}
    # Kafka 4.0 removed Fetch v0-v3 (KIP-896): every 3.x broker still accepts Fetch v0.
    assert versions[FETCH_API_KEY][0] >= 4, versions[FETCH_API_KEY]
    # The KIP-848 consumer group protocol, generally available from 4.0.
    assert CONSUMER_GROUP_HEARTBEAT_API_KEY in versions

    if use_external_kafka() is None:
        local: LocalKafka = request.getfixturevalue("local_kafka")
        assert cluster["cluster_id"] == local.cluster_id
        assert local.log_file is not None
        match = re.search(r"Kafka version: (\S+)", local.log_file.read_text(errors="replace"))
        assert match is not None, "no 'Kafka version:' line in the broker log"
        assert match.group(1) == local.version
        assert match.group(1).startswith("4.")


@pytest.mark.kafka
async def test_group_resumes_from_committed_offset(
    kafka_bootstrap: str, create_topic: TopicFactory, unique_name: NameFactory
) -> None:
    topic = await create_topic(partitions=1)
    group = unique_name("group")
    partition = TopicPartition(topic, 0)

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, f"message-{i}".encode(), partition=0)
    finally:
        await producer.stop()

    def consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # without a committed offset: start over at 0
        )

    first = consumer()
    await first.start()
    try:
        records: list[ConsumerRecord[bytes, bytes]] = []
        async with asyncio.timeout(30):
            while len(records) < 4:
                batch = await first.getmany(timeout_ms=500, max_records=4 - len(records))
                records += batch.get(partition, [])
        assert [record.offset for record in records] == [0, 1, 2, 3]
        await first.commit({partition: records[-1].offset + 1})
    finally:
        await first.stop()

    second = consumer()
    await second.start()
    try:
        assert await second.committed(partition) == 4
        async with asyncio.timeout(30):
            record = await second.getone()
        assert (record.offset, record.value) == (4, b"message-4")
    finally:
        await second.stop()


@pytest.mark.kafka
@pytest.mark.slow
async def test_lifecycle_stop_restart_kill(tmp_path: Path, unique_name: NameFactory) -> None:
    kafka = LocalKafka(log_file=tmp_path / "broker.log")
    try:
        await asyncio.to_thread(kafka.start)
        record_kafka_startup("own broker", kafka)
        bootstrap, cluster_id, data_dir = kafka.bootstrap_servers, kafka.cluster_id, kafka.data_dir
        first_pid = kafka.pid
        assert first_pid is not None
        assert _pid_exists(first_pid)
        assert data_dir is not None
        assert data_dir.is_dir()

        topic = unique_name("durable")
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 1, 1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"before-restart")
        finally:
            await producer.stop()

        # restart(): same ports, same data, a new JVM.
        await asyncio.to_thread(kafka.restart)
        record_kafka_startup("restart", kafka)
        assert kafka.pid is not None
        assert kafka.pid != first_pid
        assert not _pid_exists(first_pid)
        assert (kafka.bootstrap_servers, kafka.cluster_id, kafka.data_dir) == (
            bootstrap,
            cluster_id,
            data_dir,
        )
        assert topic in await _topics(bootstrap)
        assert await _read_all(bootstrap, topic, 1) == [b"before-restart"]

        # kill(): a crash; the data survives it too.
        crashed_pid = kafka.pid
        await asyncio.to_thread(kafka.kill)
        assert kafka.pid is None
        assert not _pid_exists(crashed_pid)
        await asyncio.to_thread(kafka.start)
        record_kafka_startup("start after kill", kafka)
        assert topic in await _topics(bootstrap)

        # stop(): process gone, ports free, temporary data removed; idempotent.
        last_pid = kafka.pid
        assert last_pid is not None
        await asyncio.to_thread(kafka.stop)
        assert kafka.pid is None
        assert not _pid_exists(last_pid)
        assert _port_free(kafka.port)
        assert _port_free(kafka.controller_port)
        assert not data_dir.exists()
        assert kafka.data_dir is None
        assert find_local_brokers(owner_pid=os.getpid()).keys() <= _session_pids()
        kafka.stop()
    finally:
        kafka.stop()


def _session_pids() -> set[int]:
    from tests import conftest

    broker = conftest._session_broker
    return {broker.pid} if broker is not None and broker.pid is not None else set()


def test_bad_configuration_is_reported_with_the_log(tmp_path: Path) -> None:
    kafka = LocalKafka(extra_properties={"node.id": "not-a-number"}, log_file=tmp_path / "b.log")
    with pytest.raises(LocalKafkaError, match="format failed") as failure:
        kafka.start()
    assert str(tmp_path / "b.log") in str(failure.value)
    assert "Invalid value not-a-number" in str(failure.value)  # the tail of the log
    assert kafka.pid is None
    kafka.stop()


@pytest.mark.kafka
def test_broker_dying_at_startup_is_reported_with_the_log(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        kafka = LocalKafka(taken.getsockname()[1], log_file=tmp_path / "b.log")
        try:
            with pytest.raises(LocalKafkaError, match="exited with code") as failure:
                kafka.start()
            assert "Address already in use" in str(failure.value)
            assert kafka.pid is None
        finally:
            kafka.stop()


@pytest.mark.slow
def test_concurrent_fetches_share_one_maven_run(tmp_path: Path) -> None:
    """Two processes filling an empty cache at once: one runs Maven, the other waits for it."""
    script = (
        "import logging, sys\n"
        "from connector.local.kafka import ensure_kafka_artifacts\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "print(ensure_kafka_artifacts(sys.argv[1]))\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=100) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    lib = kafka_cache_dir(KAFKA_VERSION, tmp_path) / "lib"
    assert {stdout.strip() for stdout, _ in outputs} == {str(lib)}
    assert sum(stderr.count("Fetching Apache Kafka") for _, stderr in outputs) == 1, outputs
    assert (lib / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file()
    assert not (lib.parent / "lib.partial").exists()


def test_external_broker_configured_starts_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With KAFKA_BOOTSTRAP_SERVERS set, a whole pytest session starts no broker."""
    external = "127.0.0.1:1"  # never connected to: the fixtures must only hand it out
    inner = tmp_path / "test_inner_external.py"
    inner.write_text(
        textwrap.dedent(
            f"""
            import os

            from connector.local.kafka import find_local_brokers


            def test_bootstrap_is_the_external_one(kafka_bootstrap):
                assert kafka_bootstrap == {external!r}
                assert find_local_brokers(owner_pid=os.getpid()) == {{}}


            def test_local_kafka_is_skipped(local_kafka):
                raise AssertionError("local_kafka must skip with an external broker")
            """
        )
    )
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", external)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            "-c",
            str(REPO_ROOT / "pyproject.toml"),
            "--rootdir",
            str(REPO_ROOT),
            "-q",
            "-rs",
            str(inner),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 passed, 1 skipped" in output, output
    assert "KAFKA_BOOTSTRAP_SERVERS is set" in output, output


@pytest.mark.kafka
@pytest.mark.slow
def test_cli_runs_until_sigterm(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "connector.local.kafka", "--log-file", str(tmp_path / "b.log")]
    with subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        brokers: dict[int, int] = {}
        try:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            assert re.fullmatch(r"127\.0\.0\.1:\d+", line), line
            brokers = find_local_brokers(owner_pid=process.pid)
            assert len(brokers) == 1
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
            assert process.returncode == 0, stderr
            assert not any(_pid_exists(pid) for pid in brokers)
            assert _port_free(int(line.rsplit(":", 1)[1]))
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
            for pid in find_local_brokers(owner_pid=process.pid) | brokers:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
