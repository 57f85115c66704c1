"""Fixtures: both sandbox servers on real sockets in the test's loop, and httpx clients."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from connector.sandbox import Sandboxes

KOMBO_KEY = "sbx-kombo-key-7f3a9c51"
COMEET_TOKEN = "sbx-comeet-token-2b8e41d0"
INTEGRATION = "workday:HWUTwvyx2wLoSUHphiWVrp28"
KOMBO_HEADERS = {"Authorization": f"Bearer {KOMBO_KEY}", "X-Integration-Id": INTEGRATION}
COMEET_HEADERS = {"Authorization": f"Bearer {COMEET_TOKEN}"}
KOMBO_ERROR_FIELDS = {"code", "title", "message", "log_url"}
# One TLS context for every client: httpx would load the CA bundle per client (~40 ms),
# which dominated these tests although they only speak plain HTTP.
TLS = ssl.create_default_context()


def client(base_url: str = "", **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, verify=TLS, timeout=10, **kwargs)


@pytest.fixture
async def sandboxes() -> AsyncIterator[Sandboxes]:
    async with Sandboxes(kombo_key=KOMBO_KEY, comeet_token=COMEET_TOKEN, seed=1) as sb:
        yield sb


@pytest.fixture
async def kombo(sandboxes: Sandboxes) -> AsyncIterator[httpx.AsyncClient]:
    """A client on the Kombo base URL, authenticated, for integration ``INTEGRATION``."""
    async with client(sandboxes.kombo_url, headers=KOMBO_HEADERS) as kombo_client:
        yield kombo_client


@pytest.fixture
async def comeet(sandboxes: Sandboxes) -> AsyncIterator[httpx.AsyncClient]:
    """A client on the Comeet base URL, authenticated."""
    async with client(sandboxes.comeet_url, headers=COMEET_HEADERS) as comeet_client:
        yield comeet_client


def kombo_error(response: httpx.Response, status: int, code: str | None) -> str:
    """Assert the Kombo error shape, status and code exactly; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"status", "error"}
    assert body["status"] == "error"
    assert set(body["error"]) == KOMBO_ERROR_FIELDS
    assert body["error"]["code"] == code
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    return message


def comeet_error(response: httpx.Response, status: int) -> str:
    """Assert the Comeet error shape and status exactly; returns the message."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"status", "message"}
    assert body["status"] == status
    assert isinstance(body["message"], str) and body["message"]
    return body["message"]
