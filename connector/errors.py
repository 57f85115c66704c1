"""The connector's exceptions. Retryable versus permanent is a type, never a string.

::

    ConnectorError
    ├── InvalidEventError          the input cannot be processed as is: dead-letter it
    │   ├── MappingError           valid event, but it breaks a vendor contract limit
    │   └── UnknownVendorError     its target names a vendor no module registered
    └── DeliveryError              an outbound call did not succeed
        ├── RetryableDeliveryError   transport error, timeout, 408/429/5xx, transient vendor code
        │   └── RateLimitedError     429 or a vendor rate-limit code; may carry Retry-After
        └── PermanentDeliveryError   the vendor refused the request: retrying cannot help
    RevokedError                   the partition moved away: the job stops, unacknowledged
    SinkError                      Kafka did not take a record: retried, never acknowledged
    ConfigurationError             the deployment is unsafe to run as configured: refuse to start
    └── IncompatibleLibraryError   a library version or internal the Kafka adapter needs differs

Vendor clients translate httpx and SDK exceptions into this hierarchy at their
boundary (``raise ... from exc``); nothing above the vendor modules looks at
httpx or vendor error types.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "ConnectorError",
    "DeliveryError",
    "IncompatibleLibraryError",
    "InvalidEventError",
    "MappingError",
    "PermanentDeliveryError",
    "RateLimitedError",
    "RetryableDeliveryError",
    "RevokedError",
    "SinkError",
    "UnknownVendorError",
]


class ConnectorError(Exception):
    """Root of every error the connector raises on purpose."""


class InvalidEventError(ConnectorError):
    """An input record that cannot be processed; ``reason`` is short and specific."""

    def __init__(self, reason: str, *, code: str = "invalid_event") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class MappingError(InvalidEventError):
    """The event is well formed but its content breaks a vendor's contract."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, code="contract_violation")


class UnknownVendorError(InvalidEventError):
    """The event's target names a vendor that no module registered
    (:mod:`connector.vendors.registry`): permanent, dead-lettered, never sent elsewhere."""

    def __init__(self, vendor: str) -> None:
        super().__init__(
            f"no vendor module is registered for {vendor[:64]!r}", code="unknown_vendor"
        )
        self.vendor = vendor


# Answers after which the request may still have been applied: a gateway or the
# platform timed out or failed behind the API, which may have done the work.
AMBIGUOUS_HTTP_STATUSES = frozenset({500, 502, 504})


class DeliveryError(ConnectorError):
    """An outbound call failed. Carries what the audit record needs.

    ``may_have_arrived`` says whether the vendor may have applied the request
    anyway: true for timeouts and dropped connections after the request was
    sent, and for 500/502/504; false when the vendor clearly refused it. The
    lifecycle guard keeps an ambiguous send as "possibly at the vendor".
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        vendor_code: str | None = None,
        may_have_arrived: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.vendor_code = vendor_code
        if may_have_arrived is None:
            may_have_arrived = http_status is None or http_status in AMBIGUOUS_HTTP_STATUSES
        self.may_have_arrived = may_have_arrived


class RetryableDeliveryError(DeliveryError):
    """Worth another attempt after a backoff."""


class RateLimitedError(RetryableDeliveryError):
    """The vendor asked us to slow down; ``retry_after`` is in seconds when it said so."""

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        vendor_code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        # Asked to slow down: the vendor did not apply the request.
        super().__init__(
            message, http_status=http_status, vendor_code=vendor_code, may_have_arrived=False
        )
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """The vendor refused the request; the event goes to the dead-letter topic."""


class RevokedError(ConnectorError):
    """The job's partition was revoked: it must not send, write state, audit or acknowledge."""


class SinkError(ConnectorError):
    """Kafka did not take an audit, dead-letter or state record; the step is retried."""


class ConfigurationError(ConnectorError):
    """The deployment disagrees with itself (e.g. topics' partition counts): do not run.

    Raised before a worker joins its group, so that nothing is processed under a
    configuration that would break per-order ordering or the order table. The message
    names what disagrees and how to fix it; the CLI prints it and exits with code 2.
    """


class IncompatibleLibraryError(ConfigurationError):
    """A library the Kafka adapter relies on is another version, or lacks an internal it
    uses (:mod:`connector.kafka.compat`): the worker refuses to start."""
