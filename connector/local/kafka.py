"""Run a real Apache Kafka 4.x broker locally: KRaft mode, one combined broker+controller node.

The broker is Kafka's own code, not a fake: the jars are the ones published by the Apache Kafka
project, fetched once by Maven (``kafka-pom.xml`` next to this module pins the version) into
``~/.cache/assessment-connector/kafka-<version>/lib`` and started with ``java -cp 'lib/*'
kafka.Kafka server.properties``. Java 17+ and Maven must be on ``PATH``.

Typical use::

    with LocalKafka() as kafka:
        print(kafka.bootstrap_servers)  # "127.0.0.1:PORT"

or ``kafka = LocalKafka(); kafka.start(); ...; kafka.restart(); ...; kafka.stop()``.

The methods block (the broker needs a few seconds to start). From async code call them through
``await asyncio.to_thread(kafka.restart)`` so the event loop keeps running meanwhile.

From a shell: ``python -m connector.local.kafka [--port N]`` prints the bootstrap servers and
runs until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import concurrent.futures
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiokafka.admin import AIOKafkaAdminClient

__all__ = [
    "KAFKA_VERSION",
    "POM_PATH",
    "LocalKafka",
    "LocalKafkaError",
    "ensure_kafka_artifacts",
    "find_local_brokers",
    "kafka_cache_dir",
    "kill_orphaned_brokers",
    "main",
]

log = logging.getLogger(__name__)

POM_PATH = Path(__file__).with_name("kafka-pom.xml")

# Every broker JVM carries this system property, set to the pid of the Python process that
# launched it, so leftovers can be found (and orphans reaped) without guessing from names.
OWNER_PROPERTY = "assessment.connector.localkafka.owner"

_MAVEN_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
_MARKER = "COMPLETE"
_NODE_ID = 1
_HOST = "127.0.0.1"
_LOG_TAIL_LINES = 60

_DEFAULT_JVM_OPTIONS: tuple[str, ...] = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
# The storage formatter is a short-lived tool: the C1-only JIT starts faster.
_FORMAT_JVM_OPTIONS: tuple[str, ...] = (
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
)

_LOG4J2_PROPERTIES = """\
# Written by connector/local/kafka.py for the local test broker.
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
# Every client and server config object dumps all of its values at INFO.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
"""


class LocalKafkaError(RuntimeError):
    """The local broker could not be fetched, formatted, started or stopped."""


def _pom_kafka_version(pom: Path = POM_PATH) -> str:
    root = ET.parse(pom).getroot()
    version = root.findtext("m:properties/m:kafka.version", namespaces=_MAVEN_NS)
    if not version:
        raise LocalKafkaError(f"{pom} has no <properties><kafka.version>")
    return version.strip()


KAFKA_VERSION = _pom_kafka_version()


def kafka_cache_dir(version: str = KAFKA_VERSION, cache_root: str | Path | None = None) -> Path:
    """Where the jars of Kafka ``version`` are kept: ``<cache_root>/assessment-connector/...``.

    ``cache_root`` defaults to ``~/.cache``.
    """
    root = Path(cache_root) if cache_root is not None else Path.home() / ".cache"
    return root / "assessment-connector" / f"kafka-{version}"


def _artifacts_complete(cache: Path, digest: str, version: str) -> bool:
    marker = cache / _MARKER
    try:
        recorded = marker.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return False
    return recorded == digest and (cache / "lib" / f"kafka_2.13-{version}.jar").is_file()


def ensure_kafka_artifacts(
    cache_root: str | Path | None = None,
    *,
    pom: Path = POM_PATH,
    timeout: float = 900.0,
) -> Path:
    """Fetch Kafka's jars with Maven unless already cached; return the ``lib`` directory.

    The cache is complete once its marker file holds the pom's SHA-256, so editing the pom
    (another version, another dependency) fetches again. A file lock serialises concurrent
    fetches from several processes.
    """
    version = _pom_kafka_version(pom)
    cache = kafka_cache_dir(version, cache_root)
    lib = cache / "lib"
    pom_bytes = pom.read_bytes()
    digest = hashlib.sha256(pom_bytes).hexdigest()
    if _artifacts_complete(cache, digest, version):
        return lib

    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            if _artifacts_complete(cache, digest, version):  # another process just did it
                return lib
            _fetch_with_maven(cache, pom_bytes, digest, version, timeout)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    return lib


def _fetch_with_maven(
    cache: Path, pom_bytes: bytes, digest: str, version: str, timeout: float
) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError("Maven (mvn) is not on PATH; it is needed to fetch Kafka's jars")
    lib = cache / "lib"
    staging = cache / "lib.partial"
    (cache / _MARKER).unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    # Maven runs on a copy of the pom inside the cache, so nothing is written to the source tree.
    (cache / "pom.xml").write_bytes(pom_bytes)
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(cache / "pom.xml"),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    log.info("Fetching Apache Kafka %s jars with Maven into %s (first run only)", version, cache)
    started = time.monotonic()
    # Offline first: when Maven's local repository already has everything (a wiped cache, a
    # pom edit) this needs no network and is immune to remote hiccups.
    result = _run_maven([*command, "-o"], cache, timeout)
    if result.returncode != 0:
        log.info("Maven offline run failed; fetching from the remote repository")
        shutil.rmtree(staging, ignore_errors=True)
        result = _run_maven(command, cache, timeout)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-_LOG_TAIL_LINES:]
        raise LocalKafkaError(
            f"Maven failed ({result.returncode}) fetching Kafka {version}:\n" + "\n".join(output)
        )
    if not (staging / f"kafka_2.13-{version}.jar").is_file():
        raise LocalKafkaError(f"Maven finished but kafka_2.13-{version}.jar is not in {staging}")
    shutil.rmtree(lib, ignore_errors=True)
    staging.rename(lib)
    marker_tmp = cache / f"{_MARKER}.tmp"
    marker_tmp.write_text(digest + "\n", encoding="utf-8")
    marker_tmp.replace(cache / _MARKER)
    log.info(
        "Fetched Kafka %s (%d jars) in %.1f s",
        version,
        len(list(lib.glob("*.jar"))),
        time.monotonic() - started,
    )


def _run_maven(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LocalKafkaError(
            f"Maven did not finish fetching Kafka within {timeout:.0f} s"
        ) from exc


def _new_cluster_id() -> str:
    """A random Kafka ``Uuid`` in its base64 form (``kafka-storage random-uuid``)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not cluster_id.startswith("-"):  # Kafka rejects ids that look like an option
            return cluster_id


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free on 127.0.0.1 a moment ago."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((_HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _tail(path: Path | None, lines: int = _LOG_TAIL_LINES) -> str:
    if path is None:
        return "(no log file)"
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return f"(log file {path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def _read_properties(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def _write_properties(path: Path, values: Mapping[str, str]) -> None:
    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("\n", "\\n")

    lines = ["# Written by connector/local/kafka.py; rewritten on every start."]
    lines += [f"{key}={escape(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _process_cmdlines() -> Iterator[tuple[int, list[str]]]:
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if raw:
                yield int(entry.name), raw.rstrip(b"\0").decode(errors="replace").split("\0")
        return
    output = subprocess.run(
        ["ps", "-axww", "-o", "pid=,args="], capture_output=True, text=True, check=False
    ).stdout
    for line in output.splitlines():
        pid, _, args = line.strip().partition(" ")
        if pid.isdigit():
            yield int(pid), args.split()


def find_local_brokers(owner_pid: int | None = None) -> dict[int, int]:
    """Running broker JVMs started by this module: ``{broker pid: owner pid}``.

    With ``owner_pid``, only those launched by that Python process.
    """
    prefix = f"-D{OWNER_PROPERTY}="
    found: dict[int, int] = {}
    for pid, args in _process_cmdlines():
        if "kafka.Kafka" not in args:
            continue
        for arg in args:
            if arg.startswith(prefix) and arg[len(prefix) :].isdigit():
                owner = int(arg[len(prefix) :])
                if owner_pid is None or owner == owner_pid:
                    found[pid] = owner
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_orphaned_brokers() -> list[int]:
    """SIGKILL brokers whose launching Python process is gone (e.g. it was SIGKILLed)."""
    killed = []
    for pid, owner in find_local_brokers().items():
        if not _pid_alive(owner):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    if killed:
        log.warning("Killed orphaned local Kafka brokers: %s", killed)
    return killed


class LocalKafka:
    """One Apache Kafka broker+controller in KRaft mode, as a child process.

    :param port: client (PLAINTEXT) port on 127.0.0.1; default: a free one.
    :param controller_port: KRaft controller port; default: a free one.
    :param data_dir: where logs and metadata live; kept. Default: a fresh temporary directory,
        removed by :meth:`stop` (but not by :meth:`kill` or :meth:`restart`).
    :param extra_properties: broker properties layered over the defaults (listeners, SASL, TLS...).
    :param log_file: broker stdout/stderr (appended to); default ``<data_dir>/broker.log``.
    :param startup_timeout: seconds :meth:`start` waits for the broker to answer metadata requests.
    :param jvm_options: replaces the default heap/GC options.
    :param format_args: extra ``kafka-storage format`` arguments, e.g. ``["--add-scram", ...]``.
    :param client_config: extra :class:`AIOKafkaAdminClient` arguments for the readiness probe
        (security protocol, SASL, ``ssl_context``) when the listeners are not PLAINTEXT.
    :param cache_root: parent of the jar cache; default ``~/.cache``.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        controller_port: int | None = None,
        data_dir: str | Path | None = None,
        extra_properties: Mapping[str, str | int | bool] | None = None,
        log_file: str | Path | None = None,
        startup_timeout: float = 60.0,
        jvm_options: Sequence[str] | None = None,
        format_args: Sequence[str] = (),
        client_config: Mapping[str, Any] | None = None,
        cache_root: str | Path | None = None,
    ) -> None:
        if port is None or controller_port is None:
            free = iter(_free_ports(2))
            port = port if port is not None else next(free)
            controller_port = controller_port if controller_port is not None else next(free)
        if port == controller_port:
            raise ValueError("port and controller_port must differ")
        self.port: int = port
        self.controller_port: int = controller_port
        self.version: str = KAFKA_VERSION
        self.cluster_id: str = _new_cluster_id()
        self.startup_timeout = startup_timeout
        self.startup_seconds: float | None = None
        self.extra_properties: dict[str, str] = {
            key: _property_value(value) for key, value in (extra_properties or {}).items()
        }
        self.jvm_options: tuple[str, ...] = tuple(jvm_options or _DEFAULT_JVM_OPTIONS)
        self.format_args: tuple[str, ...] = tuple(format_args)
        self.client_config: dict[str, Any] = dict(client_config or {})
        self._cache_root = cache_root
        self._owns_data_dir = data_dir is None
        self._data_dir: Path | None = Path(data_dir).resolve() if data_dir is not None else None
        self._log_file_arg: Path | None = Path(log_file).resolve() if log_file else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._atexit_registered = False

    # -- properties -------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        return f"{_HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker JVM's pid while it runs (also its process group id)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def data_dir(self) -> Path | None:
        """The data directory; ``None`` before the first start and after :meth:`stop` of a
        temporary one."""
        return self._data_dir

    @property
    def log_file(self) -> Path | None:
        if self._log_file_arg is not None:
            return self._log_file_arg
        return self._data_dir / "broker.log" if self._data_dir is not None else None

    def server_properties(self) -> dict[str, str]:
        """The broker configuration :meth:`start` writes (defaults, then ``extra_properties``)."""
        if self._data_dir is None:
            raise LocalKafkaError("no data directory yet: call start() first")
        properties = {
            "process.roles": "broker,controller",
            "node.id": str(_NODE_ID),
            "controller.quorum.voters": f"{_NODE_ID}@{_HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{_HOST}:{self.port},CONTROLLER://{_HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{_HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self._data_dir / "kafka-logs"),
            # A single node: every internal topic has one replica.
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "share.coordinator.state.topic.num.partitions": "10",
            "group.initial.rebalance.delay.ms": "0",
            # After kill() the restarted controller refuses the broker's new incarnation until
            # the old one's session expires (default 9 s): keep crash-restarts quick. Broker and
            # controller share the JVM, so the heartbeats only cross the loopback interface.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "4000",
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            # The cleaner's 128 MiB default buffer would take a quarter of the heap.
            "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
        }
        properties.update(self.extra_properties)
        return properties

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Format the storage if new, launch the broker and wait until it serves metadata.

        Sets :attr:`startup_seconds` (formatting + JVM start + readiness; the one-time Maven
        fetch is not included). Raises :class:`LocalKafkaError`, with the end of the broker
        log, if the broker dies or is not ready within ``startup_timeout``.
        """
        with self._lock:
            if self.running:
                raise LocalKafkaError(f"broker already running (pid {self.pid})")
            self._reap()
            lib = ensure_kafka_artifacts(self._cache_root)
            java = shutil.which("java")
            if java is None:
                raise LocalKafkaError("java is not on PATH; Kafka 4.x needs Java 17 or newer")
            if not self._atexit_registered:
                atexit.register(self._stop_at_exit)
                self._atexit_registered = True

            started = time.monotonic()
            if self._data_dir is None:
                self._data_dir = Path(tempfile.mkdtemp(prefix="local-kafka-")).resolve()
            config_dir = self._data_dir / "config"
            config_dir.mkdir(parents=True, exist_ok=True)
            server_properties = config_dir / "server.properties"
            _write_properties(server_properties, self.server_properties())
            log4j = config_dir / "log4j2.properties"
            log4j.write_text(_LOG4J2_PROPERTIES, encoding="utf-8")
            log_file = self.log_file
            assert log_file is not None
            log_file.parent.mkdir(parents=True, exist_ok=True)
            classpath = f"{lib}{os.sep}*"
            logging_option = f"-Dlog4j2.configurationFile={log4j}"

            self._format_storage(java, classpath, logging_option, server_properties, log_file)

            command = [
                java,
                *self.jvm_options,
                logging_option,
                f"-D{OWNER_PROPERTY}={os.getpid()}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(server_properties),
            ]
            with open(log_file, "ab") as log_handle:
                self._proc = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log_handle,
                    stderr=subprocess.STDOUT,
                    cwd=self._data_dir,
                    start_new_session=True,
                )
            log.info(
                "Started Kafka %s (pid %d) on %s, log %s",
                self.version,
                self._proc.pid,
                self.bootstrap_servers,
                log_file,
            )
            try:
                self._wait_until_ready(started + self.startup_timeout)
            except BaseException:
                self._terminate(signal.SIGKILL, 5.0)
                raise
            self.startup_seconds = time.monotonic() - started
            log.info(
                "Kafka %s ready on %s after %.1f s (cluster id %s)",
                self.version,
                self.bootstrap_servers,
                self.startup_seconds,
                self.cluster_id,
            )

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the broker (SIGKILL after ``timeout`` s) and remove a temporary data dir.

        Idempotent.
        """
        with self._lock:
            self._terminate(signal.SIGTERM, timeout)
            if self._owns_data_dir and self._data_dir is not None:
                shutil.rmtree(self._data_dir, ignore_errors=True)
                self._data_dir = None
            if self._atexit_registered:
                atexit.unregister(self._stop_at_exit)
                self._atexit_registered = False

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would; data is kept for :meth:`start`/:meth:`restart`."""
        with self._lock:
            self._terminate(signal.SIGKILL, 15.0)

    def restart(self, timeout: float = 15.0) -> None:
        """Stop the broker (as :meth:`stop`, keeping the data) and start it on the same ports."""
        with self._lock:
            self._terminate(signal.SIGTERM, timeout)
            self.start()

    # -- internals --------------------------------------------------------------------------

    def _format_storage(
        self,
        java: str,
        classpath: str,
        logging_option: str,
        server_properties: Path,
        log_file: Path,
    ) -> None:
        assert self._data_dir is not None
        log_dirs = self.server_properties()["log.dirs"].split(",")
        meta = Path(log_dirs[0]) / "meta.properties"
        if meta.is_file():
            # Already formatted (a restart, or a caller-provided data dir): adopt its cluster id.
            self.cluster_id = _read_properties(meta).get("cluster.id", self.cluster_id)
            return
        command = [
            java,
            *_FORMAT_JVM_OPTIONS,
            logging_option,
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            self.cluster_id,
            "--config",
            str(server_properties),
            *self.format_args,
        ]
        with open(log_file, "ab") as log_handle:
            log_handle.write(f"--- formatting storage, cluster id {self.cluster_id}\n".encode())
            log_handle.flush()
            try:
                result = subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log_handle,
                    stderr=subprocess.STDOUT,
                    cwd=self._data_dir,
                    timeout=self.startup_timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise LocalKafkaError(
                    f"kafka-storage format timed out; log {log_file}:\n{_tail(log_file)}"
                ) from exc
        if result.returncode != 0:
            raise LocalKafkaError(
                f"kafka-storage format failed ({result.returncode}); log {log_file}:\n"
                f"{_tail(log_file)}"
            )

    def _wait_until_ready(self, deadline: float) -> None:
        # The probe runs on its own event loop in a worker thread, so start() works the same
        # whether or not the calling thread is running an event loop.
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="local-kafka") as pool:
            pool.submit(asyncio.run, self._probe_until_ready(deadline)).result()

    async def _probe_until_ready(self, deadline: float) -> None:
        proc = self._proc
        assert proc is not None
        last_error: BaseException | None = None
        while True:
            returncode = proc.poll()
            if returncode is not None:
                raise LocalKafkaError(
                    f"Kafka broker exited with code {returncode} during startup; "
                    f"log {self.log_file}:\n{_tail(self.log_file)}"
                )
            if time.monotonic() >= deadline:
                raise LocalKafkaError(
                    f"Kafka broker not ready on {self.bootstrap_servers} after "
                    f"{self.startup_timeout:.0f} s (last error: {last_error!r}); "
                    f"log {self.log_file}:\n{_tail(self.log_file)}"
                )
            try:
                if await self._listening():
                    await self._describe_cluster()
                    return
            except LocalKafkaError:
                raise
            except Exception as exc:  # not ready yet
                last_error = exc
            await asyncio.sleep(0.1)

    async def _listening(self) -> bool:
        """A cheap TCP check first, so the admin client does not log connection errors."""
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(_HOST, self.port), timeout=1.0
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def _describe_cluster(self) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            request_timeout_ms=5000,
            **self.client_config,
        )
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
        finally:
            await admin.close()
        if cluster.get("cluster_id") != self.cluster_id:
            raise LocalKafkaError(
                f"{self.bootstrap_servers} answers with cluster id {cluster.get('cluster_id')!r}, "
                f"not {self.cluster_id!r}: another broker holds the port?"
            )
        if not any(broker["node_id"] == _NODE_ID for broker in cluster.get("brokers", [])):
            raise RuntimeError("broker not registered yet")  # retried

    def _terminate(self, sig: signal.Signals, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            log.info("Stopping Kafka broker pid %d with %s", proc.pid, sig.name)
            self._signal_group(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning(
                    "Kafka broker pid %d still running %.0f s after %s; killing it",
                    proc.pid,
                    timeout,
                    sig.name,
                )
                self._signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        self._proc = None

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def _reap(self) -> None:
        """Forget a broker that died on its own."""
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None

    def _stop_at_exit(self) -> None:
        try:
            self.stop(timeout=10.0)
        except Exception:  # interpreter shutdown: best effort
            log.exception("Stopping the local Kafka broker at exit failed")

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<LocalKafka {self.version} {self.bootstrap_servers} {state}>"


def _property_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parse_property(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m connector.local.kafka``: run a broker until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m connector.local.kafka",
        description=f"Run a local Apache Kafka {KAFKA_VERSION} broker (KRaft, single node).",
    )
    parser.add_argument("--port", type=int, default=None, help="client port (default: free)")
    parser.add_argument("--controller-port", type=int, default=None, help="KRaft controller port")
    parser.add_argument("--data-dir", default=None, help="keep data here (default: temporary)")
    parser.add_argument("--log-file", default=None, help="broker log (default: in data dir)")
    parser.add_argument("--timeout", type=float, default=60.0, help="startup timeout, seconds")
    parser.add_argument(
        "-p",
        "--property",
        dest="properties",
        action="append",
        type=_parse_property,
        default=[],
        metavar="KEY=VALUE",
        help="extra broker property (repeatable)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("Received %s, stopping", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    kafka = LocalKafka(
        args.port,
        controller_port=args.controller_port,
        data_dir=args.data_dir,
        extra_properties=dict(args.properties),
        log_file=args.log_file,
        startup_timeout=args.timeout,
    )
    try:
        kafka.start()
    except LocalKafkaError as exc:
        log.error("%s", exc)
        kafka.stop()
        return 1
    try:
        print(kafka.bootstrap_servers, flush=True)
        log.info(
            "Kafka %s ready in %.1f s; cluster id %s; log %s; Ctrl-C to stop",
            kafka.version,
            kafka.startup_seconds or 0.0,
            kafka.cluster_id,
            kafka.log_file,
        )
        while not stop_requested.wait(1.0):
            if not kafka.running:
                log.error("Kafka broker exited unexpectedly:\n%s", _tail(kafka.log_file))
                return 1
        return 0
    finally:
        kafka.stop()


if __name__ == "__main__":
    sys.exit(main())
