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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from connector.errors import (
    MappingError,
    PermanentDeliveryError,
    RateLimitedError,
    RetryableDeliveryError,
)

__all__ = [
    "RETRYABLE_HTTP_STATUSES",
    "CallResult",
    "VendorClient",
    "VendorRequest",
    "build_model",
    "error_for_status",
    "parse_retry_after",
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
) -> Exception:
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


def transport_error(exc: httpx.HTTPError) -> RetryableDeliveryError:
    """Timeouts and connection failures: the request may or may not have arrived."""
    kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "transport error"
    # A connection that never opened carried no request; anything later may have.
    unsent = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    return RetryableDeliveryError(f"{kind}: {type(exc).__name__}", may_have_arrived=not unsent)
