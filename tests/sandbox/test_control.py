"""The request log and the HTTP control API of both servers."""

from __future__ import annotations

import httpx
import pytest

from connector.sandbox import AsyncSandboxControl, KomboSandbox, RequestLog, Sandboxes
from tests.sandbox.conftest import INTEGRATION, KOMBO_KEY, client, kombo_error
from tests.sandbox.seed_examples import COMEET_EXAMPLE, KOMBO_PACKAGES_EXAMPLE

RESULT = "/assessment/orders/{}/result"
OPEN = {"status": "OPEN", "result_url": "https://example.com/r/1"}


def test_request_log_drops_the_oldest_and_keeps_indexes() -> None:
    log = RequestLog(maxlen=3)
    for i in range(5):
        log.append({"key": "a" if i % 2 else "b", "n": i})

    assert len(log) == 3
    assert [e["index"] for e in log.select()] == [2, 3, 4]
    assert log.get(0) is None
    assert log.get(3) == {"key": "a", "n": 3, "index": 3}
    assert [e["n"] for e in log.select(since=3)] == [3, 4]
    assert [e["n"] for e in log.select(key="b")] == [2, 4]
    assert [e["n"] for e in log.select(limit=1)] == [2]
    log.clear()
    assert log.select() == []
    assert log.append({"key": None}) == 5  # indexes never go back


async def test_sandbox_log_is_bounded() -> None:
    async with KomboSandbox(api_key=KOMBO_KEY, max_recorded=2) as sandbox:
        async with client(
            sandbox.url,
            headers={"Authorization": f"Bearer {KOMBO_KEY}", "X-Integration-Id": INTEGRATION},
        ) as http:
            for i in range(4):
                assert (await http.put(RESULT.format(f"o-{i}"), json=OPEN)).status_code == 200

        assert [e["key"] for e in sandbox.recorded()] == [
            f"{INTEGRATION}/o-2",
            f"{INTEGRATION}/o-3",
        ]
        assert len(sandbox.orders) == 4  # state is not bounded by the log


async def test_requests_endpoint_filters_by_key_and_since(
    kombo: httpx.AsyncClient, comeet: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    for order_id in ("o-1", "o-2", "o-1"):
        await kombo.put(RESULT.format(order_id), json=OPEN)
    await comeet.post("/evaluation/status", params={"evaluation_id": "e-1"}, json=COMEET_EXAMPLE)

    async with (
        AsyncSandboxControl(sandboxes.kombo_url) as k,
        AsyncSandboxControl(sandboxes.comeet_url) as c,
    ):
        by_key = await k.requests(key=f"{INTEGRATION}/o-1")
        since = await k.requests(since=1)
        limited = await k.requests(since=1, limit=1)
        comeet_entries = await c.requests(key="e-1")

    assert [e["index"] for e in by_key] == [0, 2]
    assert [e["index"] for e in since] == [1, 2]
    assert [e["index"] for e in limited] == [1]
    assert [e["body"] for e in comeet_entries] == [COMEET_EXAMPLE]
    async with client(sandboxes.kombo.root_url) as http:
        page = (await http.get("/_sandbox/requests", params={"since": 2})).json()
        one = await http.get("/_sandbox/requests/1")
        gone = await http.get("/_sandbox/requests/99")
        bad = await http.get("/_sandbox/requests", params={"since": "x"})
    assert page["next"] == 3 and [e["index"] for e in page["requests"]] == [2]
    assert one.json()["key"] == f"{INTEGRATION}/o-2"
    assert (gone.status_code, bad.status_code) == (404, 400)


async def test_state_and_reset_through_the_control_api(
    kombo: httpx.AsyncClient, comeet: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    await kombo.put(RESULT.format("o-1"), json=OPEN)
    await kombo.put("/assessment/packages", json=KOMBO_PACKAGES_EXAMPLE)
    await comeet.post("/evaluation/status", params={"evaluation_id": "e-1"}, json=COMEET_EXAMPLE)

    async with (
        AsyncSandboxControl(sandboxes.kombo_url) as k,
        AsyncSandboxControl(sandboxes.comeet_url) as c,
    ):
        await k.set_integration("lever:gone", state="unknown", warnings=["w"])
        kombo_state = await k.state()
        comeet_state = await c.state()
        await k.add_fault("error", status=503)
        await k.set_latency(20)
        await k.reset()
        await c.reset()
        after = await k.state()
        faults_after = await k.faults()
        requests_after = await k.requests()

    order = kombo_state["orders"][f"{INTEGRATION}/o-1"]
    assert (order["status"], order["body"], order["order_id"]) == ("OPEN", OPEN, "o-1")
    assert [p["id"] for p in kombo_state["packages"][INTEGRATION]["active"]] == ["1001", "1002"]
    assert kombo_state["integrations"]["lever:gone"] == {
        "state": "unknown",
        "warnings": [{"message": "w"}],
    }
    assert comeet_state["evaluations"]["e-1"]["body"] == COMEET_EXAMPLE
    assert after == {"orders": {}, "packages": {}, "integrations": {}}
    assert faults_after == [] and requests_after == []
    assert sandboxes.kombo.faults.latency_ms == 0
    assert sandboxes.comeet.state() == {"evaluations": {}}
    assert await kombo.put(RESULT.format("o-1"), json=OPEN) is not None


async def test_integration_and_evaluation_marks_through_the_control_api(
    kombo: httpx.AsyncClient, comeet: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    async with (
        AsyncSandboxControl(sandboxes.kombo_url) as k,
        AsyncSandboxControl(sandboxes.comeet_url) as c,
    ):
        await k.set_integration(INTEGRATION, state="inactive")
        await c.set_evaluation("e-1", "deleted")
        kombo_response = await kombo.put(RESULT.format("o-1"), json=OPEN)
        comeet_response = await comeet.post(
            "/evaluation/status", params={"evaluation_id": "e-1"}, json=COMEET_EXAMPLE
        )
        with pytest.raises(httpx.HTTPStatusError):
            await k.set_integration(INTEGRATION, state="sleeping")
        with pytest.raises(httpx.HTTPStatusError):
            await c.set_evaluation("e-1", "gone")

    kombo_error(kombo_response, 403, "INTEGRATION.INACTIVE")
    assert comeet_response.json() == {"status": 404, "message": "Candidate was deleted"}


async def test_control_api_is_not_under_the_vendor_paths(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    response = await kombo.get("/_sandbox/state")  # i.e. /v1/_sandbox/state
    reset = await kombo.post("/_sandbox/reset")

    kombo_error(response, 404, None)
    kombo_error(reset, 404, None)
    assert len(sandboxes.kombo.recorded()) == 2  # recorded, and nothing was reset


async def test_control_client_refuses_a_non_sandbox_url() -> None:
    with pytest.raises(ValueError):
        AsyncSandboxControl("https://example.com/v1")


async def test_oversized_body_answers_413_and_is_recorded() -> None:
    async with KomboSandbox(api_key=KOMBO_KEY, max_body_bytes=1024) as sandbox:
        async with client(
            sandbox.url,
            headers={"Authorization": f"Bearer {KOMBO_KEY}", "X-Integration-Id": INTEGRATION},
        ) as http:
            big = await http.put(RESULT.format("o-1"), json={**OPEN, "pad": "x" * 2048})
            small = await http.put(RESULT.format("o-1"), json=OPEN)

        assert kombo_error(big, 413, "PLATFORM.INPUT_INVALID") == "body: larger than 1024 bytes"
        assert small.status_code == 200
        first, _ = sandbox.recorded()
        assert (first["status_code"], first["body"]) == (413, None)
