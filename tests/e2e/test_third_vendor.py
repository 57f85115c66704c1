"""A third vendor through a real worker process: broker, worker, Acme's HTTP server, audit.

The worker is ``tests/e2e/acme_worker.py``: the connector's own, with the test-local
vendor module imported (registered). Nothing in ``connector/`` names Acme. The worker
builds its clients with :func:`connector.vendors.registry.build_clients`
(``ConnectorApp.runtime``); a worker without Acme's client dead-letters its events.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from connector.sandbox import Sandboxes
from connector.vendors.registry import Vendor
from tests.e2e.harness import Deployment, terminal_by_event
from tests.factories import make_event
from tests.vendors.test_third_vendor import AcmeServer, acme, acme_server, acme_target

__all__ = ["acme", "acme_server"]  # the fixtures, shared with the in-process test

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

ACME_WORKER = Path(__file__).with_name("acme_worker.py")


async def test_a_registered_vendor_is_delivered_by_a_worker_process(
    deployment: Deployment, sandboxes: Sandboxes, acme: Vendor, acme_server: AcmeServer
) -> None:
    events = [
        make_event("opened", acme_target("e2e-1")),
        make_event("completed", acme_target("e2e-1")),
        make_event("opened", acme_target("e2e-1")),  # after COMPLETED: refused
    ]
    deployment.worker(argv=[sys.executable, str(ACME_WORKER)], ACME_BASE_URL=acme_server.url)
    await deployment.publish(events)
    audit = await deployment.audit_until_terminal([e["event_id"] for e in events], timeout=60)

    ids = [e["event_id"] for e in events]
    assert terminal_by_event(audit) == {
        ids[0]: ["delivered"],
        ids[1]: ["delivered"],
        ids[2]: ["rejected"],
    }
    assert [(c, b) for c, b, _ in acme_server.calls] == [
        ("e2e-1", {"state": "open"}),
        ("e2e-1", {"state": "done", "outcome": "passed"}),
    ]
    delivered = [r for r in audit if r["terminal"] and r["outcome"] == "delivered"]
    assert {(r["vendor"], r["order_key"], r["action"]) for r in delivered} == {
        ("acme", "acme|e2e-1", "acme.result")
    }
