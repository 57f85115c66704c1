"""Each override of the adapter, against Faust's own behaviour (no broker).

Every test builds a real Faust app and consumer (never started): once with Faust's
aiokafka driver, where the upstream defect shows, once with the connector's driver.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from pydantic import ValidationError

from connector.app import create_app
from connector.domain.lifecycle import OrderState, decode_state
from connector.kafka import membership
from connector.kafka.commits import Commits
from connector.kafka.driver import ConnectorConsumer
from connector.kafka.faust_app import ConnectorFaust, TableStore, broker_url
from connector.kafka.guard import OffsetGuard
from connector.kafka.intake import Intake
from connector.settings import KafkaSettings, Settings

EVENTS = TP("events", 0)

_apps: list[Any] = []


@pytest.fixture(autouse=True)
def _close_consumer_loops() -> Any:
    """Each consumer creates its thread's event loop at once; none is run here."""
    yield
    while _apps:
        loop = _apps.pop().consumer._thread.thread_loop
        if not loop.is_closed():
            loop.close()


def make_app(tmp_path: Path, *, ours: bool, store: str = "memory://") -> faust.App:
    app_class = ConnectorFaust if ours else faust.App
    app = app_class(
        "driver-unit",
        broker=broker_url("127.0.0.1:1") if ours else "kafka://127.0.0.1:1",
        store=store,
        datadir=str(tmp_path),
        autodiscover=False,
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        env={},
    )
    if ours:
        app.managed_topics = {"events"}  # type: ignore[attr-defined]
    _apps.append(app)
    return app


async def test_the_connector_driver_is_picked_by_the_broker_url(tmp_path: Path) -> None:
    assert type(make_app(tmp_path, ours=True).consumer) is ConnectorConsumer
    assert type(make_app(tmp_path, ours=False).consumer) is not ConnectorConsumer


async def test_faust_commits_past_a_record_in_flight_and_the_coordinator_does_not(
    tmp_path: Path,
) -> None:
    # Committed 3 (the next record to finish is 3); 4..6 done, 3 still in flight. Faust's
    # "does the run start at the committed offset" check is off by one (#606 and kin).
    theirs: Any = make_app(tmp_path, ours=False).consumer
    theirs._committed_offset[EVENTS] = 3
    theirs._acked[EVENTS].extend([4, 5, 6])
    assert theirs._new_offset(EVENTS) == 7  # the defect: a commit past 3, in flight

    ours: Any = make_app(tmp_path, ours=True).consumer
    ours.assignment = lambda: {EVENTS}
    ours._committed_offset[EVENTS] = 3
    guard = OffsetGuard(ours, {"events"})
    ours.attach(guard, Intake(ours, guard, {}), Commits(ours, {"events": lambda p: 3}))
    assert ours._new_offset(EVENTS) is None  # nothing done past the committed offset
    ours.commits = Commits(ours, {"events": lambda p: 5})
    assert list(ours._filter_tps_with_pending_acks()) == [EVENTS]
    assert ours._new_offset(EVENTS) == 5


def _seek_stubs(consumer: Any, sought: dict[Any, int]) -> None:
    async def seek_to_committed() -> dict[Any, int]:
        return {}  # the partition has no committed offset

    async def earliest_offsets(*tps: Any) -> dict[Any, int]:
        return {tp: 0 for tp in tps}

    async def seek(tp: Any, offset: int) -> None:
        sought[tp] = offset

    consumer.seek_to_committed = seek_to_committed
    consumer.earliest_offsets = earliest_offsets
    consumer.seek = seek
    consumer.assignment = lambda: {EVENTS}


async def test_faust_leaves_a_partition_without_committed_offset_where_it_was(
    tmp_path: Path,
) -> None:
    sought: dict[Any, int] = {}
    theirs: Any = make_app(tmp_path, ours=False).consumer
    _seek_stubs(theirs, sought)
    await theirs.perform_seek()
    assert sought == {}  # the defect: records read and never finished are skipped

    ours: Any = make_app(tmp_path, ours=True).consumer
    _seek_stubs(ours, sought)
    guard = OffsetGuard(ours, {"events"})
    ours.attach(guard, Intake(ours, guard, {}), Commits(ours, {"events": lambda p: None}))
    await ours.perform_seek()
    assert sought == {EVENTS: 0}


async def test_faust_reads_uncommitted_records_and_the_connector_does_not(tmp_path: Path) -> None:
    theirs: Any = make_app(tmp_path, ours=False).consumer
    ours: Any = make_app(tmp_path, ours=True).consumer
    levels = []
    for consumer in (theirs, ours):
        client = consumer._thread._create_worker_consumer(consumer.transport)
        levels.append(client._isolation_level)
        client._closed = True  # never started: nothing to close (aiokafka warns otherwise)
    assert levels == ["read_uncommitted", "read_committed"]  # Faust's is the defect


