"""``connector check``: is this deployment's configuration usable? And the worker's refusal.

Checks, in order, each printed as one line (``ok``, ``warn``, ``skip`` or
``FAIL``):

1. the configuration: every value valid (:mod:`connector.config_errors` names
   the variable for each problem), unknown ``CONNECTOR_`` variables (a warning
   with the closest real name), a credential for every vendor whose URL is not
   local (:func:`static_problems`);
2. the broker answers;
3. the connector's topics exist, and the co-partitioned ones (events,
   parking, control, the table changelog) agree on their partition count
   (:func:`connector.kafka_clients.verify_partition_counts`); the app id is not a
   new one on an events topic other groups already read (a typo: the worker would
   refuse to start, :mod:`connector.first_start`);
4. each vendor credential, where a harmless call allows it: Kombo's
   ``GET /check-api-key`` (documented by Kombo, read-only) for the default key
   and every named account. Comeet documents no read-only call (its one
   endpoint changes an evaluation's status), so its token is not checked.

Exit code 0 when nothing failed, 2 otherwise. ``connector worker`` runs the
static part (:func:`refuse_unsafe_start`) before it joins the group.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from connector.config_errors import ConfigError, load_settings, unknown_variables
from connector.settings import Settings, otel_environment

__all__ = [
    "BROKER_TIMEOUT_S",
    "Check",
    "is_local_url",
    "refuse_unsafe_start",
    "run_checks",
    "static_problems",
]

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_S = 15.0
VENDOR_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str  # ok | warn | skip | FAIL
    detail: str

    def line(self) -> str:
        return f"{self.name:<11} {self.status:<5} {self.detail}"


def is_local_url(url: str) -> bool:
    """A URL on this machine (the sandboxes, a local mock): no real vendor behind it."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_problem(variable: str, url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return (
            f"{variable}={url!r}: not an http(s) URL; "
            "fix: set the vendor's base URL, e.g. https://api.comeet.co"
        )
    return None


def static_problems(settings: Settings) -> tuple[list[str], list[str]]:
    """(errors, warnings) found without the network."""
    errors: list[str] = []
    warnings: list[str] = []
    kombo, comeet = settings.kombo, settings.comeet
    if kombo.base_url and (problem := _url_problem("CONNECTOR_KOMBO__BASE_URL", kombo.base_url)):
        errors.append(problem)
    if problem := _url_problem("CONNECTOR_COMEET__BASE_URL", comeet.base_url):
        errors.append(problem)
    # An empty credential against a real vendor dead-letters every event as a 401.
    if not kombo.api_key.get_secret_value() and not is_local_url(kombo.url):
        where = (
            "CONNECTOR_KOMBO__BASE_URL"
            if kombo.base_url
            else f"CONNECTOR_KOMBO__REGION={kombo.region}"
        )
        line = (
            f"CONNECTOR_KOMBO__API_KEY: empty while Kombo calls go to {kombo.url} ({where}); "
            "fix: set CONNECTOR_KOMBO__API_KEY or CONNECTOR_KOMBO__API_KEY_FILE"
        )
        # With named accounts the default key only serves integrations none of them lists.
        (warnings if kombo.accounts else errors).append(line)
    if not comeet.token.get_secret_value() and not is_local_url(comeet.url):
        line = (
            f"CONNECTOR_COMEET__TOKEN: empty while Comeet calls go to {comeet.url} "
            "(CONNECTOR_COMEET__BASE_URL); "
            "fix: set CONNECTOR_COMEET__TOKEN or CONNECTOR_COMEET__TOKEN_FILE"
        )
        (warnings if comeet.customers else errors).append(line)
    if not settings.kafka.bootstrap_servers:
        errors.append(
            "KAFKA_BOOTSTRAP_SERVERS: not set; fix: set it (or CONNECTOR_KAFKA__BOOTSTRAP_SERVERS) "
            "to the brokers, e.g. localhost:9092"
        )
    from connector.tracing import otel_requested

    if otel_requested(otel_environment()):
        try:
            import opentelemetry.sdk  # noqa: F401
        except ImportError:
            warnings.append(
                "OTEL_*: OpenTelemetry is configured but its SDK is not installed, so no "
                "spans are exported; fix: install the connector's 'otel' extra"
            )
    return errors, [*warnings, *unknown_variables()]


def refuse_unsafe_start(settings: Settings) -> list[str]:
    """The worker's static checks: raise :class:`ConfigError` on errors, return warnings."""
    errors, warnings = static_problems(settings)
    if errors:
        raise ConfigError(errors)
    return warnings


