"""The adapter's HTTP edge: aiohttp's pool under the httpx API, URLs sent verbatim."""

from __future__ import annotations

from typing import Any

import httpx
from yarl import URL

from connector.kafka.http import _VerbatimUrls

URL_WITH_DOTS = "http://vendor.example/assessment/orders/%2E%2E/result"


def test_aiohttp_left_to_itself_removes_an_encoded_dot_segment() -> None:
    # The defect the adapter works around: aiohttp parses the URL again with yarl, which
    # decodes %2E and then removes the '..' segment -- an order id '..' would reach
    # /assessment/result.
    assert URL(URL_WITH_DOTS).raw_path == "/assessment/result"


def test_the_adapter_sends_httpx_s_encoded_url_verbatim() -> None:
    sent: list[Any] = []

    class Session:
        def request(self, method: str, url: Any, **kwargs: Any) -> None:
            sent.append(url)

    _VerbatimUrls(Session()).request("PUT", str(httpx.URL(URL_WITH_DOTS)))  # type: ignore[arg-type]
    [url] = sent
    assert url.raw_path == "/assessment/orders/%2E%2E/result"