async def test_read_offsets_are_not_kept_for_the_connector_s_topics(tmp_path: Path) -> None:
    theirs: Any = make_app(tmp_path, ours=False).consumer
    theirs._read_offset[EVENTS] = 9
    assert theirs._read_offset[EVENTS] == 9  # a fetched record below 9 would be dropped
    ours: Any = make_app(tmp_path, ours=True).consumer
    ours._read_offset[EVENTS] = 9
    assert ours._read_offset[EVENTS] is None


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    async def send(self, topic: str, value: bytes, *, key: bytes, partition: int) -> Any:
        self.sent.append((topic, partition))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        return fut


async def test_faust_s_store_needs_a_current_event_and_the_table_store_takes_a_partition(
    tmp_path: Path,
) -> None:
    pytest.importorskip("rocksdict")
    app = make_app(tmp_path, ours=True, store="rocksdb://")
    table = app.Table("orders", key_type=bytes, value_type=bytes, partitions=4)
    with pytest.raises(AssertionError):
        table.data[b"k"] = b"v"  # the defect: the partition comes from a context variable
    producer = _Producer()
    store = TableStore(table, lambda: producer)  # type: ignore[arg-type]
    state = OrderState()
    await store.put(3, b"comeet|e-1", state)
    assert producer.sent == [(table.changelog_topic.get_topic_name(), 3)]
    store.forget()
    assert decode_state(table.data._db_for_partition(3).get(b"comeet|e-1")) == state
    assert store.get(3, b"comeet|e-1") == state
    assert table.data._db_for_partition(2).get(b"comeet|e-1") is None  # not another's


class _Acked:
    def __init__(self, offset: int) -> None:
        self.offset = offset


async def test_changelog_offsets_are_persisted_gathered_highest_first_and_on_forget(
    tmp_path: Path,
) -> None:
    """One RocksDB put per changelog record was ~2% of a worker's CPU (issue 22): the
    store writes the highest acknowledged offset of a partition once per interval, and
    before a revoke closes the stores; never an offset ahead of what it stored."""
    app = make_app(tmp_path, ours=True)
    table = app.Table("orders", key_type=bytes, value_type=bytes, partitions=4)
    persisted: list[tuple[int, int]] = []
    table.data.set_persisted_offset = lambda tp, offset: persisted.append(  # type: ignore[method-assign]
        (tp.partition, offset)
    )
    producer = _Producer()
    store = TableStore(table, lambda: producer)  # type: ignore[arg-type]
    store.PERSIST_EVERY_S = 0.05
    futures = [await store.put(1, f"comeet|e-{n}".encode(), OrderState()) for n in range(5)]
    for offset, fut in zip((10, 12, 11, 14, 13), futures, strict=True):  # acks out of order
        fut.set_result(_Acked(offset))
    await asyncio.sleep(0)
    assert persisted == []  # gathered, not one put per record
    await asyncio.sleep(0.1)
    assert persisted == [(1, 14)]
    late = await store.put(2, b"comeet|e-9", OrderState())
    late.set_result(_Acked(7))
    await asyncio.sleep(0)
    store.forget()  # a revoke: written before the stores close, not lost with the timer
    assert persisted == [(1, 14), (2, 7)]
    await asyncio.sleep(0.1)
    assert persisted == [(1, 14), (2, 7)]