# -- network checks ---------------------------------------------------------------------------
async def _broker_and_topics(settings: Settings) -> list[Check]:
    from aiokafka.errors import KafkaError

    from connector.errors import ConfigurationError
    from connector.kafka_clients import admin_client
    from connector.topics import definitions

    servers = settings.kafka.bootstrap_servers
    admin = admin_client(settings)
    try:
        await asyncio.wait_for(admin.start(), BROKER_TIMEOUT_S)
        existing = set(await asyncio.wait_for(admin.list_topics(), BROKER_TIMEOUT_S))
    except (KafkaError, OSError, TimeoutError) as exc:
        return [
            Check(
                "broker",
                "FAIL",
                f"KAFKA_BOOTSTRAP_SERVERS={servers}: no answer ({type(exc).__name__}: {exc}); "
                "fix: check the address, the listener and CONNECTOR_KAFKA__SECURITY_PROTOCOL",
            )
        ]
    finally:
        await admin.close()
    checks = [Check("broker", "ok", f"{servers} answered")]
    names = {
        settings.topics.events: "CONNECTOR_TOPICS__EVENTS",
        settings.topics.audit: "CONNECTOR_TOPICS__AUDIT",
        settings.topics.dead_letter: "CONNECTOR_TOPICS__DEAD_LETTER",
        settings.topics.parking: "CONNECTOR_TOPICS__PARKED",
        settings.topics.control_topic: "CONNECTOR_TOPICS__CONTROL",
    }
    missing = [d.name for d in definitions(settings) if d.name not in existing]
    if missing:
        listed = ", ".join(f"{name} ({names.get(name, 'topic')})" for name in missing)
        checks.append(
            Check(
                "topics",
                "FAIL",
                f"missing: {listed}; fix: run `connector topics ensure`, or correct the names",
            )
        )
    else:
        checks.append(Check("topics", "ok", f"{len(names)} topics exist"))
    try:
        counts = await asyncio.wait_for(_verify_partition_counts(settings), BROKER_TIMEOUT_S)
    except ConfigurationError as exc:
        checks.append(Check("partitions", "FAIL", str(exc)))
    except (KafkaError, OSError, TimeoutError) as exc:
        checks.append(Check("partitions", "FAIL", f"could not read: {type(exc).__name__}"))
    else:
        found = ", ".join(f"{topic} {n}" for topic, n in sorted(counts.items()))
        checks.append(Check("partitions", "ok", f"co-partitioned topics agree ({found})"))
    return checks


async def _app_id(settings: Settings) -> Check:
    """A new app id on a topic other groups read: a typo (connector/first_start.py)."""
    from aiokafka.errors import KafkaError

    from connector.first_start import check_status, inspect

    try:
        state = await asyncio.wait_for(inspect(settings), BROKER_TIMEOUT_S)
    except (KafkaError, OSError, TimeoutError) as exc:
        return Check("app id", "warn", f"could not read the group's offsets: {type(exc).__name__}")
    status, detail = check_status(state, settings.new_deployment)
    return Check("app id", status, detail)


async def _verify_partition_counts(settings: Settings) -> Mapping[str, int]:
    """The events, parking, control and changelog topics agree (kafka_clients owns the rule)."""
    from connector.kafka_clients import verify_partition_counts

    return await verify_partition_counts(settings)


async def _kombo_key(
    http: httpx.AsyncClient, name: str, variable: str, url: str, key: str
) -> Check:
    if not key:
        return Check(name, "skip", f"{variable} is empty")
    try:
        response = await http.get(
            f"{url}/check-api-key", headers={"Authorization": f"Bearer {key}"}
        )
    except httpx.HTTPError as exc:
        where = variable.replace("API_KEY", "BASE_URL")
        return Check(
            name, "FAIL", f"{url} did not answer ({type(exc).__name__}); fix: check {where}"
        )
    if response.status_code == 200:
        return Check(name, "ok", f"{variable} accepted by {url}/check-api-key")
    if response.status_code in (401, 403):
        return Check(
            name,
            "FAIL",
            f"{variable}: rejected by {url} (HTTP {response.status_code}); "
            f"fix: set the key from Kombo's dashboard (Secrets) for this region or environment",
        )
    return Check(name, "warn", f"{url}/check-api-key answered HTTP {response.status_code}")


async def _vendors(settings: Settings) -> list[Check]:
    kombo = settings.kombo
    async with httpx.AsyncClient(timeout=VENDOR_TIMEOUT_S, follow_redirects=False) as http:
        jobs = [
            _kombo_key(
                http,
                "kombo",
                "CONNECTOR_KOMBO__API_KEY",
                kombo.url,
                kombo.api_key.get_secret_value(),
            )
        ]
        for name, account in sorted(kombo.accounts.items()):
            variable = f"CONNECTOR_KOMBO__ACCOUNTS__{name.upper()}__API_KEY"
            jobs.append(
                _kombo_key(
                    http, f"kombo:{name}", variable, account.url, account.api_key.get_secret_value()
                )
            )
        checks = list(await asyncio.gather(*jobs))
    checks.append(
        Check(
            "comeet",
            "skip",
            "token not checked: Comeet documents no harmless call (its only endpoint "
            "changes an evaluation)",
        )
    )
    return checks


def run_checks() -> int:
    """``connector check``: print one line per check; 0 when none failed, else 2."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        for line in exc.lines:
            print(Check("config", "FAIL", line).line())
        return 2
    errors, warnings = static_problems(settings)
    lines = [Check("config", "FAIL", e) for e in errors]
    lines += [Check("config", "warn", w) for w in warnings]
    if not lines:
        lines.append(Check("config", "ok", "every setting valid"))
    for check in lines:
        print(check.line(), flush=True)
    if not settings.kafka.bootstrap_servers:
        return 2

    async def network() -> list[Check]:
        broker = await _broker_and_topics(settings)
        if broker[0].status == "ok":
            broker.append(await _app_id(settings))
        return broker + await _vendors(settings)

    checks = asyncio.run(network())
    for check in checks:
        print(check.line(), flush=True)
    failed = errors or any(c.status == "FAIL" for c in checks)
    return 2 if failed else 0
