"""Sandbox Kombo and Comeet servers for the demo, the tests and the benchmark.

In process::

    async with Sandboxes(kombo_key="k", comeet_token="t") as sb:
        sb.kombo_url   # http://127.0.0.1:P/v1   (Kombo client base URL)
        sb.comeet_url  # http://127.0.0.1:Q      (Comeet client base URL)
        sb.kombo.faults.add_error(503, target="integration-1", count=3)
        sb.kombo.order("integration-1", "order-1")
        sb.comeet.recorded(key="evaluation-1")

As a process: ``python -m connector.sandbox --kombo-port 0 --comeet-port 0
--kombo-key KEY --comeet-token TOKEN`` prints one JSON line with both URLs;
:class:`SandboxProcess` wraps that, :class:`SandboxControl` steers a running server.

Modules: :mod:`.kombo` and :mod:`.comeet` (the vendor contracts, their readings in
the module docstrings), :mod:`.faults` (fault injection), :mod:`.server` (shared
server machinery, control API, subprocess runner and control clients).
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Self

from connector.sandbox.comeet import ComeetSandbox, EvaluationState
from connector.sandbox.faults import Fault, FaultInjector, FaultSpec
from connector.sandbox.kombo import KomboSandbox, OrderState, PackageState, order_key
from connector.sandbox.server import (
    DROPPED,
    REDACTED,
    AsyncSandboxControl,
    RequestLog,
    SandboxControl,
    SandboxProcess,
    SandboxUrls,
)

__all__ = [
    "DROPPED",
    "REDACTED",
    "AsyncSandboxControl",
    "ComeetSandbox",
    "EvaluationState",
    "Fault",
    "FaultInjector",
    "FaultSpec",
    "KomboSandbox",
    "OrderState",
    "PackageState",
    "RequestLog",
    "SandboxControl",
    "SandboxProcess",
    "SandboxUrls",
    "Sandboxes",
    "order_key",
]

logger = logging.getLogger(__name__)


class Sandboxes:
    """Both sandbox servers in the current event loop."""

    def __init__(
        self,
        *,
        kombo_key: str,
        comeet_token: str,
        host: str = "127.0.0.1",
        kombo_port: int = 0,
        comeet_port: int = 0,
        latency_ms: float = 0.0,
        max_recorded: int = 1_000_000,
        seed: int | None = None,
    ) -> None:
        self._host = host
        self._kombo_port = kombo_port
        self._comeet_port = comeet_port
        self.kombo = KomboSandbox(
            api_key=kombo_key, latency_ms=latency_ms, max_recorded=max_recorded, seed=seed
        )
        self.comeet = ComeetSandbox(
            token=comeet_token, latency_ms=latency_ms, max_recorded=max_recorded, seed=seed
        )

    @property
    def kombo_url(self) -> str:
        return self.kombo.url

    @property
    def comeet_url(self) -> str:
        return self.comeet.url

    @property
    def urls(self) -> SandboxUrls:
        return SandboxUrls(kombo_url=self.kombo_url, comeet_url=self.comeet_url)

    async def start(self) -> SandboxUrls:
        await self.kombo.start(self._host, self._kombo_port)
        try:
            await self.comeet.start(self._host, self._comeet_port)
        except BaseException:
            await self.kombo.stop()
            raise
        return self.urls

    async def stop(self) -> None:
        # Both, even if one fails: a half-stopped pair would leak a listening socket.
        results = await asyncio.gather(
            self.kombo.stop(), self.comeet.stop(), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def set_latency(self, ms: float) -> None:
        self.kombo.set_latency(ms)
        self.comeet.set_latency(ms)

    def reset(self) -> None:
        self.kombo.reset()
        self.comeet.reset()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