class _Revoking:
    """What a revoke asks of the consumer, recorded."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.commits = self

    async def wait_empty(self) -> None:
        self.calls.append("wait_empty")
        await asyncio.Event().wait()  # a record admitted and never acknowledged

    async def commit_now(self) -> None:
        self.calls.append("commit_now")

    def forget_unacked(self) -> None:
        self.calls.append("forget_unacked")

    async def commit(self) -> bool:
        self.calls.append("commit")
        return True


class _Worker:
    def __init__(self) -> None:
        self.fenced: list[int] = []
        self.drained = 0

    def fence_generation(self, generation: int) -> None:
        self.fenced.append(generation)

    async def fence_and_drain(self) -> None:
        self.drained += 1


async def test_faust_waits_on_revoke_for_every_admitted_record_and_the_connector_does_not(
    tmp_path: Path,
) -> None:
    # Faust (stream_wait_empty, its default) waits until every admitted record is
    # acknowledged: retries and backoffs outlive the group's rebalance timeout.
    theirs = make_app(tmp_path, ours=False)
    consumer = _Revoking()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(theirs._consumer_wait_empty(consumer, logging.getLogger("t")), 0.2)  # type: ignore[arg-type]
    assert consumer.calls == ["wait_empty"]

    ours: Any = make_app(tmp_path, ours=True)
    ours.connector = worker = _Worker()
    consumer = _Revoking()
    await asyncio.wait_for(ours._consumer_wait_empty(consumer, logging.getLogger("t")), 1.0)
    assert worker.drained == 1  # fenced jobs ended; only calls on the wire were awaited
    assert consumer.calls == ["commit_now", "forget_unacked", "commit"]
    ours.on_rebalance_start()  # from Faust's consumer thread: one write fences a generation
    assert worker.fenced == [ours.consumer_generation_id]


def _group_client(tmp_path: Path, **settings: Any) -> Any:
    """The aiokafka consumer the worker's driver builds from the connector's settings."""
    connector = create_app(
        Settings(
            kafka={"bootstrap_servers": "127.0.0.1:1", **settings.pop("kafka", {})},
            data_dir=str(tmp_path),
            web_enabled=False,
            **settings,
        )
    )
    _apps.append(connector.app)
    consumer: Any = connector.app.consumer
    client = consumer._thread._create_worker_consumer(consumer.transport)
    client._closed = True  # never started: nothing to close
    return client


async def test_a_killed_worker_is_noticed_in_seconds_and_a_restarted_one_rejoins_as_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 22: with Faust's 60 s session a SIGKILLed worker's partitions were silent for
    # a minute (BENCHMARKS.md "Failover"); a restarted worker joined as a new member, so
    # the group rebalanced when it died and again when it came back.
    for name in ("SESSION_TIMEOUT_S", "HEARTBEAT_INTERVAL_S", "STATIC_MEMBERSHIP"):
        monkeypatch.delenv(f"CONNECTOR_KAFKA__{name}", raising=False)
    client = _group_client(tmp_path, worker_id="assessment-connector-1")
    assert client._session_timeout_ms == 10_000
    assert client._heartbeat_interval_ms == 1_000
    assert client._group_instance_id.startswith("assessment-connector-1-")
    assert client._group_id == Settings().app_id

    dynamic = _group_client(tmp_path / "dynamic", worker_id="w", kafka={"static_membership": False})
    assert dynamic._group_instance_id is None


def test_a_heartbeat_as_long_as_the_session_is_refused() -> None:
    with pytest.raises(ValidationError, match="heartbeat_interval_s"):
        KafkaSettings(session_timeout_s=6, heartbeat_interval_s=6)


async def test_the_consumer_thread_makes_a_static_member_leave_when_it_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aiokafka skips LeaveGroup for a static member (tests/kafka/test_membership.py shows
    # it against a broker); the connector's thread hands its started client to
    # leave_on_stop.
    class Coordinator:
        _group_instance_id = "w1"

        async def _maybe_leave_group(self) -> None:  # aiokafka's: nothing for a static member
            return None

    class Client:
        _coordinator = Coordinator()

    async def started(thread: Any) -> None:
        thread._consumer = Client()

    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "on_start", started)
    consumer: Any = make_app(tmp_path, ours=True).consumer
    thread = consumer._thread
    await thread.on_start()
    leave = thread._consumer._coordinator._maybe_leave_group
    assert getattr(leave, "func", None) is membership._leave


async def test_a_worker_whose_url_changed_rejoins_as_a_new_static_member(tmp_path: Path) -> None:
    # A static member is handed its previous incarnation's assignment, URL included, and
    # Faust's assignor asserts the URL is its own: the consumer stopped for good when a
    # worker came back under its id on another port (tests/e2e/test_resilience.py).
    def instance(**settings: Any) -> str:
        app = create_app(Settings(**{**base, **settings})).app
        _apps.append(app)
        assert app.conf.consumer_group_instance_id.endswith(
            hashlib.sha256(str(app.conf.canonical_url).encode()).hexdigest()[:10]
        )
        return str(app.conf.consumer_group_instance_id)

    base: dict[str, Any] = {
        "kafka": {"bootstrap_servers": "127.0.0.1:1"},
        "data_dir": str(tmp_path),
        "web_enabled": False,
        "worker_id": "w1",
        "web_advertised_host": "w1.connector.prod.svc",
    }
    assert instance(web_port=6066) == instance(web_port=6066)  # a restarted pod: static
    assert instance(web_port=6066) != instance(web_port=6067)
    assert re.fullmatch(r"[A-Za-z0-9._-]+", instance(worker_id="bad id/ü", web_port=1))
