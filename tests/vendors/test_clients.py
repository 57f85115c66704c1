"""The vendor clients on real sockets, on both HTTP transports.

Identifiers reach the sandboxes exactly (one percent-encoded path segment for Kombo,
a query parameter for Comeet), and ``send`` ends in a ``DeliveryError`` whatever goes
wrong: a request that can never be sent is permanent, a broken answer is retryable.
Anything else escaping ``send`` would end the delivery job without an outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from connector.domain.events import event_adapter
from connector.errors import DeliveryError, PermanentDeliveryError, RetryableDeliveryError
from connector.kafka.http import build_http_client
from connector.sandbox import Sandboxes
from connector.settings import ComeetSettings, DeliverySettings, KomboSettings
from connector.vendors import comeet, kombo
from connector.vendors.base import VendorRequest
from tests.factories import make_event, target

KOMBO_KEY = "clients-kombo-key"
COMEET_TOKEN = "clients-comeet-token"
INTEGRATION = "workday:HWUTwvyx2wLoSUHphiWVrp28"

ODD_IDS = [
    "a/b?c#d%2F..",
    ".",
    "..",
    "../..",
    "%2E%2E",
    "ü-ñ 日本",
    "a|b",
    "a+b&c=d;e,f",
    " leading and trailing ",
    "emoji 🎉",
    "x" * 1024,
]


@pytest.fixture(params=["aiohttp", "httpx"])
async def http(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    settings = DeliverySettings(transport=request.param, connect_timeout_s=2, read_timeout_s=5)
    async with build_http_client(settings) as client:
        yield client


@pytest.fixture
async def sandboxes() -> AsyncIterator[Sandboxes]:
    async with Sandboxes(kombo_key=KOMBO_KEY, comeet_token=COMEET_TOKEN, seed=1) as sb:
        yield sb


def kombo_client(http: httpx.AsyncClient, base_url: str, key: str = KOMBO_KEY) -> kombo.KomboClient:
    return kombo.KomboClient(http, KomboSettings(api_key=SecretStr(key), base_url=base_url))


def comeet_client(
    http: httpx.AsyncClient, base_url: str, token: str = COMEET_TOKEN
) -> comeet.ComeetClient:
    return comeet.ComeetClient(http, ComeetSettings(token=SecretStr(token), base_url=base_url))


@pytest.mark.parametrize("order_id", ODD_IDS)
async def test_kombo_order_id_reaches_the_sandbox_exactly(
    http: httpx.AsyncClient, sandboxes: Sandboxes, order_id: str
) -> None:
    event = event_adapter.validate_python(
        make_event("opened", target("kombo", order_id, INTEGRATION))
    )
    result = await kombo_client(http, sandboxes.kombo_url).send(kombo.map_event(event))
    assert result.http_status == 200
    assert list(sandboxes.kombo.orders) == [f"{INTEGRATION}/{order_id}"]
    order = sandboxes.kombo.order(INTEGRATION, order_id)
    assert order is not None and order.status == "OPEN"
    [entry] = sandboxes.kombo.recorded()
    assert entry["raw_path"] == "/v1" + kombo.map_event(event).path  # sent verbatim


@pytest.mark.parametrize("evaluation_id", [*ODD_IDS, "a&b=c#d+e%20f", "=", "&"])
async def test_comeet_evaluation_id_reaches_the_sandbox_exactly(
    http: httpx.AsyncClient, sandboxes: Sandboxes, evaluation_id: str
) -> None:
    event = event_adapter.validate_python(make_event("opened", target("comeet", evaluation_id)))
    result = await comeet_client(http, sandboxes.comeet_url).send(comeet.map_event(event))
    assert result.http_status in (200, 204)
    assert list(sandboxes.comeet.evaluations) == [evaluation_id]
    [entry] = sandboxes.comeet.recorded()
    assert entry["query"] == {"evaluation_id": evaluation_id}


def _request(headers: dict[str, str], path: str = "/assessment/orders/o-1/result") -> VendorRequest:
    return VendorRequest(
        vendor="kombo",
        action="kombo.order_result",
        method="PUT",
        path=path,
        body={"status": "OPEN", "result_url": "https://example.com/r/1"},
        headers=headers,
    )


@pytest.mark.parametrize(
    "integration_id",
    ["workday:ü", "日本", "a\r\nX-Injected: 1", "a\nb", "a\x00b", "a\x7fb", "a\udc80b"],
    ids=repr,
)
async def test_an_unsendable_header_value_is_permanent_and_nothing_is_sent(
    http: httpx.AsyncClient, sandboxes: Sandboxes, integration_id: str
) -> None:
    client = kombo_client(http, sandboxes.kombo_url)
    with pytest.raises(PermanentDeliveryError) as info:
        await client.send(_request({"X-Integration-Id": integration_id}))
    assert "X-Integration-Id" in str(info.value)
    assert integration_id not in str(info.value)
    assert not info.value.may_have_arrived
    assert sandboxes.kombo.recorded() == []


async def test_an_unsendable_credential_is_permanent_and_never_shown(
    http: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    with pytest.raises(PermanentDeliveryError) as info:
        await kombo_client(http, sandboxes.kombo_url, key="sécret").send(
            _request({"X-Integration-Id": INTEGRATION})
        )
    assert "sécret" not in str(info.value) and "Authorization" in str(info.value)
    event = event_adapter.validate_python(make_event("opened", target("comeet", "e-1")))
    with pytest.raises(PermanentDeliveryError) as info:
        await comeet_client(http, sandboxes.comeet_url, token="tök\nen").send(
            comeet.map_event(event)
        )
    assert "tök" not in str(info.value)
    assert sandboxes.kombo.recorded() == [] and sandboxes.comeet.recorded() == []


@pytest.mark.parametrize(
    ("base_url", "path"),
    [
        ("ftp://127.0.0.1:1/v1", "/x"),  # httpx.UnsupportedProtocol
        ("http://127.0.0.1:1/v1", "/x\x00y"),  # httpx.InvalidURL (not an httpx.HTTPError)
        ("http://[::1/v1", "/x"),  # httpx.InvalidURL
        ("http://127.0.0.1:99999/v1", "/x"),  # a port out of range
    ],
    ids=["unsupported-protocol", "control-char-in-path", "bad-host", "bad-port"],
)
async def test_a_request_that_can_never_be_sent_is_permanent(
    http: httpx.AsyncClient, base_url: str, path: str
) -> None:
    with pytest.raises(PermanentDeliveryError) as info:
        await kombo_client(http, base_url).send(_request({"X-Integration-Id": "w:1"}, path))
    assert not info.value.may_have_arrived


async def test_connection_refused_is_retryable(http: httpx.AsyncClient) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(RetryableDeliveryError) as info:
        await kombo_client(http, f"http://127.0.0.1:{port}/v1").send(
            _request({"X-Integration-Id": "w:1"})
        )
    assert not info.value.may_have_arrived


async def test_a_connection_dropped_after_the_request_may_have_arrived(
    http: httpx.AsyncClient,
) -> None:
    # httpx-aiohttp reports this as a ConnectTimeout; the request was sent all the same.
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    try:
        with pytest.raises(RetryableDeliveryError) as info:
            await kombo_client(http, base).send(_request({"X-Integration-Id": "w:1"}))
        assert info.value.may_have_arrived
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "reply",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Bad: \x00\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab",
    ],
    ids=["bad-status-line", "bad-content-length", "bad-header", "short-body"],
)
@pytest.mark.parametrize("vendor", ["kombo", "comeet"])
async def test_a_garbled_answer_is_retryable(
    http: httpx.AsyncClient, reply: bytes, vendor: str
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    if vendor == "kombo":
        call = kombo_client(http, base + "/v1").send(_request({"X-Integration-Id": "w:1"}))
    else:
        event = event_adapter.validate_python(make_event("opened", target("comeet", "e")))
        call = comeet_client(http, base).send(comeet.map_event(event))
    try:
        with pytest.raises(DeliveryError) as info:
            await call
        assert isinstance(info.value, RetryableDeliveryError)
        assert info.value.may_have_arrived
    finally:
        server.close()
        await server.wait_closed()
