"""Issue 7 item 4: Kafka security (SASL/SCRAM, SASL/PLAIN, TLS and mutual TLS), end to end.

One extra local broker for this module, configured the way a secured production cluster is:

* ``SASL_SSL`` (SCRAM-SHA-512 and PLAIN) for clients, with a throwaway CA (:mod:`tests.e2e.tls`);
* ``SASL_PLAINTEXT`` (SCRAM-SHA-512 and PLAIN), also the inter-broker listener (SCRAM);
* ``SSL`` with client certificates required (mutual TLS);
* the KRaft controller listener stays PLAINTEXT on 127.0.0.1.

The SCRAM credentials of ``connector`` (and of the broker itself) are written at storage
format time (``kafka-storage format --add-scram``), as on a fresh KRaft cluster. There is no
unauthenticated client listener, so every record read or written here crossed a secured one.

The worker and the CLI are configured only through the environment, exactly as deployed.
These tests start their own broker, so they are skipped when ``KAFKA_BOOTSTRAP_SERVERS``
points at an external one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from connector.infra.kafka_clients import client_kwargs
from connector.local.kafka import LocalKafka, find_local_brokers
from connector.local.worker import WorkerProcess
from connector.sandbox import Sandboxes
from connector.settings import (
    KafkaSettings,
    Settings,
    child_environment,
    external_bootstrap_servers,
)
from tests.conftest import NameFactory, record_kafka_startup
from tests.e2e.harness import COMEET_TOKEN, KOMBO_KEY, Deployment, terminal_by_event
from tests.e2e.tls import TestPki, make_test_pki
from tests.factories import make_event, target

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(150)]

ROOT = Path(__file__).resolve().parents[2]
USER = "connector"
PASSWORD = "scram-e2e-5ecret-PASS-0003"
WRONG_PASSWORD = "scram-WRONG-5ecret-PASS-9999"
BROKER_USER = "broker"
BROKER_PASSWORD = "broker-e2e-5ecret-PASS-0004"
CLI_TIMEOUT = 60.0

_SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
_PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class SecuredKafka:
    """The module's broker, and how to reach each of its client listeners."""

    pki: TestPki
    bootstrap: dict[str, str]  # security protocol -> bootstrap servers of that listener
    password_file: Path  # holds PASSWORD, as an orchestrator would mount it
    kafka: LocalKafka = field(init=False)

    def settings(self, protocol: str, mechanism: str = "SCRAM-SHA-512") -> KafkaSettings:
        """Client settings for one listener, parsed from the same variables as :meth:`env`."""
        env = self.env(protocol, mechanism)
        prefix = "CONNECTOR_KAFKA__"
        values = {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}
        values["bootstrap_servers"] = env["KAFKA_BOOTSTRAP_SERVERS"]
        return KafkaSettings.model_validate(values)

    def client_config(self, protocol: str, mechanism: str = "SCRAM-SHA-512") -> dict[str, Any]:
        """aiokafka client arguments (without ``bootstrap_servers``) for one listener."""
        kwargs = client_kwargs(self.settings(protocol, mechanism))
        del kwargs["bootstrap_servers"]
        return kwargs

    def env(self, protocol: str, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
        """The environment a deployment sets for one listener (the password from a file)."""
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap[protocol],
            "CONNECTOR_KAFKA__SECURITY_PROTOCOL": protocol,
        }
        if protocol.startswith("SASL"):
            env["CONNECTOR_KAFKA__SASL_MECHANISM"] = mechanism
            env["CONNECTOR_KAFKA__SASL_USERNAME"] = USER
            env["CONNECTOR_KAFKA__SASL_PASSWORD_FILE"] = str(self.password_file)
        if protocol in ("SSL", "SASL_SSL"):
            env["CONNECTOR_KAFKA__SSL_CAFILE"] = str(self.pki.ca_cert)
        if protocol == "SSL":
            env["CONNECTOR_KAFKA__SSL_CERTFILE"] = str(self.pki.client_cert)
            env["CONNECTOR_KAFKA__SSL_KEYFILE"] = str(self.pki.client_key)
        return env


