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
from yarl import URL

from connector.settings import DeliverySettings

__all__ = ["build_http_client"]


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
    """``AiohttpTransport`` whose session is :class:`_VerbatimUrls`.

    The transport creates its session on first use through :meth:`get_client` and
    calls only ``request`` on it.
    """

    def __init__(self, limits: httpx.Limits, session: Any) -> None:
        super().__init__(limits=limits)
        self._new_session = session
        self._verbatim: _VerbatimUrls | None = None

    def get_client(self) -> Any:
        if self._verbatim is None:
            self._verbatim = _VerbatimUrls(self._new_session())
        return self._verbatim

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
