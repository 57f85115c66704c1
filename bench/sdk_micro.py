"""Micro-benchmark: the Kombo path through the official SDK against our KomboClient.

Same shared ``httpx.AsyncClient`` (built by :func:`connector.kafka.http.build_http_client`,
once per transport), same sandbox, same request (a full COMPLETED order result,
as mapped from the benchmark's completed event), ``concurrency`` requests in
flight, for ``seconds`` after a warm-up. Requests/s and the client process's CPU
time per request (all threads, so the SDK's thread-pool work counts).

Three clients:

- ``KomboClient``: ours (:class:`connector.vendors.kombo.KomboClient`);
- ``kombo SDK``: ``sdk.assessment.update_order_result_async(...)``, as shipped: its
  hooks run through ``run_sync_in_thread`` (``asyncio.to_thread``) twice per call;
- ``kombo SDK, hooks inline``: the same with ``kombo.basesdk.run_sync_in_thread``
  patched to call the hook directly, which isolates what the thread hops cost.

The SDK call also validates its keyword arguments into its own pydantic models;
that is part of what adopting it costs (the connector validates in ``map_event``
either way, outside the client).

Standalone: ``python -m bench.sdk_micro [--seconds 5]`` (starts its own sandbox).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import kombo
import kombo.basesdk
from pydantic import SecretStr

from bench.report import markdown_table
from bench.workload import event_value, make_orders
from connector.domain.events import parse_record
from connector.kafka.http import build_http_client
from connector.settings import DeliverySettings, KomboSettings
from connector.vendors import VendorRequest, map_event
from connector.vendors.kombo import KomboClient

__all__ = ["MicroResult", "micro_table", "run_micro"]

TRANSPORTS = ("aiohttp", "httpx")
_INTEGRATION = "bench:MICRO"


@dataclass(frozen=True)
class MicroResult:
    client: str
    transport: str
    ok: int
    errors: int
    seconds: float
    cpu_s: float

    @property
    def per_second(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        done = self.ok + self.errors
        return 1e6 * self.cpu_s / done if done else 0.0


def _completed_body() -> dict[str, Any]:
    [order] = make_orders("micro", 1)
    order_key = order.key
    value = event_value(order, "completed", time.time())
    request = map_event(parse_record(order_key, value, max_bytes=1 << 20))
    return request.body


Call = Callable[[int], Awaitable[None]]


def _hand_written(http: httpx.AsyncClient, url: str, key: str, body: dict[str, Any]) -> Call:
    client = KomboClient(http, KomboSettings(api_key=SecretStr(key), base_url=url))

    async def call(i: int) -> None:
        await client.send(
            VendorRequest(
                vendor="kombo",
                action="kombo.order_result",
                method="PUT",
                path=f"/assessment/orders/micro-{i}/result",
                body=body,
                headers={"X-Integration-Id": _INTEGRATION},
            )
        )

    return call


def _sdk(http: httpx.AsyncClient, url: str, key: str, body: dict[str, Any]) -> Call:
    sdk = kombo.Kombo(api_key=key, server_url=url, async_client=http)
    completed_at = datetime.fromisoformat(body["completed_at"].replace("Z", "+00:00"))
    headers = {"X-Integration-Id": _INTEGRATION}

    async def call(i: int) -> None:
        await sdk.assessment.update_order_result_async(
            assessment_order_id=f"micro-{i}",
            status=body["status"],
            result_url=body["result_url"],
            completed_at=completed_at,
            score=body.get("score"),
            max_score=body.get("max_score"),
            attributes=body.get("attributes"),
            attachments=body.get("attachments"),
            http_headers=headers,
        )

    return call


@contextlib.contextmanager
def _hooks_inline() -> Any:
    """Run the SDK's hooks on the event loop instead of in a worker thread."""
    original = kombo.basesdk.run_sync_in_thread

    async def inline(func: Callable[..., Any], *args: Any) -> Any:
        return func(*args)

    kombo.basesdk.run_sync_in_thread = inline
    try:
        yield
    finally:
        kombo.basesdk.run_sync_in_thread = original


async def _measure(
    call: Call, concurrency: int, seconds: float, ids: itertools.count[int]
) -> tuple[int, int, float, float]:
    ok = errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal ok, errors
        while time.perf_counter() < deadline:
            try:
                await call(next(ids))
                ok += 1
            except Exception:  # counted: a failing client must show, not crash the table
                errors += 1

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok, errors, time.perf_counter() - t0, time.process_time() - cpu0


@contextlib.asynccontextmanager
async def _shared_client(transport: str, concurrency: int) -> AsyncIterator[httpx.AsyncClient]:
    settings = DeliverySettings(transport=transport, pool_connections=max(concurrency, 64))
    http = build_http_client(settings)
    try:
        yield http
    finally:
        await http.aclose()


async def run_micro(
    kombo_url: str,
    kombo_key: str,
    *,
    seconds: float = 5.0,
    warmup_s: float = 1.0,
    concurrency: int = 64,
) -> list[MicroResult]:
    body = _completed_body()
    ids = itertools.count()
    results = []
    for transport in TRANSPORTS:
        async with _shared_client(transport, concurrency) as http:
            clients: list[tuple[str, Call, bool]] = [
                (
                    "KomboClient (hand-written)",
                    _hand_written(http, kombo_url, kombo_key, body),
                    False,
                ),
                ("kombo SDK", _sdk(http, kombo_url, kombo_key, body), False),
                ("kombo SDK, hooks inline (patched)", _sdk(http, kombo_url, kombo_key, body), True),
            ]
            for name, call, inline in clients:
                with _hooks_inline() if inline else contextlib.nullcontext():
                    await _measure(call, concurrency, warmup_s, ids)
                    ok, errors, elapsed, cpu = await _measure(call, concurrency, seconds, ids)
                results.append(MicroResult(name, transport, ok, errors, elapsed, cpu))
    return results


def micro_table(results: list[MicroResult]) -> str:
    rows = [
        [
            r.client,
            r.transport,
            f"{r.ok:,}" + (f" ({r.errors} errors)" if r.errors else ""),
            f"{r.per_second:,.0f}",
            f"{r.cpu_us_per_request:,.0f}",
        ]
        for r in results
    ]
    headers = ["Kombo client", "transport", "requests", "requests/s", "client CPU µs/request"]
    return markdown_table(headers, rows)


def main() -> None:
    from bench.observe import KOMBO_KEY, RunSandbox

    parser = argparse.ArgumentParser(prog="python -m bench.sdk_micro", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    async def go() -> list[MicroResult]:
        async with RunSandbox(0.0, Path("/dev/null")) as sandbox:
            return await run_micro(
                sandbox.kombo_url, KOMBO_KEY, seconds=args.seconds, concurrency=args.concurrency
            )

    results = asyncio.run(go())
    print(micro_table(results))
    print(json.dumps([r.__dict__ for r in results]))


if __name__ == "__main__":
    main()
