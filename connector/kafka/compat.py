"""The exact library versions the adapter was verified against, and the start-up check.

:mod:`connector.kafka` overrides and reads internals of faust-streaming, mode,
aiokafka, httpx and httpx-aiohttp. A new release can rename or reshape any of them
without notice, and several breakages would be silent (records never acknowledged,
commits falling back to Faust's wrong offsets, a recovery fix switched off). So:

* ``pyproject.toml`` pins these libraries to :data:`PINS` exactly;
* :func:`verify_libraries` runs before a worker starts: it refuses another version,
  and checks that every internal the adapter uses is still there with the shape it
  was written against (a method's parameters, a coroutine, a call made in Faust's own
  source). The refusal is one line: the library, the version found, the version
  expected, and what to do.

Upgrading a library: change its pin here and in ``pyproject.toml``, run
``tests/kafka`` (each adapter override has a test showing the upstream defect), the
e2e suite and the benchmark, then adjust :data:`NEEDS` to what the adapter uses.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connector.errors import IncompatibleLibraryError

__all__ = ["NEEDS", "PINS", "Need", "verify_libraries"]

logger = logging.getLogger(__name__)

# distribution name -> the version connector.kafka was verified against.
PINS: dict[str, str] = {
    "faust-streaming": "0.15.3",
    "mode-streaming": "0.7.1",
    "aiokafka": "0.14.0",
    "httpx": "0.28.1",
    "httpx-aiohttp": "0.2.0",
}


@dataclass(frozen=True)
class Need:
    """One internal the adapter uses: where it is, what shape it must have."""

    library: str  # distribution name, a key of PINS
    name: str  # "module:Attr.path"
    shape: str  # what must hold, said for the refusal line
    holds: Callable[[Any], bool]


def _params(*names: str) -> Callable[[Any], bool]:
    """A function whose parameters after ``self`` start with ``names``."""

    def holds(fn: Any) -> bool:
        try:
            params = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            return False
        if params and params[0] == "self":
            params = params[1:]
        return params[: len(names)] == list(names)

    return holds


def _coroutine(*names: str) -> Callable[[Any], bool]:
    check = _params(*names)
    return lambda fn: inspect.iscoroutinefunction(fn) and check(fn)


def _source_has(*needles: str) -> Callable[[Any], bool]:
    """Faust's own code still makes these calls (what the overrides hook into)."""

    def holds(obj: Any) -> bool:
        obj = getattr(obj, "fun", obj)  # mode's @Service.task wraps the coroutine function
        try:
            source = inspect.getsource(obj)
        except (OSError, TypeError):
            return False
        return all(needle in source for needle in needles)

    return holds


def _exists(obj: Any) -> bool:
    return obj is not None


_FAUST_CONSUMER = "faust.transport.consumer:Consumer"
_AIOKAFKA_DRIVER = "faust.transport.drivers.aiokafka"
_ROCKSDB_STORE = "faust.stores.rocksdb:Store"
_COORDINATOR = "aiokafka.consumer.group_coordinator:GroupCoordinator"

