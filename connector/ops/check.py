"""``connector check``: is this deployment's configuration usable? And the worker's refusal.

Checks, in order, each printed as one line (``ok``, ``warn``, ``skip`` or
``FAIL``):

1. the configuration: every value valid (:mod:`connector.infra.config_errors` names
   the variable for each problem), unknown ``CONNECTOR_`` variables (a warning
   with the closest real name), a credential for every vendor whose URL is not
   local (:func:`static_problems`);
2. the broker answers;
3. the connector's topics exist, and the co-partitioned ones (events,
   parking, control, the table changelog) agree on their partition count
   (:func:`connector.infra.kafka_clients.verify_partition_counts`); the app id is not a
   new one on an events topic other groups already read (a typo: the worker would
   refuse to start, :mod:`connector.ops.first_start`);
4. each vendor credential, where a harmless call allows it: each registered vendor's
   ``probe`` (:mod:`connector.vendors.registry`). Kombo's is ``GET /check-api-key``
   (documented by Kombo, read-only) for the default key and every named account;
   Comeet documents no read-only call (its one endpoint changes an evaluation's
   status), so its token is not checked.

Exit code 0 when nothing failed, 2 otherwise. ``connector worker`` runs the
static part (:func:`refuse_unsafe_start`) before it joins the group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import httpx

from connector.infra.config_errors import ConfigError, load_settings, unknown_variables
from connector.settings import Settings, otel_environment
from connector.vendors import registry
from connector.vendors.checks import Check, is_local_url

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


def static_problems(settings: Settings) -> tuple[list[str], list[str]]:
    """(errors, warnings) found without the network."""
    errors: list[str] = []
    warnings: list[str] = []
    for vendor in registry.entries():
        if vendor.config_problems is not None:
            own_errors, own_warnings = vendor.config_problems(settings)
            errors += own_errors
            warnings += own_warnings
    if not settings.kafka.bootstrap_servers:
        errors.append(
            "KAFKA_BOOTSTRAP_SERVERS: not set; fix: set it (or CONNECTOR_KAFKA__BOOTSTRAP_SERVERS) "
            "to the brokers, e.g. localhost:9092"
        )
    from connector.infra.tracing import otel_requested

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
    from connector.infra.kafka_clients import admin_client
    from connector.infra.topics import definitions

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
    """A new app id on a topic other groups read: a typo (connector/ops/first_start.py)."""
    from aiokafka.errors import KafkaError

    from connector.ops.first_start import check_status, inspect

    try:
        state = await asyncio.wait_for(inspect(settings), BROKER_TIMEOUT_S)
    except (KafkaError, OSError, TimeoutError) as exc:
        return Check("app id", "warn", f"could not read the group's offsets: {type(exc).__name__}")
    status, detail = check_status(state, settings.new_deployment)
    return Check("app id", status, detail)


async def _verify_partition_counts(settings: Settings) -> Mapping[str, int]:
    """The events, parking, control and changelog topics agree (kafka_clients owns the rule)."""
    from connector.infra.kafka_clients import verify_partition_counts

    return await verify_partition_counts(settings)


async def _vendors(settings: Settings) -> list[Check]:
    async with httpx.AsyncClient(timeout=VENDOR_TIMEOUT_S, follow_redirects=False) as http:
        probes = [v.probe(http, settings) for v in registry.entries() if v.probe is not None]
        found = await asyncio.gather(*probes)
    return [check for checks in found for check in checks]


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
