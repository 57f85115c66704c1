"""What both baselines share: configuration, the vendor HTTP call, the two HTTP clients.

The baselines send exactly the connector's vendor requests: each record goes
through :func:`connector.domain.events.parse_record` and :func:`connector.vendors.map_event`,
so the per-event domain work (parsing, validation, mapping) is the same in every
implementation and the comparison isolates what the framework around it costs.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import httpx

from connector.vendors import VendorRequest

__all__ = [
    "AiohttpSender",
    "BaselineConfig",
    "HttpCall",
    "HttpxSender",
    "Sender",
    "announce",
    "make_sender",
    "send_with_retries",
]

MAX_EVENT_BYTES = 1_048_576  # the connector's default max_message_bytes


@dataclass(frozen=True, slots=True)
class HttpCall:
    method: str
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class BaselineConfig:
    """Everything a baseline process needs, from ``BENCH_*`` environment variables."""

    bootstrap: str
    topic: str
    group: str
    partitions: int
    kombo_url: str
    kombo_key: str
    comeet_url: str
    comeet_token: str
    data_dir: str
    max_in_flight: int = 256
    http: str = "aiohttp"  # "aiohttp" | "httpx": the loop's HTTP client
    _kombo_auth: dict[str, str] = field(init=False, repr=False)
    _comeet_auth: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        json_type = {"Content-Type": "application/json"}
        object.__setattr__(
            self, "_kombo_auth", {"Authorization": f"Bearer {self.kombo_key}", **json_type}
        )
        object.__setattr__(
            self, "_comeet_auth", {"Authorization": f"Bearer {self.comeet_token}", **json_type}
        )

    @classmethod
    def from_env(cls) -> BaselineConfig:
        env = os.environ
        return cls(
            bootstrap=env["BENCH_BOOTSTRAP"],
            topic=env["BENCH_TOPIC"],
            group=env["BENCH_GROUP"],
            partitions=int(env["BENCH_PARTITIONS"]),
            kombo_url=env["BENCH_KOMBO_URL"].rstrip("/"),
            kombo_key=env["BENCH_KOMBO_KEY"],
            comeet_url=env["BENCH_COMEET_URL"].rstrip("/"),
            comeet_token=env["BENCH_COMEET_TOKEN"],
            data_dir=env["BENCH_DATA_DIR"],
            max_in_flight=int(env.get("BENCH_MAX_IN_FLIGHT", "256")),
            http=env.get("BENCH_HTTP", "aiohttp"),
        )

    def http_call(self, request: VendorRequest) -> HttpCall:
        """The HTTP request for a mapped event, as the connector's vendor clients send it."""
        body = json.dumps(request.body, separators=(",", ":")).encode()
        if request.vendor == "kombo":
            headers = {**self._kombo_auth, **request.headers}
            return HttpCall(request.method, self.kombo_url + request.path, {}, headers, body)
        url = self.comeet_url + request.path
        return HttpCall(request.method, url, request.params, self._comeet_auth, body)


def announce(partitions: list[int]) -> None:
    """Tell the benchmark (reading our stdout) the partitions we now own."""
    sys.stdout.write(json.dumps({"assigned": sorted(partitions)}) + "\n")
    sys.stdout.flush()


class Sender(Protocol):
    async def send(self, call: HttpCall) -> int: ...

    async def aclose(self) -> None: ...


class AiohttpSender:
    """aiohttp's own client and connection pool."""

    def __init__(self, limit: int) -> None:
        connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=30.0)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=30.0)
        )

    async def send(self, call: HttpCall) -> int:
        async with self._session.request(
            call.method, call.url, params=call.params or None, data=call.body, headers=call.headers
        ) as response:
            await response.read()
            return response.status

    async def aclose(self) -> None:
        await self._session.close()


class HttpxSender:
    """Plain ``httpx.AsyncClient``: httpx's own (httpcore) connection pool."""

    def __init__(self, limit: int) -> None:
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            timeout=30.0,
        )

    async def send(self, call: HttpCall) -> int:
        response = await self._client.request(
            call.method,
            call.url,
            params=call.params or None,
            content=call.body,
            headers=call.headers,
        )
        return response.status_code

    async def aclose(self) -> None:
        await self._client.aclose()


def make_sender(kind: str, limit: int) -> Sender:
    """Must be called inside the running event loop (aiohttp binds its session to it)."""
    if kind == "aiohttp":
        return AiohttpSender(limit)
    if kind == "httpx":
        return HttpxSender(limit)
    raise ValueError(f"unknown HTTP client {kind!r}")


_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


async def send_with_retries(sender: Sender, call: HttpCall, attempts: int = 5) -> int:
    """What a careful hand-written loop does: retry transient failures with backoff."""
    status = 0
    for attempt in range(attempts):
        try:
            status = await sender.send(call)
        except (aiohttp.ClientError, httpx.HTTPError, TimeoutError):
            status = 0
        if status and status not in _RETRY_STATUSES:
            return status
        await asyncio.sleep(min(2.0, 0.05 * 2**attempt))
    return status
