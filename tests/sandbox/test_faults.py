"""Fault injection: the rule engine itself, then every fault kind over real sockets."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from pydantic import ValidationError

from connector.sandbox import DROPPED, AsyncSandboxControl, FaultInjector, FaultSpec, Sandboxes
from tests.sandbox.conftest import INTEGRATION, comeet_error, kombo_error
from tests.sandbox.seed_examples import COMEET_EXAMPLE, KOMBO_RESULT_EXAMPLE

RESULT = "/assessment/orders/{}/result"
OPEN = {"status": "OPEN", "result_url": "https://example.com/r/1"}
STARTED = {"status": "Test started"}


async def put_result(kombo: httpx.AsyncClient, order_id: str = "o-1", **kwargs: object) -> int:
    response = await kombo.put(RESULT.format(order_id), json=OPEN, **kwargs)  # type: ignore[arg-type]
    return response.status_code


async def post_status(comeet: httpx.AsyncClient, evaluation_id: str = "e-1") -> httpx.Response:
    return await comeet.post(
        "/evaluation/status", params={"evaluation_id": evaluation_id}, json=STARTED
    )


# -- the rule engine ------------------------------------------------------------------------------


def test_no_rules_means_no_fault() -> None:
    assert FaultInjector().decide("anything") is None


def test_count_limits_a_rule_to_the_next_matching_requests() -> None:
    faults = FaultInjector()
    faults.add_error(503, target="a", count=2)

    decisions = [faults.decide(t) for t in ("b", "a", "b", "a", "a")]

    assert [d.status if d else None for d in decisions] == [None, 503, None, 503, None]
    assert faults.rules() == []  # spent rules are removed


def test_first_terminal_rule_wins_and_latency_adds_up() -> None:
    faults = FaultInjector()
    faults.add_latency(100)
    faults.add_error(500, count=1, latency_ms=20)
    faults.add_rate_limit(retry_after_s=3, count=1)

    first = faults.decide(None)
    second = faults.decide(None)
    third = faults.decide(None)

    assert first is not None and (first.status, first.delay_s) == (500, pytest.approx(0.12))
    # The rate limit was not consumed while the error rule won.
    assert second is not None and (second.status, second.retry_after_s) == (429, 3)
    assert third is not None and (third.status, third.delay_s) == (None, pytest.approx(0.1))


def test_seeded_probability_is_reproducible() -> None:
    def run() -> list[bool]:
        faults = FaultInjector()
        faults.add_error(503, probability=0.3, seed=42)
        return [faults.decide("x") is not None for _ in range(500)]

    first, second = run(), run()

    assert first == second
    assert 100 < sum(first) < 200  # 30 % of 500, within a wide margin


def test_outage_expires() -> None:
    faults = FaultInjector()
    faults.add_outage(0.05, target="a")

    during = faults.decide("a")
    time.sleep(0.06)

    assert during is not None and during.status == 503 and during.kind == "outage"
    assert faults.decide("a") is None
    assert faults.rules() == []


def test_remove_and_clear() -> None:
    faults = FaultInjector(latency_ms=5)
    rule = faults.add_drop()
    faults.add_error(502)

    assert faults.remove(rule) is True
    assert faults.remove(rule) is False
    assert [r["kind"] for r in faults.rules()] == ["error"]
    assert faults.clear() == 1
    assert faults.latency_ms == 5  # the global latency is not a rule


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "latency"},
        {"kind": "outage"},
        {"kind": "error", "duration_s": 1},
        {"kind": "rate_limit", "status": 503},
        {"kind": "drop", "status": 500},
        {"kind": "error", "status": 200},
        {"kind": "error", "probability": 1.5},
        {"kind": "error", "count": 0},
        {"kind": "explode"},
        {"kind": "error", "colour": "red"},
        {"kind": "error", "per_s": 5},
        {"kind": "rate_limit", "burst": 5},
        {"kind": "rate_limit", "per_s": 0},
    ],
)
def test_invalid_specs_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FaultSpec.model_validate(fields)


def test_an_enforced_rate_answers_429_only_above_it(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("connector.sandbox.faults.time.monotonic", lambda: now[0])
    faults = FaultInjector()
    faults.add_rate_limit(per_s=10, burst=3)

    def limited(target: str = "i-1") -> bool:
        fault = faults.decide(target)
        return fault is not None and fault.status == 429

    assert [limited() for _ in range(4)] == [False, False, False, True]  # the burst
    assert not limited("i-2")  # each target has its own bucket
    now[0] += 0.1
    assert [limited(), limited()] == [False, True]  # 10/s: one token in 0.1 s
    now[0] += 10.0
    assert sum(not limited() for _ in range(10)) == 3  # saved up: the burst, no more
    assert len(faults.rules()) == 1  # an enforced rate stays


@pytest.mark.parametrize("ms", [-1, float("nan"), float("inf"), True])
def test_invalid_latency_is_refused(ms: float) -> None:
    with pytest.raises(ValueError):
        FaultInjector().set_latency(ms)


# -- over HTTP: status errors ---------------------------------------------------------------------


async def test_error_by_count_then_recovery(kombo: httpx.AsyncClient, sandboxes: Sandboxes) -> None:
    sandboxes.kombo.faults.add_error(503, target=INTEGRATION, count=3)

    responses = [await kombo.put(RESULT.format("o-1"), json=OPEN) for _ in range(4)]

    for response in responses[:3]:
        kombo_error(response, 503, "REMOTE.SERVICE_UNAVAILABLE")
    assert responses[3].status_code == 200
    assert [e["status_code"] for e in sandboxes.kombo.recorded()] == [503, 503, 503, 200]
    order = sandboxes.kombo.order(INTEGRATION, "o-1")
    assert order is not None and order.updates == 1  # faulted requests changed nothing


async def test_error_targets_only_its_integration(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    sandboxes.kombo.faults.add_error(500, code="PLATFORM.UNKNOWN_ERROR", target="lever:x")

    ours = await put_result(kombo)
    theirs = await kombo.put(
        RESULT.format("o-1"), json=OPEN, headers={"X-Integration-Id": "lever:x"}
    )

    assert ours == 200
    kombo_error(theirs, 500, "PLATFORM.UNKNOWN_ERROR")
    assert sandboxes.kombo.order("lever:x", "o-1") is None


async def test_faulted_request_does_not_change_state(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    await kombo.put(RESULT.format("o-1"), json=KOMBO_RESULT_EXAMPLE)
    sandboxes.kombo.faults.add_error(502, count=1, message="bad gateway today")

    response = await kombo.put(RESULT.format("o-1"), json={**OPEN, "score": 1})

    assert kombo_error(response, 502, None) == "bad gateway today"
    order = sandboxes.kombo.order(INTEGRATION, "o-1")
    assert order is not None and order.body == KOMBO_RESULT_EXAMPLE
    assert sandboxes.kombo.recorded()[-1]["body"] == {**OPEN, "score": 1}


async def test_comeet_error_by_count(comeet: httpx.AsyncClient, sandboxes: Sandboxes) -> None:
    sandboxes.comeet.faults.add_error(500, target="e-1", count=2)

    responses = [await post_status(comeet) for _ in range(3)]
    other = await post_status(comeet, "e-2")

    assert comeet_error(responses[0], 500) == "Internal Server Error"
    comeet_error(responses[1], 500)
    assert responses[2].status_code == 204
    assert other.status_code == 204
    evaluation = sandboxes.comeet.evaluation("e-1")
    assert evaluation is not None and evaluation.updates == 1


async def test_seeded_probability_over_http_matches_the_engine(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    sandboxes.kombo.faults.add_error(503, probability=0.5, seed=7)
    reference = FaultInjector()
    reference.add_error(503, probability=0.5, seed=7)

    codes = [await put_result(kombo, f"o-{i}") for i in range(40)]

    expected = [503 if reference.decide(INTEGRATION) else 200 for _ in range(40)]
    assert codes == expected
    assert 5 < codes.count(503) < 35


async def test_rate_limit_sends_retry_after(
    kombo: httpx.AsyncClient, comeet: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    sandboxes.kombo.faults.add_rate_limit(retry_after_s=7, count=1)
    sandboxes.comeet.faults.add_rate_limit(retry_after_s=2, count=1)

    k = await kombo.put(RESULT.format("o-1"), json=OPEN)
    c = await post_status(comeet)

    kombo_error(k, 429, "PLATFORM.RATE_LIMIT_EXCEEDED")
    assert k.headers["Retry-After"] == "7"
    assert comeet_error(c, 429) == "Too Many Requests"
    assert c.headers["Retry-After"] == "2"
    assert await put_result(kombo) == 200


# -- over HTTP: latency, drops, outages -----------------------------------------------------------


async def _timed(kombo: httpx.AsyncClient) -> float:
    start = time.perf_counter()
    assert await put_result(kombo) == 200
    return time.perf_counter() - start


async def test_latency_rule_delays_the_answer(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    await _timed(kombo)  # warm the connection
    sandboxes.kombo.faults.add_latency(250, count=1)

    delayed = await _timed(kombo)
    normal = await _timed(kombo)

    assert delayed >= 0.25
    assert normal < delayed


async def test_global_latency_delays_every_request(
    kombo: httpx.AsyncClient, comeet: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    sandboxes.set_latency(150)
    start = time.perf_counter()
    codes = await asyncio.gather(
        put_result(kombo, "o-1"), put_result(kombo, "o-2"), post_status(comeet)
    )
    elapsed = time.perf_counter() - start

    assert codes[:2] == [200, 200] and codes[2].status_code == 204
    assert elapsed >= 0.15
    # Concurrent requests wait side by side, not one after another.
    assert elapsed < 0.45
    sandboxes.set_latency(0)
    assert sandboxes.kombo.faults.latency_ms == 0


async def test_dropped_connection_is_a_transport_error(
    kombo: httpx.AsyncClient, comeet: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    sandboxes.kombo.faults.add_drop(count=1)
    sandboxes.comeet.faults.add_drop(target="e-1", count=1)

    with pytest.raises(httpx.TransportError):
        await kombo.put(RESULT.format("o-1"), json=OPEN)
    with pytest.raises(httpx.TransportError):
        await post_status(comeet)

    assert sandboxes.kombo.recorded()[0]["status_code"] == DROPPED
    assert sandboxes.comeet.recorded()[0]["status_code"] == DROPPED
    assert sandboxes.kombo.order(INTEGRATION, "o-1") is None
    assert sandboxes.comeet.evaluation("e-1") is None
    # The next request on the same client gets a fresh connection and an answer.
    assert await put_result(kombo) == 200
    assert (await post_status(comeet)).status_code == 204


async def test_outage_answers_503_until_it_ends(
    kombo: httpx.AsyncClient, comeet: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    sandboxes.kombo.faults.add_outage(0.4, target=INTEGRATION)
    sandboxes.comeet.faults.add_outage(0.4, target="e-1")

    during = await kombo.put(RESULT.format("o-1"), json=OPEN)
    comeet_during = await post_status(comeet)
    other = await kombo.put(RESULT.format("o-1"), json=OPEN, headers={"X-Integration-Id": "b:1"})
    await asyncio.sleep(0.45)
    after = await put_result(kombo)
    comeet_after = await post_status(comeet)

    assert INTEGRATION in kombo_error(during, 503, "REMOTE.SERVICE_UNAVAILABLE")
    comeet_error(comeet_during, 503)
    assert other.status_code == 200
    assert (after, comeet_after.status_code) == (200, 204)


async def test_faults_through_the_control_api(
    kombo: httpx.AsyncClient, comeet: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    async with AsyncSandboxControl(sandboxes.kombo_url) as control:
        rule = await control.add_fault("error", status=504, count=5)
        listed = await control.faults()
        first = await kombo.put(RESULT.format("o-1"), json=OPEN)
        await control.remove_fault(rule)
        second = await put_result(kombo)
        await control.add_fault("drop")
        assert await control.clear_faults() == 1
        third = await put_result(kombo)
        with pytest.raises(httpx.HTTPStatusError) as refused:
            await control.add_fault("error", probability=2)

    assert [(r["id"], r["status"], r["remaining"]) for r in listed] == [(rule, 504, 5)]
    kombo_error(first, 504, "PLATFORM.TASK_TIMED_OUT")
    assert (second, third) == (200, 200)
    assert refused.value.response.status_code == 400
    assert "probability" in refused.value.response.json()["error"]
    assert (await post_status(comeet)).status_code == 204  # Kombo's faults stay on Kombo


async def test_comeet_example_survives_a_retry_after_faults(
    comeet: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    sandboxes.comeet.faults.add_error(503, count=1)
    sandboxes.comeet.faults.add_drop(count=1)

    async def send() -> httpx.Response:
        return await comeet.post(
            "/evaluation/status", params={"evaluation_id": "e-9"}, json=COMEET_EXAMPLE
        )

    first = await send()
    with pytest.raises(httpx.TransportError):
        await send()
    third = await send()

    assert (first.status_code, third.status_code) == (503, 204)
    assert [e["status_code"] for e in sandboxes.comeet.recorded(key="e-9")] == [503, DROPPED, 204]
    evaluation = sandboxes.comeet.evaluation("e-9")
    assert evaluation is not None and evaluation.updates == 1
