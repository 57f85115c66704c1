"""The sandbox side of a run: one sandbox process per run, its request counts and log.

Each run gets a fresh sandbox process (:class:`connector.sandbox.SandboxProcess`),
so vendor state (a completed order refuses to reopen) and the request log never
leak from one run into the next. The benchmark reads it through the control API:
``next`` (how many requests were recorded so far) while the run goes, the whole
log once it is over.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import httpx

from bench.processes import REGISTRY
from connector.sandbox import SandboxProcess

__all__ = ["COMEET_TOKEN", "KOMBO_KEY", "RunSandbox"]

KOMBO_KEY = "kombo-bench-key-0001"
COMEET_TOKEN = "comeet-bench-token-0002"
_PAGE = 5000


def _root(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class RunSandbox:
    """Both vendor sandboxes in one child process, plus counters over their logs."""

    def __init__(self, latency_ms: float, log_path: Path, max_recorded: int = 1_000_000) -> None:
        self._log = log_path.open("ab")
        self.process = SandboxProcess(
            kombo_key=KOMBO_KEY,
            comeet_token=COMEET_TOKEN,
            latency_ms=latency_ms,
            max_recorded=max_recorded,
            stderr=self._log.fileno(),
        )
        self._client = httpx.AsyncClient(timeout=30.0)

    @property
    def kombo_url(self) -> str:
        return self.process.kombo_url

    @property
    def comeet_url(self) -> str:
        return self.process.comeet_url

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def _roots(self) -> list[str]:
        return [_root(self.kombo_url), _root(self.comeet_url)]

    async def count(self) -> int:
        """Requests recorded so far by both vendors (answered or not)."""
        totals = await asyncio.gather(*(self._next(root) for root in self._roots()))
        return sum(totals)

    async def _next(self, root: str) -> int:
        # since= past the end selects nothing: only the counter travels.
        response = await self._client.get(
            f"{root}/_sandbox/requests", params={"since": 1 << 62, "limit": 0}
        )
        response.raise_for_status()
        return int(response.json()["next"])

    async def recorded(self) -> list[dict[str, Any]]:
        """Every recorded request of both vendors."""
        entries: list[dict[str, Any]] = []
        for root in self._roots():
            since = 0
            while True:
                response = await self._client.get(
                    f"{root}/_sandbox/requests", params={"since": since, "limit": _PAGE}
                )
                response.raise_for_status()
                page = response.json()["requests"]
                entries.extend(page)
                if len(page) < _PAGE:
                    break
                since = page[-1]["index"] + 1
        return entries

    def _kill(self) -> None:
        self.process.stop(timeout_s=5.0)

    async def __aenter__(self) -> Self:
        await self.process.astart()
        REGISTRY.add(id(self), self._kill)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._client.aclose()
            await self.process.astop()
        finally:
            REGISTRY.discard(id(self))
            self._log.close()
