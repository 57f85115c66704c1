"""The vendor-neutral event contract that producers publish to the events topic.

Every event carries a unique ``event_id``, the time it happened
(``occurred_at``, timezone-aware) and its ``target``: a Kombo assessment order
(integration id + order id), a Comeet evaluation, or, for ``packages.set``, a
Kombo integration. The Kafka record key must be the target's :func:`order_key`,
so that one order's events share a partition and keep their order.

A record whose key does not match its target is rejected (dead-lettered), not
re-keyed: a mismatch means a producer bug, and once an order's events are split
across two partitions no consumer can restore their order.

Parsing is total: :func:`parse_record` returns an event or raises
:class:`~connector.errors.InvalidEventError` with a specific reason; it raises
nothing else for any input bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from connector.errors import InvalidEventError

__all__ = [
    "MAX_ATTACHMENTS",
    "MAX_JSON_DEPTH",
    "Attachment",
    "ComeetTarget",
    "Event",
    "EventType",
    "KomboIntegrationTarget",
    "KomboTarget",
    "OrderCancelled",
    "OrderCompleted",
    "OrderOpened",
    "OrderProgress",
    "Outcome",
    "Package",
    "PackageType",
    "PackagesSet",
    "Score",
    "SubResult",
    "TextAttribute",
    "event_adapter",
    "order_key",
    "parse_record",
]

MAX_ATTACHMENTS = 5  # Kombo: attachments maxItems 5
MAX_JSON_DEPTH = 32  # deeper input is hostile or broken; refuse before pydantic sees it
GENERIC_CONTENT_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})
CONTENT_TYPE_PATTERN = r"^[\w.-]+\/[\w.-]+$"  # Kombo's pattern, verbatim

# Identifiers are path segments and key parts: no separators, no whitespace.
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\s/|]+$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=10_000)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class EventType(StrEnum):
    OPENED = "order.opened"
    PROGRESS = "order.progress"
    COMPLETED = "order.completed"
    CANCELLED = "order.cancelled"
    PACKAGES_SET = "packages.set"


class Outcome(StrEnum):
    PASSED = "passed"
    REVIEW = "review"
    FAILED = "failed"


class KomboTarget(_Model):
    vendor: Literal["kombo"]
    integration_id: Identifier
    assessment_order_id: Identifier


class ComeetTarget(_Model):
    vendor: Literal["comeet"]
    evaluation_id: Identifier


class KomboIntegrationTarget(_Model):
    vendor: Literal["kombo"]
    integration_id: Identifier


OrderTarget = Annotated[KomboTarget | ComeetTarget, Field(discriminator="vendor")]


class Score(_Model):
    """A score on the vendor's own scale ``0..max``."""

    value: FiniteFloat = Field(ge=0)
    max: FiniteFloat = Field(gt=0)

    @model_validator(mode="after")
    def _within_scale(self) -> Score:
        if self.value > self.max:
            raise ValueError(f"score value {self.value} is above its max {self.max}")
        return self


class SubResult(_Model):
    """One sub-test or criterion: a Kombo SUB_RESULT attribute, a Comeet criterion."""

    id: Identifier
    label: Text
    score: Score | None = None
    status: Literal["completed", "cancelled"] = "completed"
    notes: str | None = Field(default=None, max_length=10_000)
    group: str | None = Field(default=None, max_length=10_000)


class TextAttribute(_Model):
    label: Text
    value: Text