def _broker_properties(pki: TestPki, ports: dict[str, int], controller: int) -> dict[str, str]:
    host = "127.0.0.1"
    client_listeners = ",".join(f"{name}://{host}:{port}" for name, port in ports.items())
    plain_users = f'user_{USER}="{PASSWORD}" user_{BROKER_USER}="{BROKER_PASSWORD}"'
    broker_login = f'username="{BROKER_USER}" password="{BROKER_PASSWORD}"'
    return {
        "listeners": f"{client_listeners},CONTROLLER://{host}:{controller}",
        "advertised.listeners": client_listeners,
        "listener.security.protocol.map": (
            "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL"
        ),
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512,PLAIN",
        # SCRAM verifiers live in the cluster metadata; the JAAS entries only name the module
        # (and, on the inter-broker listener, the broker's own login).
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": (
            f"{_SCRAM_MODULE} required {broker_login};"
        ),
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": f"{_SCRAM_MODULE} required;",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": (
            f"{_PLAIN_MODULE} required {broker_login} {plain_users};"
        ),
        "listener.name.sasl_ssl.plain.sasl.jaas.config": f"{_PLAIN_MODULE} required {plain_users};",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(pki.broker_keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(pki.ca_cert),
        "listener.name.ssl.ssl.client.auth": "required",
    }


@pytest.fixture(scope="module")
def secured_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    if external_bootstrap_servers():
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS is set: the security tests start their own broker")
    root = tmp_path_factory.mktemp("secured-kafka")
    pki = make_test_pki(root / "pki")
    password_file = root / "kafka-password"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    password_file.chmod(0o600)
    sasl_ssl, sasl_plaintext, ssl_port, controller = _free_ports(4)
    ports = {"SASL_SSL": sasl_ssl, "SASL_PLAINTEXT": sasl_plaintext, "SSL": ssl_port}
    bootstrap = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    secured = SecuredKafka(pki=pki, bootstrap=bootstrap, password_file=password_file)
    secured.kafka = LocalKafka(
        sasl_ssl,  # the readiness probe goes through the SASL_SSL listener
        controller_port=controller,
        data_dir=root / "data",
        extra_properties=_broker_properties(pki, ports, controller),
        format_args=[
            "--add-scram",
            f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]",
            "--add-scram",
            f"SCRAM-SHA-512=[name={BROKER_USER},password={BROKER_PASSWORD}]",
        ],
        client_config=secured.client_config("SASL_SSL"),
        log_file=root / "broker.log",
    )
    try:
        secured.kafka.start()
        record_kafka_startup("secured broker (SASL_SSL, SASL_PLAINTEXT, SSL)", secured.kafka)
        yield secured
    finally:
        secured.kafka.stop()


@pytest.fixture(autouse=True)
def _no_broker_left_behind() -> Iterator[None]:
    """Overrides the session-wide check (tests/conftest.py), which would count this module's
    broker as a stray: it outlives each test on purpose, and is stopped at module teardown.

    Still fails a test that leaves a broker JVM it started running (and kills it).
    """
    before = set(find_local_brokers(owner_pid=os.getpid()))
    yield
    strays = set(find_local_brokers(owner_pid=os.getpid())) - before
    if strays:
        for pid in strays:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        pytest.fail(f"test left Kafka broker process(es) running: {sorted(strays)} (killed)")


def _secured_deployment(
    secured: SecuredKafka,
    sandboxes: Sandboxes,
    tmp_path: Path,
    name: str,
    protocol: str,
    mechanism: str = "SCRAM-SHA-512",
) -> Deployment:
    env = {
        **secured.env(protocol, mechanism),
        "CONNECTOR_APP_ID": f"app-{name}",
        "CONNECTOR_TOPICS__EVENTS": f"events-{name}",
        "CONNECTOR_TOPICS__AUDIT": f"audit-{name}",
        "CONNECTOR_TOPICS__DEAD_LETTER": f"dlq-{name}",
        "CONNECTOR_TOPICS__PARTITIONS": "2",
        "CONNECTOR_KOMBO__BASE_URL": sandboxes.kombo_url,
        "CONNECTOR_KOMBO__API_KEY": KOMBO_KEY,
        "CONNECTOR_COMEET__BASE_URL": sandboxes.comeet_url,
        "CONNECTOR_COMEET__TOKEN": COMEET_TOKEN,
        "CONNECTOR_DATA_DIR": str(tmp_path / "data"),
        "CONNECTOR_LOG_JSON": "true",
    }
    return Deployment(
        bootstrap=secured.bootstrap[protocol],
        env=env,
        tmp=tmp_path,
        client_config=secured.client_config(protocol, mechanism),
    )


async def cli(
    env: dict[str, str], *args: str, timeout: float = CLI_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "connector.cli", *args],
            env=child_environment(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=ROOT,
        )

    return await asyncio.to_thread(run)


