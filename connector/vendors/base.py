"""The small interface every vendor module implements, and what they share.

A vendor module provides:

* pydantic request models that carry every limit of the vendor's contract;
* ``map_event(event) -> VendorRequest``: a pure function (raises
  :class:`~connector.errors.MappingError` when the event breaks a limit);
* a client with ``async send(request) -> CallResult`` that raises only
  :class:`~connector.errors.DeliveryError` subclasses.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import aiohttp
import httpx
import orjson
from pydantic import BaseModel, ValidationError

from connector.errors import (
    DeliveryError,
    MappingError,
    PermanentDeliveryError,
    RateLimitedError,
    RetryableDeliveryError,
)
from connector.infra.tracing import outgoing_headers
from connector.kafka.http import send_through_transport

__all__ = [
    "RETRYABLE_HTTP_STATUSES",
    "CallResult",
    "VendorClient",
    "VendorRequest",
    "build_model",
    "check_headers",
    "error_for_status",
    "parse_retry_after",
    "path_segment",
    "send_http",
    "transport_error",
]

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

RETRYABLE_HTTP_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class VendorRequest:
    """One outbound call, ready to send. ``body`` is JSON-ready."""

    vendor: str  # "kombo" | "comeet"
    action: str  # e.g. "kombo.order_result"
    method: str
    path: str
    body: dict[str, Any]
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    # Who a rate limit or an outage applies to: a Kombo integration, or Comeet.
    limit_key: str = ""


@dataclass(frozen=True, slots=True)
class CallResult:
    http_status: int
    warnings: tuple[str, ...] = ()


class VendorClient(Protocol):
    vendor: str

    async def send(self, request: VendorRequest) -> CallResult: ...


def build_model(model: type[M], vendor: str, **data: Any) -> M:
    """Validate a vendor request body; contract violations become a MappingError."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors(include_url=False)[:5]
        )
        raise MappingError(f"{vendor} contract: {details}") from None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def error_for_status(
    response: httpx.Response, message: str, *, vendor_code: str | None = None
) -> DeliveryError:
    """The connector error for an HTTP failure that no vendor code explains better."""
    status = response.status_code
    if status == 429:
        return RateLimitedError(
            message,
            http_status=status,
            vendor_code=vendor_code,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    if status in RETRYABLE_HTTP_STATUSES:
        return RetryableDeliveryError(message, http_status=status, vendor_code=vendor_code)
    return PermanentDeliveryError(message, http_status=status, vendor_code=vendor_code)


def path_segment(value: str) -> str:
    """``value`` as one URL path segment, every reserved character percent-encoded.

    ``/`` becomes ``%2F``, ``%`` ``%25``, ``?`` ``%3F``, ``#`` ``%23``, non-ASCII its
    UTF-8 bytes. A segment that is exactly ``.`` or ``..`` is encoded as ``%2E``/``%2E%2E``:
    left as is, clients and servers remove it as a dot segment (RFC 3986, 5.2.4) and the
    request reaches another resource.
    """
    if value in (".", ".."):
        return "%2E" * len(value)
    return quote(value, safe="")


# RFC 9110: a field name is a token; a value is visible ASCII, spaces and tabs. httpx
# encodes values as ASCII, and CR, LF or NUL would end or split the header.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")


def check_headers(headers: Mapping[str, str]) -> None:
    """Refuse a header HTTP cannot carry, naming the header but never its value."""
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise PermanentDeliveryError(
                f"header name {name[:64]!r} is not an HTTP token; the request was not sent",
                may_have_arrived=False,
            )
        if not _HEADER_VALUE.fullmatch(value):
            raise PermanentDeliveryError(
                f"header {name} holds a character HTTP cannot carry (only visible ASCII, "
                "spaces and tabs); the request was not sent",
                may_have_arrived=False,
            )


def transport_error(exc: httpx.HTTPError) -> DeliveryError:
    """The connector error for an httpx error.

    A request that cannot be sent as built (a scheme httpx does not speak, a header or
    URL h11 refuses) is permanent, and never reached the vendor. Timeouts, connection
    failures and broken answers are retryable.
    """
    name = type(exc).__name__
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
        return PermanentDeliveryError(
            f"request cannot be sent: {name}: {str(exc)[:200]}", may_have_arrived=False
        )
    if isinstance(exc, httpx.HTTPStatusError):
        return error_for_status(exc.response, f"HTTP {exc.response.status_code}")
    if isinstance(exc, httpx.TooManyRedirects):
        return PermanentDeliveryError(f"too many redirects: {name}")
    kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "transport error"
    return RetryableDeliveryError(f"{kind}: {name}", may_have_arrived=not _never_sent(exc))


def _never_sent(exc: httpx.HTTPError) -> bool:
    """A connection that never opened carried no request; anything later may have."""
    if not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return False
    # httpx-aiohttp reports every aiohttp.ClientConnectionError as ConnectTimeout, a
    # connection the server dropped after reading the request included.
    cause = exc.__cause__
    return not isinstance(cause, aiohttp.ClientConnectionError) or isinstance(
        cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError
    )


_JSON = {"Content-Type": "application/json"}


async def send_http(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    body: dict[str, Any],
    params: Mapping[str, str] | None = None,
) -> httpx.Response:
    """One HTTP call. Raises only :class:`~connector.errors.DeliveryError` subclasses.

    Anything else escaping a client's ``send`` would end the delivery job without an
    outcome, so every failure is translated here, at the boundary (``raise ... from``).
    """
    check_headers(headers)
    trace = outgoing_headers()  # the event's W3C trace context (validated when read)
    # The body pre-encoded (orjson: compact UTF-8, like httpx's own json=, at a tenth of
    # the cost).
    headers = {**headers, **trace, **_JSON} if trace is not None else {**headers, **_JSON}
    try:
        request = httpx.Request(
            method,
            url,
            params=params,
            content=orjson.dumps(body),
            headers=_merged(http.headers, headers),
            extensions={"timeout": http.timeout.as_dict()},
        )
        return await send_through_transport(http, request)
    except httpx.HTTPError as exc:
        raise transport_error(exc) from exc
    except httpx.InvalidURL as exc:  # not an httpx.HTTPError
        raise PermanentDeliveryError(
            f"invalid URL: {str(exc)[:200]}", may_have_arrived=False
        ) from exc
    except aiohttp.ClientError as exc:  # the aiohttp transport lets some through
        raise RetryableDeliveryError(f"transport error: {type(exc).__name__}") from exc
    except Exception as exc:
        # E.g. a port out of range: the request cannot be built, and a retry would build
        # the same one. Only a building error is known never to have left.
        logger.exception("%s %s could not be sent", method, url.split("?", 1)[0][:200])
        raise PermanentDeliveryError(
            f"request cannot be sent: {type(exc).__name__}",
            may_have_arrived=not _building_error(exc),
        ) from exc


def _merged(defaults: httpx.Headers, headers: Mapping[str, str]) -> httpx.Headers:
    """The client's default headers, overridden by the request's (names case-insensitive)."""
    merged = httpx.Headers(defaults)
    merged.update(headers)
    return merged


def _building_error(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):  # httpx's transport raises e.g. an OverflowError
        return all(_building_error(inner) for inner in exc.exceptions)  # in a task group
    return isinstance(exc, ValueError | TypeError | OverflowError)
