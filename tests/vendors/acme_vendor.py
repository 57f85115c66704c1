"""A third vendor, "Acme", that exists only in the tests: one module, one registry entry.

Importing it registers it (as a vendor module under connector/vendors/ would be
registered by ``connector.vendors``); nothing else in the connector names it. Acme takes
``POST /candidates/{candidate_id}/result`` with a small JSON body; its base URL comes
from ``ACME_BASE_URL`` (a test's own server; a real vendor would have a settings section).
"""

from __future__ import annotations

import os
from typing import Literal, assert_never

import httpx

from connector.domain.events import (
    Event,
    OrderCancelled,
    OrderCompleted,
    OrderOpened,
    OrderProgress,
    PackagesSet,
    Target,
)
from connector.errors import MappingError
from connector.settings import Settings
from connector.vendors.base import (
    CallResult,
    VendorRequest,
    error_for_status,
    path_segment,
    send_http,
)
from connector.vendors.registry import KeyForm, Vendor, register


class AcmeTarget(Target):
    vendor: Literal["acme"]
    candidate_id: str

    @property
    def key(self) -> str:
        return f"acme|{self.candidate_id}"


def map_event(event: Event) -> VendorRequest:
    target = event.target
    if not isinstance(target, AcmeTarget):
        raise MappingError(f"event targets {target.vendor}, not acme")
    match event:
        case OrderOpened() | OrderProgress():
            body = {"state": "open"}
        case OrderCompleted():
            body = {"state": "done", "outcome": event.outcome.value}
        case OrderCancelled():
            body = {"state": "cancelled", "reason": event.reason}
        case PackagesSet():
            raise MappingError("acme takes no package lists")
        case _:
            assert_never(event)
    return VendorRequest(
        vendor="acme",
        action="acme.result",
        method="POST",
        path=f"/candidates/{path_segment(target.candidate_id)}/result",
        body=body,
        limit_key="acme",
    )


class AcmeClient:
    vendor = "acme"

    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")

    async def send(self, request: VendorRequest) -> CallResult:
        response = await send_http(
            self._http,
            request.method,
            self._base_url + request.path,
            headers={"Authorization": "Bearer acme-test-token"},
            body=request.body,
        )
        if response.status_code in (200, 204):
            return CallResult(http_status=response.status_code)
        raise error_for_status(response, f"HTTP {response.status_code}")


def _client(http: httpx.AsyncClient, settings: Settings) -> AcmeClient:
    return AcmeClient(http, os.environ.get("ACME_BASE_URL", "http://127.0.0.1:9"))


VENDOR = register(
    Vendor(
        name="acme",
        map_event=map_event,
        client=_client,
        keys=(KeyForm("acme", ("candidate_id",), limit="acme"),),
        target_noun="Acme",
        order_target=AcmeTarget,
        secrets=lambda settings: ["acme-test-token"],
    )
)