async def _deliver_one_event(
    secured: SecuredKafka,
    sandboxes: Sandboxes,
    tmp_path: Path,
    name: str,
    protocol: str,
) -> tuple[str, list[subprocess.CompletedProcess[str]]]:
    """CLI ``topics ensure``, a worker, CLI ``publish`` of a completed event, the audit read
    back over the same listener; returns the worker's log and the CLI results."""
    deployment = _secured_deployment(secured, sandboxes, tmp_path, name, protocol)
    try:
        ensured = await cli(deployment.env, "topics", "ensure")
        assert ensured.returncode == 0, ensured.stderr
        assert ensured.stdout.count("created") == 5, ensured.stdout  # + parked, control

        # DEBUG: the log scanned for the password holds everything the worker can say.
        worker = deployment.worker("w1", CONNECTOR_LOG_LEVEL="DEBUG")
        order_id = f"k-{name}"
        completed = make_event("completed", target("kombo", order_id))
        event_file = tmp_path / "completed.json"
        event_file.write_text(json.dumps(completed), encoding="utf-8")
        published = await cli(deployment.env, "publish", str(event_file))
        assert published.returncode == 0, published.stderr
        assert f"published kombo|workday:ACME1|{order_id} -> partition" in published.stdout

        # Read back over the same secured listener (the broker has no other client listener).
        audit = await deployment.audit_until_terminal([completed["event_id"]], timeout=60)
        assert terminal_by_event(audit) == {completed["event_id"]: ["delivered"]}
        received = sandboxes.kombo.recorded()
        bodies = [e["body"] for e in received if e["path"].endswith(f"/{order_id}/result")]
        assert [b["status"] for b in bodies] == ["COMPLETED"]
    finally:
        deployment.stop_all()
    return worker.log_path.read_text(encoding="utf-8"), [ensured, published]


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
async def test_worker_delivers_over_sasl_ssl(
    secured_kafka: SecuredKafka,
    sandboxes: Sandboxes,
    tmp_path: Path,
    unique_name: NameFactory,
    protocol: str,
) -> None:
    """SCRAM-SHA-512 over TLS (and, parametrized, over plaintext), password from a file."""
    log, cli_results = await _deliver_one_event(
        secured_kafka, sandboxes, tmp_path, unique_name(protocol.lower()), protocol
    )
    # The worker did log in over SASL (aiokafka logs each successful authentication)...
    assert f"Authenticated as {USER} via SCRAM-SHA-512" in log
    # ...and the password is nowhere in what it (at DEBUG) or the CLI wrote.
    assert '"level": "DEBUG"' in log
    assert PASSWORD not in log
    for result in cli_results:
        assert PASSWORD not in result.stdout + result.stderr


async def test_worker_delivers_over_mutual_tls(
    secured_kafka: SecuredKafka, sandboxes: Sandboxes, tmp_path: Path, unique_name: NameFactory
) -> None:
    """SSL with a client certificate (the listener requires one: see the refusal test)."""
    log, _ = await _deliver_one_event(
        secured_kafka, sandboxes, tmp_path, unique_name("mtls"), "SSL"
    )
    assert "Authenticated as" not in log  # no SASL on this listener


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
async def test_cli_over_sasl_plain(
    secured_kafka: SecuredKafka, tmp_path: Path, unique_name: NameFactory, protocol: str
) -> None:
    """SASL/PLAIN: the CLI creates the topics and publishes; the record is read back."""
    name = unique_name(f"plain-{protocol.lower()}")
    env = {
        **secured_kafka.env(protocol, "PLAIN"),
        "CONNECTOR_TOPICS__EVENTS": f"events-{name}",
        "CONNECTOR_TOPICS__AUDIT": f"audit-{name}",
        "CONNECTOR_TOPICS__DEAD_LETTER": f"dlq-{name}",
        "CONNECTOR_TOPICS__PARTITIONS": "1",
    }
    ensured = await cli(env, "topics", "ensure")
    assert ensured.returncode == 0, ensured.stderr
    assert ensured.stdout.count("created") == 5, ensured.stdout  # + parked, control
    event = make_event("opened", target("comeet", f"c-{name}"))
    event_file = tmp_path / "opened.json"
    event_file.write_text(json.dumps(event), encoding="utf-8")
    published = await cli(env, "publish", str(event_file))
    assert published.returncode == 0, published.stderr
    reader = Deployment(
        bootstrap=secured_kafka.bootstrap[protocol],
        env=env,
        tmp=tmp_path,
        client_config=secured_kafka.client_config(protocol, "PLAIN"),
    )
    records = await reader.read(f"events-{name}", lambda rs: len(rs) >= 1, timeout=30)
    assert [r["event_id"] for r in records] == [event["event_id"]]
    for result in (ensured, published):
        assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
