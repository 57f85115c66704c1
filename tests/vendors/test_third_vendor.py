"""Acceptance: a third vendor is one module and one registry entry (issue 20, item 6).

The vendor, Acme, lives only in the tests (:mod:`tests.vendors.acme_vendor`); no connector
module names it. Its events are parsed, mapped and sent over real HTTP to a small aiohttp
server, through the processor (parse, registry dispatch, lifecycle, delivery, audit) with
the clients :func:`connector.vendors.registry.build_clients` builds; the operator tools
then read its records and key forms from the registry.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from connector.domain.audit import SourceRef
from connector.domain.events import parse_record
from connector.infra.metrics import Metrics
from connector.ops import audit_view, check, dlq, order_view
from connector.pipeline import Processor
from connector.pipeline.delivery import OrderedDispatcher
from connector.pipeline.ratelimit import vendor_limits
from connector.settings import Settings
from connector.vendors import registry
from connector.vendors.registry import Vendor
from tests.core.test_processor import Sinks, Store
from tests.factories import make_event, record


@pytest.fixture
def acme() -> Iterator[Vendor]:
    from tests.vendors import acme_vendor  # importing the module registers it

    registry.register(acme_vendor.VENDOR)  # again, after an earlier test's unregister
    yield acme_vendor.VENDOR
    registry.unregister("acme")


class AcmeServer:
    """Acme's API, as small as it gets: ``POST /candidates/{id}/result``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], str]] = []
        self.url = ""

    async def result(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append((request.match_info["candidate"], body, request.headers["Authorization"]))
        if body.get("state") not in ("open", "done", "cancelled"):
            return web.json_response({"error": "bad state"}, status=422)
        return web.Response(status=204)


@pytest.fixture
async def acme_server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AcmeServer]:
    server = AcmeServer()
    app = web.Application()
    app.router.add_post("/candidates/{candidate}/result", server.result)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("ACME_BASE_URL", server.url)
    yield server
    await runner.cleanup()


def acme_target(candidate: str) -> dict[str, str]:
    return {"vendor": "acme", "candidate_id": candidate}


async def test_a_registered_vendor_is_parsed_mapped_sent_and_audited_end_to_end(
    acme: Vendor, acme_server: AcmeServer
) -> None:
    settings = Settings(worker_id="w-acme", delivery={"backoff_initial_s": 0.01})
    store, sinks, dispatcher = Store(), Sinks(), OrderedDispatcher(100)
    async with httpx.AsyncClient(timeout=5) as http:
        clients = registry.build_clients(http, settings)
        assert set(clients) == {"kombo", "comeet", "acme"}
        processor = Processor(settings, store, clients, sinks, dispatcher)
        events = [
            make_event("opened", acme_target("c/1")),
            make_event("completed", acme_target("c/1")),
            make_event("opened", acme_target("c/1")),  # after COMPLETED: the guard refuses
        ]
        acked: list[int] = []
        for offset, event in enumerate(events):
            key, value = record(event)
            assert key == b"acme|c/1"
            await processor.handle(
                SourceRef(topic="events", partition=0, offset=offset),
                key,
                value,
                lambda o=offset: acked.append(o),
            )
        await dispatcher.join()

    # The wire: two calls, the id as one encoded path segment, the completed outcome.
    assert [(c, b) for c, b, _ in acme_server.calls] == [
        ("c/1", {"state": "open"}),
        ("c/1", {"state": "done", "outcome": "passed"}),
    ]
    assert sorted(acked) == [0, 1, 2]
    terminal = [r for r in sinks.audits if r.terminal]
    assert [(r.vendor, r.action, r.outcome, r.http_status) for r in terminal[:2]] == [
        ("acme", "acme.result", "delivered", 204),
        ("acme", "acme.result", "delivered", 204),
    ]
    assert terminal[2].outcome == "rejected"  # the lifecycle guard holds for Acme too
    assert not sinks.letters

    # The operator tools, unchanged, read Acme from the registry.
    row = json.loads(terminal[1].model_dump_json())
    assert row["order_key"] == "acme|c/1"
    line = audit_view.format_row(row, width=160)
    assert "acme|c/1" in line and "delivered" in line
    assert audit_view.vendor_of("acme|c/1") == "acme"
    assert audit_view.is_order_key("acme|c/1")
    assert audit_view.AuditFilter(vendor="acme")(row)
    assert dlq.target_of("acme|c/1") == "acme"

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    audit_view.add_tail_arguments(sub.add_parser("audit"))
    dlq.add_dlq_arguments(sub.add_parser("dlq"))
    show = sub.add_parser("order")
    order_view.add_show_arguments(show)
    assert parser.parse_args(["audit", "tail", "--vendor", "acme"]).vendor == "acme"
    assert parser.parse_args(["dlq", "list", "--vendor", "acme"]).vendor == "acme"
    assert "acme|<candidate_id>" in show.format_help()

    metrics = Metrics()
    assert 'connector_retries_total{vendor="acme"} 0.0' in metrics.render().decode()
    assert vendor_limits(settings)["acme"] == (
        settings.delivery.rate_limit_per_s,
        settings.delivery.rate_limit_burst,
    )
    assert settings.outage_policy("acme") == settings.delivery.on_outage
    assert "acme-test-token" in registry.secret_values(settings)
    errors, _ = check.static_problems(settings)
    assert not [e for e in errors if "acme" in e.lower()]


async def test_an_unregistered_vendor_is_refused_and_never_reaches_another(
    acme: Vendor, acme_server: AcmeServer
) -> None:
    key, value = record(make_event("completed", acme_target("c-2")))
    event = parse_record(key, value, max_bytes=1_000_000)
    registry.unregister("acme")
    with pytest.raises(Exception) as raised:
        registry.map_event(event)
    assert getattr(raised.value, "code", None) == "unknown_vendor"
    # Unregistered, its target no longer parses either: a schema dead letter, not Kombo.
    with pytest.raises(Exception) as refused:
        parse_record(key, value, max_bytes=1_000_000)
    assert getattr(refused.value, "code", None) == "schema"
    assert acme_server.calls == []
