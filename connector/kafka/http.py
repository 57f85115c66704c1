"""The one shared ``httpx.AsyncClient`` per worker.

The httpx API stays (the Kombo SDK and our clients speak it), but the default
transport is aiohttp's connection pool through ``httpx-aiohttp``: httpx's own
pool is CPU-bound at high concurrency on this class of machine (see
BENCHMARKS.md). ``CONNECTOR_DELIVERY__TRANSPORT=httpx`` switches back.

httpx builds and percent-encodes every URL; the aiohttp transport must send it as
is. Left to itself, aiohttp parses the URL again with yarl, which decodes ``%2E``
and then removes ``.``/``..`` segments: an order id ``..`` in
``/assessment/orders/%2E%2E/result`` would reach ``/assessment/result``.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions
from yarl import URL

from connector.settings import DeliverySettings

__all__ = ["build_http_client", "send_through_transport"]


class _VerbatimUrls:
    """The part of ``aiohttp.ClientSession`` the transport uses, sending URLs verbatim."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        # httpx's str(url) is fully encoded (ASCII, IDNA host): nothing to requote.
        return self.session.request(method, URL(url, encoded=True), **kwargs)

    async def close(self) -> None:
        await self.session.close()


class _Transport(AiohttpTransport):
    """``AiohttpTransport`` whose session is :class:`_VerbatimUrls`, answers read whole.

    The transport creates its session on first use through :meth:`get_client`.
    Vendor answers are small JSON documents that the clients read whole anyway, so the
    body is read here, in one step, instead of through httpx's async byte stream over
    aiohttp's chunk iterator; and one ``ClientTimeout`` serves every call with the same
    timeouts. (Both showed in the worker's profile, BENCHMARKS.md.)
    """

    def __init__(self, limits: httpx.Limits, session: Any) -> None:
        super().__init__(limits=limits)
        self._new_session = session
        self._verbatim: _VerbatimUrls | None = None
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}

    def get_client(self) -> Any:
        if self._verbatim is None:
            self._verbatim = _VerbatimUrls(self._new_session())
        return self._verbatim

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        given = request.extensions.get("timeout", {})
        key = (given.get("connect"), given.get("read"), given.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            # As httpx-aiohttp maps them; at most a few distinct triples per worker.
            timeout = aiohttp.ClientTimeout(sock_connect=key[0], sock_read=key[1], connect=key[2])
            self._timeouts[key] = timeout
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self.get_client()
        try:
            data = request.content or None
        except httpx.RequestNotRead:  # a streamed body (never built by the connector)
            return await super().handle_async_request(request)
        # httpx-aiohttp's own mapping of aiohttp's errors to httpx's, reading included.
        with map_aiohttp_exceptions():
            response = await session.request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=data,
                allow_redirects=False,
                auto_decompress=False,  # httpx decodes, as with the stream
                compress=False,
                timeout=self._timeout(request),
                server_hostname=request.extensions.get("sni_hostname"),
            )
            try:
                body = await response.read()
            finally:
                response.release()
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            # A stream, not content=: httpx then adds no Content-Length of its own, and
            # AsyncClient.send (``connector check``) still times the response.
            stream=httpx.ByteStream(body),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._verbatim is not None:
            await self._verbatim.close()


def build_http_client(settings: DeliverySettings) -> httpx.AsyncClient:
    timeout = httpx.Timeout(
        connect=settings.connect_timeout_s,
        read=settings.read_timeout_s,
        write=settings.read_timeout_s,
        pool=settings.read_timeout_s,
    )
    limits = httpx.Limits(
        max_connections=settings.pool_connections,
        max_keepalive_connections=settings.pool_connections,
        keepalive_expiry=30.0,
    )
    if settings.transport == "httpx":
        return httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False)

    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=settings.pool_connections, keepalive_timeout=30.0, ttl_dns_cache=300
        )
        return aiohttp.ClientSession(connector=connector)

    transport = _Transport(limits, session)
    return httpx.AsyncClient(
        transport=transport, timeout=timeout, limits=limits, follow_redirects=False
    )


async def send_through_transport(http: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """The request through the client's transport, its body read.

    What ``AsyncClient.send`` adds on the way -- auth flows, redirect handling, the
    cookie jar, event hooks -- the connector uses none of (no auth object, redirects
    are not followed, vendors set no cookies we should send back), and it cost ~95 µs
    of CPU per call, as much as the aiohttp pool under it (BENCHMARKS.md). The
    client still chooses the transport (httpx's ``_transport_for_url``: mounts and
    proxies) and supplies its default headers and timeouts.
    """
    transport = http._transport_for_url(request.url)
    response = await transport.handle_async_request(request)
    try:
        await response.aread()
    finally:
        await response.aclose()
    return response
