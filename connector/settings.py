"""All configuration, read from the environment in this module only.

Every variable carries the ``CONNECTOR_`` prefix and nested groups use ``__``
(``CONNECTOR_KOMBO__API_KEY``). One exception keeps the ecosystem convention:
``KAFKA_BOOTSTRAP_SERVERS`` is honoured as is, because every Kafka tool and
compose file already speaks it.

Secrets are :class:`~pydantic.SecretStr`: their ``repr``/``str`` print
``**********`` so a settings object can be logged. A secret may also be read
from a file (``CONNECTOR_KOMBO__API_KEY_FILE``), the way container
orchestrators mount them.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "KOMBO_REGIONS",
    "ComeetCustomer",
    "ComeetSettings",
    "DeliverySettings",
    "KafkaSettings",
    "KomboAccount",
    "KomboSettings",
    "Settings",
    "StateSettings",
    "TopicSettings",
    "child_environment",
    "connector_environment",
    "external_bootstrap_servers",
    "get_settings",
    "otel_environment",
]

KOMBO_REGIONS = {
    "eu": "https://api.kombo.dev/v1",
    "us": "https://api.us.kombo.dev/v1",
}


def _listed_once(selectors: dict[str, list[str]], what: str) -> None:
    """An id or pattern listed by two accounts: which one is meant cannot be guessed."""
    owner: dict[str, str] = {}
    for name, listed in sorted(selectors.items()):
        for selector in listed:
            if owner.setdefault(selector, name) != name:
                raise ValueError(
                    f"{what} {selector!r} is listed by {owner[selector]!r} and {name!r}"
                )


def _read_secret_file(path: str | None) -> SecretStr | None:
    if not path:
        return None
    # A missing or empty file is a deployment mistake: say which file and how to make
    # it, rather than fail later with a vendor's 401 or a bare traceback.
    file = Path(path)
    if not file.is_file():
        raise ValueError(
            f"secret file {path} does not exist: create it (Docker Compose: run "
            "scripts/compose-secrets, see README 'Docker Compose')"
        )
    try:
        secret = file.read_text(encoding="utf-8").strip()
    except OSError as exc:  # e.g. a Compose secret mounted 0600 for another uid
        raise ValueError(
            f"secret file {path} cannot be read by uid {os.getuid()} "
            f"({exc.strerror or type(exc).__name__}): make it readable by that user "
            "(Docker Compose mounts a file with its host owner and mode: run "
            "scripts/compose-secrets again, see README 'Docker Compose')"
        ) from None
    except UnicodeDecodeError:
        raise ValueError(f"secret file {path} is not UTF-8 text") from None
    if not secret:
        raise ValueError(f"secret file {path} is empty")
    return SecretStr(secret)


OutagePolicy = Literal["park", "dead_letter", "stop"]
_NOT_IN_INSTANCE_ID = re.compile(r"[^A-Za-z0-9._-]")


class KafkaSettings(BaseModel):
    """How to reach Kafka. Empty ``bootstrap_servers`` means: start a local broker."""

    bootstrap_servers: str = ""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: SecretStr = SecretStr("")
    sasl_password_file: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    max_message_bytes: int = Field(default=1_048_576, gt=0)
    # How soon the group notices a dead worker and moves its partitions (a SIGKILLed
    # worker's partitions are silent this long, then rebalanced: BENCHMARKS.md
    # "Failover"). Short is safe because heartbeats are sent from Faust's consumer thread,
    # not the event loop the deliveries keep busy. The broker's minimum is 6 s.
    session_timeout_s: float = Field(default=10.0, gt=0)
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    # Static group membership (KIP-345), the worker id and URL as the group instance id
    # (Settings.group_instance_id): a worker crashed and restarted within the session
    # timeout under the same id (a StatefulSet pod, a Compose slot) gets its partitions
    # back without a rebalance. A stopped worker still leaves the group at once
    # (connector.kafka.membership).
    static_membership: bool = True
    # read_committed: an event a transactional producer aborted was never published,
    # and must not reach a vendor (Faust's own default reads uncommitted records).
    isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed"
    # How long the producer waits to batch audit and changelog records: fewer, larger
    # produce requests (CPU), at that much latency on the writes a delivery awaits.
    producer_linger_ms: int = Field(default=0, ge=0, le=1000)
    # The most one partition's pending batch holds. aiokafka keeps one open batch per
    # partition and makes every further send wait (asyncio.wait) until it is drained:
    # with Kafka's 16 KiB and ~1 KB audit records, hundreds of deliveries queue there.
    producer_batch_bytes: int = Field(default=524_288, ge=1024, le=16 * 1_048_576)

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> KafkaSettings:
        # The broker evicts a member whose heartbeats are further apart than its session.
        if self.heartbeat_interval_s >= self.session_timeout_s:
            raise ValueError(
                f"heartbeat_interval_s ({self.heartbeat_interval_s:g}) must be below "
                f"session_timeout_s ({self.session_timeout_s:g}); a third of it is usual"
            )
        return self

    @model_validator(mode="after")
    def _secret_from_file(self) -> KafkaSettings:
        secret = _read_secret_file(self.sasl_password_file)
        if secret is not None:
            self.sasl_password = secret
        return self


class TopicSettings(BaseModel):
    """Topic names and shapes. Partitions bound the parallelism of a consumer group."""

    events: str = "assessment.events"
    audit: str = "assessment.audit"
    dead_letter: str = "assessment.dlq"
    # Events of a target that is down wait here, in order (empty: "<events>.parked").
    parked: str = ""
    # Operators' pause/resume per target, compacted (empty: "<events>.control").
    control: str = ""
    partitions: int = Field(default=6, gt=0)
    replication_factor: int = Field(default=1, gt=0)

    @property
    def parking(self) -> str:
        return self.parked or f"{self.events}.parked"

    @property
    def control_topic(self) -> str:
        return self.control or f"{self.events}.control"


class KomboAccount(BaseModel):
    """One more Kombo account (a region or an environment) and the integrations it serves.

    ``integrations`` lists integration ids or shell-style patterns (``us-*``); routing
    rules are in :mod:`connector.vendors.accounts`. The key comes from ``api_key`` or
    ``api_key_file`` and is required.
    """

    api_key: SecretStr = SecretStr("")
    api_key_file: str | None = None
    region: Literal["eu", "us"] = "eu"
    base_url: str = ""
    integrations: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _secret_from_file(self) -> KomboAccount:
        secret = _read_secret_file(self.api_key_file)
        if secret is not None:
            self.api_key = secret
        if not self.api_key.get_secret_value():
            raise ValueError("a Kombo account needs api_key or api_key_file")
        return self

    @property
    def url(self) -> str:
        return (self.base_url or KOMBO_REGIONS[self.region]).rstrip("/")


class ComeetCustomer(BaseModel):
    """One Comeet customer's token and the evaluation ids it covers.

    The partner (this connector's user) issues evaluation ids, so a per-customer
    prefix makes them routable: ``evaluations`` lists ids or patterns (``acme-*``).
    """

    token: SecretStr = SecretStr("")
    token_file: str | None = None
    base_url: str = ""  # empty: CONNECTOR_COMEET__BASE_URL
    evaluations: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _secret_from_file(self) -> ComeetCustomer:
        secret = _read_secret_file(self.token_file)
        if secret is not None:
            self.token = secret
        if not self.token.get_secret_value():
            raise ValueError("a Comeet customer needs token or token_file")
        return self


class KomboSettings(BaseModel):
    """Kombo unified API. ``base_url`` wins over ``region``.

    ``api_key``/``region``/``base_url`` are the default account; ``accounts`` adds
    named ones (``CONNECTOR_KOMBO__ACCOUNTS__US__API_KEY_FILE``, ...), each serving
    the integrations it lists.
    """

    api_key: SecretStr = SecretStr("")
    api_key_file: str | None = None
    region: Literal["eu", "us"] = "eu"
    base_url: str = ""
    # Requests/s to each Kombo integration, for the whole deployment (each worker takes the
    # share its partitions carry, connector.pipeline.rate_share); 0 = the delivery-wide
    # limit applies.
    rate_limit_per_s: float = Field(default=0.0, ge=0)
    rate_limit_burst: int = Field(default=20, gt=0)
    on_outage: OutagePolicy | None = None  # None: CONNECTOR_DELIVERY__ON_OUTAGE
    accounts: dict[str, KomboAccount] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _secret_from_file(self) -> KomboSettings:
        secret = _read_secret_file(self.api_key_file)
        if secret is not None:
            self.api_key = secret
        _listed_once({n: a.integrations for n, a in self.accounts.items()}, "integration")
        return self

    @property
    def url(self) -> str:
        return (self.base_url or KOMBO_REGIONS[self.region]).rstrip("/")


class ComeetSettings(BaseModel):
    """Comeet evaluation API (bearer token).

    ``token`` is the default; ``customers`` adds per-customer tokens
    (``CONNECTOR_COMEET__CUSTOMERS__ACME__TOKEN_FILE``, ...) by evaluation id.
    """

    token: SecretStr = SecretStr("")
    token_file: str | None = None
    base_url: str = "https://api.comeet.co"
    # Requests/s to Comeet, for the whole deployment (shared by partition like Kombo's);
    # 0 = the delivery-wide limit applies.
    rate_limit_per_s: float = Field(default=0.0, ge=0)
    rate_limit_burst: int = Field(default=20, gt=0)
    on_outage: OutagePolicy | None = None  # None: CONNECTOR_DELIVERY__ON_OUTAGE
    customers: dict[str, ComeetCustomer] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _secret_from_file(self) -> ComeetSettings:
        secret = _read_secret_file(self.token_file)
        if secret is not None:
            self.token = secret
        _listed_once({n: c.evaluations for n, c in self.customers.items()}, "evaluation")
        return self

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/")


class DeliverySettings(BaseModel):
    """Outbound calls: concurrency, timeouts and the retry policy."""

    max_in_flight: int = Field(default=256, gt=0, description="concurrent HTTP calls per worker")
    # Records admitted per worker, including those waiting for a retry or behind an
    # earlier event of their order: the memory bound, far above max_in_flight so that
    # a failing target's parked events do not stop healthy ones.
    max_pending: int = Field(default=2_000, gt=0)
    max_in_flight_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=30.0, gt=0)
    pool_connections: int = Field(default=256, gt=0)
    max_attempts: int = Field(default=8, gt=0)
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    retry_deadline_s: float = Field(default=300.0, gt=0, description="total time per event")
    transport: Literal["aiohttp", "httpx"] = "aiohttp"
    rate_limit_per_s: float = Field(default=0.0, ge=0, description="per target; 0 = off")
    rate_limit_burst: int = Field(default=20, gt=0)
    # What happens to a target's events while it is down (its circuit is open):
    # park them in order and deliver them when it answers again (default), dead-letter
    # them after the retry budget (the first version's behaviour), or stop consuming
    # until it answers (Kafka Connect's errors.tolerance=none). Per vendor overrides.
    on_outage: OutagePolicy = "park"
    # The circuit opens after this many consecutive retryable failures of one target.
    breaker_failures: int = Field(default=5, gt=0)
    breaker_cool_down_s: float = Field(default=2.0, gt=0)
    breaker_max_cool_down_s: float = Field(default=60.0, gt=0)
    # An event parked for longer than this is dead-lettered as "expired".
    max_event_age_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    # Parked records admitted per worker while they wait for their target.
    max_pending_parked: int = Field(default=2_000, gt=0)

    @property
    def call_timeout_s(self) -> float:
        """How long one request may stay on the wire: connect plus read."""
        return self.connect_timeout_s + self.read_timeout_s


class StateSettings(BaseModel):
    """Bounds on the per-order state kept in the table."""

    event_ids_per_order: int = Field(default=64, gt=0)
    # RocksDB memory per partition database. Faust's defaults (64 MiB write buffers x 3,
    # 2 GiB block cache) grow a worker's RSS with every order it sees; the table's
    # values are a few hundred bytes, so small buffers cost little. Reads mostly hit the
    # connector's own cache of decoded states; a 4 MiB block cache per partition kept a
    # worker at 245 MB with 1M orders, against 254 MB with 8 MiB (BENCHMARKS.md).
    rocksdb_write_buffer_mb: int = Field(default=4, gt=0)
    rocksdb_block_cache_mb: int = Field(default=4, gt=0)


class Settings(BaseSettings):
    """The connector's whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="CONNECTOR_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    app_id: str = "assessment-connector"
    worker_id: str = Field(default_factory=socket.gethostname)
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    kombo: KomboSettings = KomboSettings()
    comeet: ComeetSettings = ComeetSettings()
    delivery: DeliverySettings = DeliverySettings()
    state: StateSettings = StateSettings()
    store: str = "rocksdb://"
    data_dir: str = ".connector-data"
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=0)
    # The host name other workers use to reach this one (``GET /orders/{key}`` redirects
    # to the owner's URL). Empty: this machine's host name, which on Kubernetes is the
    # bare pod name that other pods cannot resolve; set it to the pod's name under the
    # headless Service there (deploy/k8s/statefulset.yaml).
    web_advertised_host: str = ""
    web_enabled: bool = True
    standby_replicas: int = Field(default=0, ge=0)
    # Where a new app id (no committed offsets, no state) starts when the events topic
    # already has other readers: empty = refuse (a misspelt app id would replay the topic
    # to the vendors), see connector/ops/first_start.py. `connector worker --new-deployment
    # --from ...` sets it for one start.
    new_deployment: Literal["", "earliest", "latest"] = ""
    recovery_stall_s: float = Field(default=600.0, gt=0)
    # A worker taking partitions over can read their changelog straight into the store
    # (connector/kafka/bulk_recovery.py) instead of through Faust's per-record stream:
    # 1M orders in 8 s against 94 s (python -m bench.rebuild). Off by default: with it, a
    # worker that took over a SIGKILLed worker's partitions under load left one of them
    # unread (python -m bench.failover --variants kill: ~430 of 16,500 events never
    # handled, in 6 runs of 7; 0 in 4 runs without it). Not to be turned on before that
    # stall is understood and has a test (BENCHMARKS.md "Failover at scale").
    bulk_recovery: bool = False
    log_level: str = "INFO"
    log_json: bool = True
    # uvloop: Faust's per-message machinery and the HTTP client cost less on it
    # (BENCHMARKS.md); asyncio is the fallback and the benchmark's comparison.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # Allocations between two young-generation passes of Python's cyclic garbage
    # collector (Python's default: 700). With thousands of admitted jobs alive, the
    # default spent a third of the worker's CPU in collections (BENCHMARKS.md).
    gc_threshold: int = Field(default=50_000, ge=1)

    @property
    def advertised_host(self) -> str:
        """The host in this worker's URL as the group sees it (Faust's ``web_host``)."""
        return self.web_advertised_host or socket.gethostname()

    @property
    def group_instance_id(self) -> str | None:
        """The consumer's static group instance id, or None: dynamic membership.

        The worker id, and a digest of the worker's URL: a static member that rejoins is
        handed the assignment made for its previous incarnation, and Faust's assignor
        refuses one naming another URL (an assertion that stops the consumer for good). A
        worker whose URL changed (another port) joins as a new member instead. Kafka allows
        letters, digits, '.', '_' and '-' in the id.
        """
        if not self.kafka.static_membership:
            return None
        url = f"http://{self.advertised_host}:{self.web_port}"
        digest = hashlib.sha256(url.encode()).hexdigest()[:10]
        return f"{_NOT_IN_INSTANCE_ID.sub('_', self.worker_id)[:200]}-{digest}"

    @property
    def rebalance_timeout_s(self) -> float:
        """The group's rebalance timeout: a revoke awaits calls on the wire, then margin."""
        return max(60.0, self.delivery.call_timeout_s + 30.0)

    @property
    def shutdown_drain_s(self) -> float:
        """How long a stop (or revoke) waits for calls on the wire: one call plus margin.

        Everything not on the wire is cancelled at once and left for the next owner,
        so this bounds the drain however many records are admitted.
        """
        return self.delivery.call_timeout_s + 5.0

    @property
    def shutdown_grace_s(self) -> float:
        """What a supervisor must wait before SIGKILL: the drain, then Faust's own stop.

        Faust then flushes the producer, commits and leaves the group; 30 s covers that
        against a healthy broker. Docker's stop_grace_period and Kubernetes'
        terminationGracePeriodSeconds must be at least this (tests/test_compose.py,
        tests/test_k8s.py check the shipped files).
        """
        return self.shutdown_drain_s + 30.0

    @property
    def max_poll_interval_s(self) -> float:
        """The consumer stops polling at most one retry deadline plus a call (then margin)."""
        return max(300.0, self.delivery.retry_deadline_s + self.delivery.call_timeout_s + 60.0)

    def outage_policy(self, vendor: str) -> OutagePolicy:
        # A vendor's section is named after it (connector.vendors.registry); a vendor
        # without one, or without its own policy, follows the delivery-wide one.
        own = getattr(getattr(self, vendor, None), "on_outage", None)
        return own or self.delivery.on_outage

    @model_validator(mode="after")
    def _conventional_kafka_env(self) -> Settings:
        if not self.kafka.bootstrap_servers:
            self.kafka.bootstrap_servers = external_bootstrap_servers()
        return self


def external_bootstrap_servers() -> str:
    """``KAFKA_BOOTSTRAP_SERVERS`` if set: use that broker and start none."""
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()


def child_environment(overrides: dict[str, str]) -> dict[str, str]:
    """The environment for a process we start (worker, sandbox, broker): ours plus overrides."""
    return {**os.environ, **overrides}


def get_settings() -> Settings:
    return Settings()


def connector_environment() -> dict[str, str]:
    """Every ``CONNECTOR_`` variable set, for the typo check.

    (:mod:`connector.infra.config_errors`)
    """
    return {k: v for k, v in os.environ.items() if k.upper().startswith("CONNECTOR_")}


def otel_environment() -> dict[str, str]:
    """OpenTelemetry's standard ``OTEL_`` variables, for :mod:`connector.infra.tracing`."""
    return {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}
