"""Issue 7: recognisable credentials never appear in logs, audit, dead letters or metrics."""

from __future__ import annotations

import json

import httpx
import pytest

from connector.sandbox import Sandboxes
from tests.e2e.harness import KOMBO_KEY, Deployment
from tests.factories import make_event, target

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

WRONG_TOKEN = "comeet-WRONG-5ecret-TOKEN-9999"


async def test_no_secret_leaks_anywhere(deployment: Deployment, sandboxes: Sandboxes) -> None:
    ok = [make_event(kind, target("kombo", "k-sec")) for kind in ("opened", "completed")]
    refused = make_event("completed", target("comeet", "c-sec"))  # 401: wrong token
    sandboxes.kombo.faults.add_error(500, target="workday:ACME1", count=1)
    worker = deployment.worker(CONNECTOR_COMEET__TOKEN=WRONG_TOKEN, CONNECTOR_LOG_LEVEL="DEBUG")
    await deployment.publish([*ok, refused])
    await deployment.publish_raw([(b"kombo|x|y", b"{broken")])
    audit = await deployment.audit_until_terminal(
        [e["event_id"] for e in [*ok, refused]], invalid=1
    )
    letters = await deployment.read(deployment.dlq_topic, lambda rs: len(rs) >= 2)
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{worker.web_port}/metrics")).text
    worker.stop()
    log = worker.log_path.read_text(encoding="utf-8")

    # The scenario did exercise the paths that could leak: a 401 and a retried 500.
    assert any(r.get("http_status") == 401 for r in audit)
    assert any(r.get("http_status") == 500 for r in audit)
    assert "DEBUG" in log
    received = json.dumps([*sandboxes.kombo.recorded(), *sandboxes.comeet.recorded()])
    places = {
        "worker log": log,
        "audit": json.dumps(audit),
        "dead letters": json.dumps(letters),
        "metrics": metrics,
        "sandbox records": received,
    }
    for secret in (KOMBO_KEY, WRONG_TOKEN):
        leaked = [place for place, content in places.items() if secret in content]
        assert not leaked, f"secret found in: {leaked}"