async def test_wrong_password_fails_clearly(
    secured_kafka: SecuredKafka, tmp_path: Path, unique_name: NameFactory, protocol: str
) -> None:
    """A wrong password ends the CLI and the worker quickly, saying authentication failed,
    without printing either password."""
    wrong = tmp_path / "wrong-password"
    wrong.write_text(WRONG_PASSWORD + "\n", encoding="utf-8")
    env = {
        **secured_kafka.env(protocol),
        "CONNECTOR_KAFKA__SASL_PASSWORD_FILE": str(wrong),
        "CONNECTOR_APP_ID": unique_name("app"),
        "CONNECTOR_TOPICS__EVENTS": unique_name("events"),
        "CONNECTOR_DATA_DIR": str(tmp_path / "data"),
    }
    started = time.monotonic()
    result = await cli(env, "topics", "ensure", timeout=30)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert elapsed < 20, f"the CLI took {elapsed:.1f} s to give up"
    # aiokafka reports the broker's SASL error, then fails to bootstrap.
    assert (
        "SaslAuthenticationFailed: Authentication failed during authentication due to "
        "invalid credentials with SASL mechanism SCRAM-SHA-512" in output
    ), output
    assert "Unable to bootstrap" in output
    assert WRONG_PASSWORD not in output
    assert PASSWORD not in output

    # Vendor settings that pass the worker's own start-up checks, so that it gets as far
    # as the broker (nothing is ever sent to these URLs).
    vendors = {
        "CONNECTOR_KOMBO__BASE_URL": "http://127.0.0.1:9/v1",
        "CONNECTOR_KOMBO__API_KEY": "unused-key",
        "CONNECTOR_COMEET__BASE_URL": "http://127.0.0.1:9",
        "CONNECTOR_COMEET__TOKEN": "unused-token",
    }
    worker = WorkerProcess(
        {**env, **vendors}, worker_id="w-wrong", log_path=tmp_path / "w-wrong.log"
    )
    worker.start(wait_ready=None)
    try:
        for _ in range(150):  # 30 s
            if not worker.running:
                break
            await asyncio.sleep(0.2)
        assert not worker.running, "the worker kept running with a wrong password"
    finally:
        worker.stop()
    log = worker.log_path.read_text(encoding="utf-8")
    assert "Authentication failed" in log, log[-3000:]
    assert WRONG_PASSWORD not in log
    assert PASSWORD not in log


async def test_tls_is_verified_both_ways(
    secured_kafka: SecuredKafka, tmp_path: Path, unique_name: NameFactory
) -> None:
    """The client refuses a broker its CA did not sign; the SSL listener refuses a client
    without a certificate. So the successful runs above really did verify and present one."""
    untrusting = {
        **secured_kafka.env("SASL_SSL"),
        "CONNECTOR_KAFKA__SSL_CAFILE": "",  # system CAs only
        "CONNECTOR_TOPICS__EVENTS": unique_name("events"),
    }
    anonymous = {
        **secured_kafka.env("SSL"),
        "CONNECTOR_KAFKA__SSL_CERTFILE": "",
        "CONNECTOR_KAFKA__SSL_KEYFILE": "",
        "CONNECTOR_TOPICS__EVENTS": unique_name("events"),
    }
    refused, rejected = await asyncio.gather(
        cli(untrusting, "topics", "ensure"), cli(anonymous, "topics", "ensure")
    )
    assert refused.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused.stderr
    assert rejected.returncode != 0
    ssl_listener = secured_kafka.bootstrap["SSL"]
    assert f'Unable connect to "{ssl_listener}"' in rejected.stderr, rejected.stderr
    assert PASSWORD not in refused.stdout + refused.stderr


def test_password_not_in_settings_repr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    password_file = tmp_path / "kafka-password"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    monkeypatch.setenv("CONNECTOR_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CONNECTOR_KAFKA__SASL_USERNAME", USER)
    monkeypatch.setenv("CONNECTOR_KAFKA__SASL_PASSWORD_FILE", str(password_file))
    from_file = Settings()
    monkeypatch.delenv("CONNECTOR_KAFKA__SASL_PASSWORD_FILE")
    monkeypatch.setenv("CONNECTOR_KAFKA__SASL_PASSWORD", PASSWORD)
    from_env = Settings()
    explicit = Settings(kafka=KafkaSettings(sasl_username=USER, sasl_password=PASSWORD))
    for settings in (from_file, from_env, explicit):
        assert settings.kafka.sasl_password.get_secret_value() == PASSWORD  # it was read...
        shown = [repr(settings), str(settings), repr(settings.kafka), settings.model_dump_json()]
        for text in shown:
            assert PASSWORD not in text  # ...and is never shown
        assert "**********" in repr(settings.kafka)