NEEDS: tuple[Need, ...] = (
    # connector.kafka.driver: the consumer's overrides and what Faust calls them from.
    Need(
        "faust-streaming",
        f"{_AIOKAFKA_DRIVER}:Consumer._getmany",
        "coroutine (active_partitions, timeout)",
        _coroutine("active_partitions", "timeout"),
    ),
    Need(
        "faust-streaming",
        f"{_FAUST_CONSUMER}._wait_next_records",
        "the fetch loop calls self._getmany",
        _source_has("self._getmany("),
    ),
    Need(
        "faust-streaming",
        f"{_FAUST_CONSUMER}._drain_messages",
        "the fetch loop binds self._read_offset",
        _source_has("self._read_offset.__getitem__"),
    ),
    Need("faust-streaming", f"{_FAUST_CONSUMER}._new_offset", "method (tp)", _params("tp")),
    Need(
        "faust-streaming",
        f"{_FAUST_CONSUMER}._filter_tps_with_pending_acks",
        "method (topics)",
        _params("topics"),
    ),
    Need(
        "faust-streaming",
        f"{_FAUST_CONSUMER}._filter_committable_offsets",
        "commit asks self._new_offset per partition",
        _source_has("self._new_offset(tp)"),
    ),
    Need(
        "faust-streaming",
        f"{_FAUST_CONSUMER}.force_commit",
        "commit takes partitions from self._filter_tps_with_pending_acks",
        _source_has("self._filter_tps_with_pending_acks("),
    ),
    Need(
        "faust-streaming",
        f"{_FAUST_CONSUMER}._commit_offsets",
        "coroutine (offsets) that flushes the producer before it commits",
        lambda fn: _coroutine("offsets")(fn) and _source_has("await self.app.producer.flush()")(fn),
    ),
    Need("faust-streaming", f"{_FAUST_CONSUMER}.perform_seek", "coroutine ()", _coroutine()),
    Need(
        "faust-streaming",
        f"{_FAUST_CONSUMER}.__init__",
        "sets _committed_offset, _read_offset, _acked, _unacked_messages",
        _source_has("self._committed_offset", "self._read_offset", "self._unacked_messages"),
    ),
    Need("faust-streaming", f"{_FAUST_CONSUMER}.on_buffer_full", "method (tp)", _params("tp")),
    Need("faust-streaming", f"{_FAUST_CONSUMER}.on_buffer_drop", "method (tp)", _params("tp")),
    Need(
        "faust-streaming",
        f"{_FAUST_CONSUMER}._set_active_tps",
        "keeps _active_partitions",
        _source_has("self._active_partitions"),
    ),
    Need(
        "faust-streaming",
        f"{_AIOKAFKA_DRIVER}:Consumer._new_consumer_thread",
        "method ()",
        _params(),
    ),
    Need(
        "faust-streaming",
        f"{_AIOKAFKA_DRIVER}:AIOKafkaConsumerThread._create_worker_consumer",
        "method (transport)",
        _params("transport"),
    ),
    # connector.app: the group settings reach aiokafka only through Faust's consumer; a
    # release that stopped passing one would silently fall back to aiokafka's default
    # (dynamic membership: a restarted worker's partitions rebalanced twice).
    Need(
        "faust-streaming",
        f"{_AIOKAFKA_DRIVER}:AIOKafkaConsumerThread._create_worker_consumer",
        "passes group_instance_id, session, heartbeat and rebalance timeouts to aiokafka",
        _source_has(
            "group_instance_id=conf.consumer_group_instance_id",
            "session_timeout_ms=",
            "heartbeat_interval_ms=int(conf.broker_heartbeat_interval",
            "rebalance_timeout_ms=",
        ),
    ),
    Need("faust-streaming", f"{_AIOKAFKA_DRIVER}:Transport.Consumer", "class attribute", _exists),
    Need(
        "faust-streaming",
        "faust.transport.drivers:TRANSPORTS",
        "entry-point registry of drivers",
        lambda t: hasattr(t, "by_url"),
    ),
    # connector.kafka.faust_app
    Need(
        "faust-streaming",
        "faust.app.base:App._consumer_wait_empty",
        "coroutine (consumer, logger)",
        _coroutine("consumer", "logger"),
    ),
    Need(
        "faust-streaming",
        "faust.app.base:App._on_partitions_revoked",
        "the revoke waits through self._consumer_wait_empty",
        _source_has("self._consumer_wait_empty"),
    ),
    Need("faust-streaming", "faust.app.base:App.on_rebalance_start", "method ()", _params()),
    Need(
        "faust-streaming", f"{_AIOKAFKA_DRIVER}:Producer._ensure_producer", "method ()", _params()
    ),
    Need(
        "faust-streaming",
        f"{_ROCKSDB_STORE}._db_for_partition",
        "method (partition)",
        _params("partition"),
    ),
    Need(
        "faust-streaming",
        f"{_ROCKSDB_STORE}._set",
        "writes through _db_for_partition and _key_index",
        _source_has("self._db_for_partition(partition)", "self._key_index[key] = partition"),
    ),
    Need(
        "faust-streaming",
        "faust.stores.base:SerializedStore._encode_key",
        "method (key)",
        _params("key"),
    ),
    Need(
        "faust-streaming",
        "faust.stores.base:SerializedStore._encode_value",
        "method (value)",
        _params("value"),
    ),
    Need(
        "faust-streaming",
        "faust.stores.base:SerializedStore._decode_value",
        "method (value)",
        _params("value"),
    ),
    # connector.kafka.recovery
    Need(
        "faust-streaming",
        "faust.tables.manager:TableManager.recovery",
        "property creating Recovery into _recovery",
        lambda p: isinstance(p, property) and _source_has("self._recovery")(p.fget),
    ),
    Need(
        "faust-streaming",
        "faust.tables.recovery:Recovery._wait",
        "coroutine (coro, timeout)",
        _coroutine("coro", "timeout"),
    ),
    Need(
        "faust-streaming",
        "faust.tables.recovery:Recovery._restart_recovery",
        "waits through self._wait and signal_recovery_end",
        _source_has("self._wait(", "self.signal_recovery_end.wait()"),
    ),
    Need(
        "faust-streaming",
        "faust.tables.recovery:Recovery.signal_recovery_end",
        "kept in _signal_recovery_end",
        lambda p: _source_has("self._signal_recovery_end")(getattr(p, "fget", p)),
    ),
    Need(
        "faust-streaming",
        "faust.tables.recovery:Recovery._set_recovery_started",
        "sets _recovery_started_at",
        _source_has("self._recovery_started_at = "),
    ),
    Need(
        "faust-streaming",
        "faust.tables.recovery:Recovery.__init__",
        "keeps _active_events_received_at",
        _source_has("self._active_events_received_at"),
    ),
    Need(
        "faust-streaming", "faust.tables.recovery:Recovery.active_remaining", "method ()", _params()
    ),
    Need(
        "faust-streaming",
        "faust.tables.recovery:Recovery.on_partitions_revoked",
        "method (revoked)",
        _params("revoked"),
    ),
    Need(
        "faust-streaming",
        "faust.tables.recovery:RebalanceAgain",
        "exception",
        lambda c: isinstance(c, type) and issubclass(c, BaseException),
    ),
    Need(
        "faust-streaming",
        "faust.tables.recovery:ServiceStopped",
        "exception",
        lambda c: isinstance(c, type) and issubclass(c, BaseException),
    ),
    Need(
        "faust-streaming",
        "faust.tables.recovery:Recovery._seek_offsets",
        "coroutine (consumer, tps, offsets, title)",
        _coroutine("consumer", "tps", "offsets", "title"),
    ),
    Need(
        "faust-streaming",
        "faust.tables.recovery:Recovery._restart_recovery",
        "seeks the active partitions, then reads only if need_recovery()",
        _source_has("T(self._seek_offsets)(", "if self.need_recovery():"),
    ),
    # connector.kafka.bulk_recovery
    Need(
        "faust-streaming",
        f"{_ROCKSDB_STORE}.apply_changelog_batch",
        "reads event.message tp, offset, partition, key, value; records the offset",
        _source_has(
            "event.message.tp, event.message.offset",
            "msg.partition",
            "msg.key",
            "msg.value",
            "self.set_persisted_offset(tp, offset)",
        ),
    ),
    Need(
        "faust-streaming",
        "faust.tables.base:Collection.__init__",
        "keeps the on_changelog_event callback in _on_changelog_event",
        _source_has("self._on_changelog_event = on_changelog_event"),
    ),
    Need(
        "mode-streaming",
        "mode.services:Service.wait_first",
        "coroutine returning WaitResults(done, results, stopped)",
        lambda fn: inspect.iscoroutinefunction(fn) and _source_has("WaitResults(")(fn),
    ),
    Need(
        "mode-streaming",
        "mode.services:WaitResults",
        "tuple (done, results, stopped)",
        lambda c: getattr(c, "_fields", None) == ("done", "results", "stopped"),
    ),
    # connector.kafka.driver: aiokafka reads the isolation level when the consumer starts.
    Need(
        "aiokafka",
        "aiokafka.consumer.consumer:AIOKafkaConsumer.start",
        "reads self._isolation_level",
        _source_has("self._isolation_level"),
    ),
    # connector.kafka.membership: a static member leaves its group when it stops.
    Need(
        "faust-streaming",
        f"{_AIOKAFKA_DRIVER}:AIOKafkaConsumerThread.on_start",
        "creates and starts self._consumer",
        _source_has("self._consumer = self._create_consumer(", "await self._consumer.start()"),
    ),
    Need(
        "aiokafka",
        "aiokafka.consumer.consumer:AIOKafkaConsumer.start",
        "creates self._coordinator",
        _source_has("self._coordinator = GroupCoordinator("),
    ),
    Need(
        "aiokafka",
        f"{_COORDINATOR}._maybe_leave_group",
        "coroutine () that skips a static member",
        lambda fn: _coroutine()(fn) and _source_has("self._group_instance_id is None")(fn),
    ),
    Need(
        "aiokafka",
        f"{_COORDINATOR}.close",
        "leaves through self._maybe_leave_group",
        _source_has("await self._maybe_leave_group()"),
    ),
    Need("aiokafka", f"{_COORDINATOR}._send_req", "coroutine (request)", _coroutine("request")),
    Need("aiokafka", f"{_COORDINATOR}.reset_generation", "method ()", _params()),
    Need(
        "aiokafka",
        f"{_COORDINATOR}.__init__",
        "keeps _group_instance_id, generation, member_id, group_id",
        _source_has(
            "self._group_instance_id = ",
            "self.generation = ",
            "self.member_id = ",
            "self.group_id = ",
        ),
    ),
    Need(
        "aiokafka",
        "aiokafka.protocol.group:LeaveGroupRequest.__init__",
        "method (group, member_id)",
        _params("group", "member_id"),
    ),
    # connector.kafka.http
    Need("httpx", "httpx._client:AsyncClient._transport_for_url", "method (url)", _params("url")),
    Need(
        "httpx-aiohttp",
        "httpx_aiohttp.transport:AiohttpTransport.get_client",
        "method ()",
        _params(),
    ),
    Need(
        "httpx-aiohttp",
        "httpx_aiohttp.transport:map_aiohttp_exceptions",
        "context manager",
        callable,
    ),
)


