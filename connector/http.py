"""The one shared ``httpx.AsyncClient`` per worker.

The httpx API stays (the Kombo SDK and our clients speak it), but the default
transport is aiohttp's connection pool through ``httpx-aiohttp``: httpx's own
pool is CPU-bound at high concurrency on this class of machine (see
BENCHMARKS.md). ``CONNECTOR_DELIVERY__TRANSPORT=httpx`` switches back.
"""

from __future__ import annotations

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from connector.settings import DeliverySettings

__all__ = ["build_http_client"]


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

    transport = AiohttpTransport(limits=limits, client=session)
    return httpx.AsyncClient(
        transport=transport, timeout=timeout, limits=limits, follow_redirects=False
    )