class Attachment(_Model):
    """A file, inline (base64 ``data``) or by ``data_url``: exactly one of them."""

    name: Text
    content_type: str | None = Field(default=None, pattern=CONTENT_TYPE_PATTERN)
    data: str | None = None
    data_url: HttpUrl | None = None

    @field_validator("content_type")
    @classmethod
    def _meaningful_content_type(cls, value: str | None) -> str | None:
        if value is not None and value.lower() in GENERIC_CONTENT_TYPES:
            raise ValueError(f"content type {value!r} is generic; give the file's real type")
        return value

    @field_validator("data")
    @classmethod
    def _valid_base64(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError("data is not valid base64") from exc
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Attachment:
        if (self.data is None) == (self.data_url is None):
            raise ValueError("give exactly one of data (base64) or data_url")
        if self.data is not None and self.content_type is None:
            raise ValueError("content_type is required with inline data")
        return self


class PackageType(StrEnum):
    BEHAVIORAL = "BEHAVIORAL"
    VIDEO_INTERVIEW = "VIDEO_INTERVIEW"
    SKILLS_TEST = "SKILLS_TEST"
    BACKGROUND_CHECK = "BACKGROUND_CHECK"
    REFERENCE_CHECK = "REFERENCE_CHECK"


class Package(_Model):
    id: Identifier
    type: PackageType
    name: Text
    description: Text


class _EventBase(_Model):
    event_id: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^\S+$")]
    occurred_at: AwareDatetime

    @property
    def key(self) -> str:
        return order_key(self.target)  # type: ignore[attr-defined]


class OrderOpened(_EventBase):
    type: Literal[EventType.OPENED]
    target: OrderTarget
    result_url: HttpUrl | None = None


class OrderProgress(_EventBase):
    """An interim status, e.g. "Test started"."""

    type: Literal[EventType.PROGRESS]
    target: OrderTarget
    status_text: Text
    result_url: HttpUrl | None = None


class OrderCompleted(_EventBase):
    type: Literal[EventType.COMPLETED]
    target: OrderTarget
    outcome: Outcome
    completed_at: AwareDatetime
    result_url: HttpUrl
    # Comeet distinguishes a link for its users from a tokenised public one.
    public_result_url: HttpUrl | None = None
    score: Score | None = None
    summary: str | None = Field(default=None, max_length=100_000)
    sub_results: list[SubResult] = Field(default_factory=list, max_length=200)
    attributes: list[TextAttribute] = Field(default_factory=list, max_length=200)
    attachments: list[Attachment] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    # Passed to Kombo's ``remote_fields`` untouched (validated against its schema on mapping).
    kombo_remote_fields: dict[str, Any] | None = None


class OrderCancelled(_EventBase):
    """The order ended without a result: cancelled by someone, or expired."""

    type: Literal[EventType.CANCELLED]
    target: OrderTarget
    kind: Literal["cancelled", "expired"]
    reason: Text
    cancelled_at: AwareDatetime | None = None
    result_url: HttpUrl | None = None

    @property
    def ended_at(self) -> datetime:
        return self.cancelled_at or self.occurred_at


class PackagesSet(_EventBase):
    """The full package list of one Kombo integration (replaces the previous one)."""

    type: Literal[EventType.PACKAGES_SET]
    target: KomboIntegrationTarget
    packages: list[Package] = Field(max_length=1000)


Event = Annotated[
    OrderOpened | OrderProgress | OrderCompleted | OrderCancelled | PackagesSet,
    Field(discriminator="type"),
]
event_adapter: TypeAdapter[Event] = TypeAdapter(Event)


_EVENT_TYPES = frozenset(EventType)


def order_key(target: KomboTarget | ComeetTarget | KomboIntegrationTarget) -> str:
    """The Kafka key (and table key) of a target. Identifiers contain no ``/`` or ``|``."""
    if isinstance(target, KomboTarget):
        return f"kombo|{target.integration_id}|{target.assessment_order_id}"
    if isinstance(target, ComeetTarget):
        return f"comeet|{target.evaluation_id}"
    return f"kombo-packages|{target.integration_id}"


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _depth(value: Any, limit: int) -> int:
    """Nesting depth, iteratively, so hostile input cannot blow the stack."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return depth
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return deepest


def _format_validation_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(part) for part in error["loc"]) or "event"
        msg = error["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def parse_record(key: bytes | None, value: bytes | None, *, max_bytes: int) -> Event:
    """Decode, validate and key-check one Kafka record. Raises only InvalidEventError."""
    if value is None:
        raise InvalidEventError("record has no value (tombstone)", code="empty")
    if len(value) > max_bytes:
        raise InvalidEventError(
            f"record value is {len(value)} bytes, above the {max_bytes}-byte limit",
            code="too_large",
        )
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEventError(
            f"value is not valid UTF-8: {exc.reason} at byte {exc.start}", code="not_utf8"
        ) from None
    try:
        raw = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidEventError(
            f"JSON nested deeper than {MAX_JSON_DEPTH} levels", code="too_deep"
        ) from None
    except ValueError as exc:
        raise InvalidEventError(f"value is not valid JSON: {exc}", code="not_json") from None
    if _depth(raw, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise InvalidEventError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", code="too_deep")
    if not isinstance(raw, dict):
        raise InvalidEventError(
            f"event must be a JSON object, got {type(raw).__name__}", code="not_object"
        )
    event_type = raw.get("type")
    if not isinstance(event_type, str) or event_type not in _EVENT_TYPES:
        raise InvalidEventError(
            f"unknown event type {str(raw.get('type'))[:64]!r}; expected one of "
            + ", ".join(EventType),
            code="unknown_type",
        )
    try:
        event = event_adapter.validate_python(raw)
    except ValidationError as exc:
        raise InvalidEventError(_format_validation_error(exc), code="schema") from None
    expected = event.key
    if key is None:
        raise InvalidEventError(f"record has no key; expected {expected!r}", code="key_missing")
    if key != expected.encode():
        shown = key[:128].decode("utf-8", "replace")
        raise InvalidEventError(
            f"record key {shown!r} does not match the event's target {expected!r}",
            code="key_mismatch",
        )
    return event