def _resolve(name: str) -> Any:
    module_name, _, path = name.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in path.split("."):
        obj = inspect.getattr_static(obj, part) if isinstance(obj, type) else getattr(obj, part)
        if isinstance(obj, staticmethod | classmethod):
            obj = obj.__func__
    return obj


def _installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def problems(pins: dict[str, str] | None = None, needs: tuple[Need, ...] = NEEDS) -> list[str]:
    """One line per library version or internal that differs from what the adapter needs."""
    pins = PINS if pins is None else pins
    lines = []
    for library, expected in pins.items():
        found = _installed(library)
        if found != expected:
            lines.append(
                f"{library} {found or '(not installed)'} is installed, but connector.kafka was "
                f"verified against {library} {expected} only: install the pinned versions "
                "(`uv sync --frozen`, or the package's own requirements), or verify "
                f"connector/kafka against {found} and change the pin in connector/kafka/compat.py "
                "and pyproject.toml"
            )
    if lines:
        return lines  # internals of another version would only add noise
    for need in needs:
        try:
            holds = need.holds(_resolve(need.name))
        except Exception:  # missing: an import or attribute error
            holds = False
        if not holds:
            lines.append(
                f"{need.library} {_installed(need.library)}: {need.name} is missing or changed "
                f"shape (expected: {need.shape}); connector.kafka depends on it: reinstall the "
                "pinned versions (`uv sync --frozen`)"
            )
    driver = _driver_problem()
    if driver:
        lines.append(driver)
    return lines


def _driver_problem() -> str | None:
    from connector.kafka.driver import Transport
    from connector.kafka.faust_app import BROKER_SCHEME

    try:
        found = _resolve("faust.transport.drivers:TRANSPORTS").by_url(f"{BROKER_SCHEME}://x")
    except Exception:
        found = None
    if found is not Transport:
        return (
            f"Faust's transport driver {BROKER_SCHEME!r} is not connector.kafka.driver:Transport "
            "(found: {found!r}): the package's entry point (pyproject.toml, group "
            "faust.transports) is not installed; install the package (`uv sync --frozen` or "
            "`pip install .`)".replace("{found!r}", repr(found))
        )
    return None


@functools.cache
def _verified() -> tuple[str, ...]:
    return tuple(problems())


def verify_libraries() -> None:
    """Refuse to run on library versions or internals the adapter was not verified against."""
    found = _verified()
    if found:
        raise IncompatibleLibraryError(
            found[0] + (f" (and {len(found) - 1} more)" if len(found) > 1 else "")
        )
    logger.debug("libraries verified: %s", ", ".join(f"{k} {v}" for k, v in PINS.items()))
