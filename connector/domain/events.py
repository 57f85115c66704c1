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
import re
import sys
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    PrivateAttr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic.json_schema import WithJsonSchema

from connector.domain.published_schema import (
    BASE64_PATTERN,
    DATETIME_PATTERN,
    EVENT_ID_PATTERN,
    HTTP_URL_PATTERN,
    INTEGRATION_ID_PATTERN,
    JSON_VALUE_PLACEHOLDER,
    LEGACY_ID_PATTERN,
    ORDER_ID_PATTERN,
    Publish,
    PublishedSchemaGenerator,
    any_case,
    exact,
    json_object,
)
from connector.errors import InvalidEventError

__all__ = [
    "MAX_ATTACHMENTS",
    "MAX_JSON_DEPTH",
    "MAX_UNKNOWN_FIELDS_LISTED",
    "SCHEMA_MAJOR",
    "SCHEMA_VERSION",
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
    "Target",
    "TextAttribute",
    "event_adapter",
    "event_json_schema",
    "order_key",
    "order_key_of_record",
    "parse_record",
    "parse_value",
    "register_order_target",
    "schema_major",
    "unregister_order_target",
]

MAX_ATTACHMENTS = 5  # Kombo: attachments maxItems 5
# Schema evolution (README "Compatibility rules"): a minor version only adds optional
# fields, which this connector reads and ignores; a new major version may change what
# known fields mean, so an event of an unknown major is dead-lettered, never guessed at.
SCHEMA_MAJOR = 1
SCHEMA_VERSION = "1.1"  # 1.1 added schema_version itself and the unknown-field rule
# An event may carry any number of unknown fields; the audit record names only this many
# (each name clipped), so a hostile producer cannot inflate every audit record.
MAX_UNKNOWN_FIELDS_LISTED = 20
MAX_UNKNOWN_FIELD_NAME = 64
MAX_JSON_DEPTH = 32  # deeper input is hostile or broken; refuse before pydantic sees it
GENERIC_CONTENT_TYPES = frozenset({"application/octet-stream", "binary/octet-stream"})
CONTENT_TYPE_PATTERN = r"^[\w.-]+\/[\w.-]+$"  # Kombo's pattern, verbatim

MAX_ORDER_ID_LENGTH = 1024
MAX_INTEGRATION_ID_LENGTH = 256

# ASCII only (Kombo's pattern is JavaScript, where ``\w`` is [A-Za-z0-9_]), and not generic.
CONTENT_TYPE_SCHEMA_PATTERN = (
    "^(?!(?:"
    + "|".join(any_case(t) for t in sorted(GENERIC_CONTENT_TYPES))
    + ")$)"
    + exact(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+").removeprefix("^")
)
SCHEMA_DESCRIPTION = (
    "An event for the assessment results connector, schema version "
    f"{SCHEMA_VERSION}. Compatibility: fields this schema does not name are accepted "
    "(a producer may add optional fields before the connector is upgraded), ignored, "
    "never sent to a vendor, and listed in the event's audit records (`unknown_fields`). "
    f"`schema_version` is optional (missing means {SCHEMA_MAJOR}); an event whose major "
    f"version is not {SCHEMA_MAJOR} is dead-lettered with code `unsupported_version`, a "
    "malformed one as `schema`. Rules the connector enforces that "
    "JSON Schema (draft 2020-12) cannot express: a score's value must not exceed its max "
    "(dead letter `schema`); the Kafka record key must be the target's key "
    "(`kombo|<integration_id>|<assessment_order_id>`, `comeet|<evaluation_id>`, "
    "`kombo-packages|<integration_id>`; `key_mismatch`); JSON nesting at most 32 levels "
    "(`too_deep`); the record size limit (`too_large`); and URLs must parse as WHATWG "
    "URLs (valid international domain names, IPv4 and IPv6 literals) beyond the scheme, "
    "host, port and character rules published here (`schema`)."
)


# -- identifiers ------------------------------------------------------------------------------
#
# Order and evaluation ids are whatever the vendor's system chose: any non-empty text up
# to 1024 characters (``/``, ``|``, ``?``, ``#``, ``%``, spaces and non-ASCII included).
# The connector encodes them where they go: one percent-encoded path segment for Kombo,
# a query parameter for Comeet, the last part of the Kafka key. Only control characters
# (C0, DEL, C1) are refused: no ATS issues them, and they would reach logs, terminals
# and audit records as invisible or line-breaking characters (log injection), and many
# HTTP servers and proxies refuse or truncate them even when percent-encoded.
#
# A Kombo integration id is sent as the X-Integration-Id header and is the middle part
# of the Kafka key ``kombo|<integration_id>|<order_id>``: visible ASCII without ``|``,
# so every key splits unambiguously at its first two ``|``.

_CONTROL_OR_SURROGATE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_NOT_KEY_SAFE = re.compile("[^\x21-\x7b\x7d\x7e]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_PROBLEM = (
    "contains an unpaired UTF-16 surrogate (a \\ud800-\\udfff escape without its pair); "
    "text must be valid Unicode"
)


def _printable_id(value: str) -> str:
    bad = _CONTROL_OR_SURROGATE.search(value)
    if bad is not None:
        code = ord(bad.group())
        if 0xD800 <= code <= 0xDFFF:
            raise ValueError(_SURROGATE_PROBLEM)
        raise ValueError(
            f"contains the control character U+{code:04X} at position {bad.start()}; "
            "identifiers may hold any printable text, but no control characters"
        )
    return value


def _key_safe_id(value: str) -> str:
    bad = _NOT_KEY_SAFE.search(value)
    if bad is not None:
        raise ValueError(
            "must be visible ASCII (0x21-0x7E) without '|': it is sent as the "
            "X-Integration-Id header and is part of the Kafka key; found "
            f"U+{ord(bad.group()):04X} at position {bad.start()}"
        )
    return value


OrderId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ORDER_ID_LENGTH),
    AfterValidator(_printable_id),
    Publish(
        pattern=ORDER_ID_PATTERN,
        description="Any text but control characters (C0, DEL, C1); the connector encodes it.",
    ),
]
IntegrationId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_INTEGRATION_ID_LENGTH),
    AfterValidator(_key_safe_id),
    Publish(
        pattern=INTEGRATION_ID_PATTERN,
        description="Visible ASCII without '|': the X-Integration-Id header, part of the key.",
    ),
]
# Sub-result and package ids only travel inside JSON bodies; they keep their old rule.
Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256, pattern=r"^[^\s/|]+$"),
    Publish(pattern=LEGACY_ID_PATTERN),
]
Text = Annotated[str, StringConstraints(min_length=1, max_length=10_000)]
# JSON has no NaN or Infinity; a literal like 1e999 overflows to infinity and is refused.
FiniteFloat = Annotated[float, Field(allow_inf_nan=False), Publish(maximum=sys.float_info.max)]
Timestamp = Annotated[AwareDatetime, Publish(pattern=DATETIME_PATTERN)]
Url = Annotated[HttpUrl, Publish(pattern=HTTP_URL_PATTERN)]
Base64 = Annotated[str, Publish(contentEncoding="base64", pattern=BASE64_PATTERN)]


class _Model(BaseModel):
    # Unknown fields are dropped at validation (README "Compatibility rules"): nothing
    # downstream can send them to a vendor. parse_record lists them for the audit record.
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=False)


# -- schema version ---------------------------------------------------------------------------

_VERSION_TEXT = re.compile(r"^([0-9]{1,9})(?:\.[0-9]{1,9})?$")
_VERSION_PROBLEM = 'must be a major version number (1) or a "major.minor" string ("1", "1.1")'


def schema_major(value: Any) -> int:
    """The major version of a ``schema_version`` value (missing or null: 1).

    Raises ValueError for anything that is not a version (a ``schema`` dead letter);
    an unknown major is the caller's decision (``unsupported_version``).
    """
    if value is None:
        return SCHEMA_MAJOR
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9:
        return value
    # JSON Schema counts 1.0 as the integer 1; so does the connector.
    if isinstance(value, float) and value.is_integer() and 0 <= value < 10**9:
        return int(value)
    if isinstance(value, str):
        match = _VERSION_TEXT.match(value)
        if match is not None:
            return int(match.group(1))
    raise ValueError(f"{_VERSION_PROBLEM}, got {str(value)[:32]!r}")


def _supported_version(value: int | str) -> int | str:
    major = schema_major(value)
    if major != SCHEMA_MAJOR:
        raise ValueError(
            f"major version {major} is not supported; this connector reads {SCHEMA_MAJOR}"
        )
    return value


SchemaVersion = Annotated[
    int | str,
    AfterValidator(_supported_version),
    WithJsonSchema(
        {
            "description": (
                f"The event schema's version: the major number ({SCHEMA_MAJOR}) or "
                f'"major.minor" (this schema is {SCHEMA_VERSION}). Missing means '
                f"{SCHEMA_MAJOR}. Another major version is dead-lettered as "
                "`unsupported_version`."
            ),
            "anyOf": [
                {"type": "integer", "const": SCHEMA_MAJOR},
                {"type": "string", "pattern": exact(f"{SCHEMA_MAJOR}(?:\\.[0-9]{{1,9}})?")},
            ],
        }
    ),
]


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


class Target(_Model):
    """What an event is about, at one vendor: each vendor's target model subclasses it.

    A subclass names its vendor (``vendor: Literal["<name>"]``, the key of its entry in
    :mod:`connector.vendors.registry`) and its Kafka key (:attr:`key`). No fields here:
    the published schema is the subclasses' own.
    """

    if TYPE_CHECKING:
        vendor: str

    @property
    def key(self) -> str:
        """The Kafka key (and table key) of the target's events."""
        raise NotImplementedError(f"{type(self).__name__} names no key")


class KomboTarget(Target):
    vendor: Literal["kombo"]
    integration_id: IntegrationId
    assessment_order_id: OrderId

    @property
    def key(self) -> str:
        return f"kombo|{self.integration_id}|{self.assessment_order_id}"


class ComeetTarget(Target):
    vendor: Literal["comeet"]
    evaluation_id: OrderId

    @property
    def key(self) -> str:
        return f"comeet|{self.evaluation_id}"


class KomboIntegrationTarget(Target):
    vendor: Literal["kombo"]
    integration_id: IntegrationId

    @property
    def key(self) -> str:
        return f"kombo-packages|{self.integration_id}"


# The published order targets: the schema (topics/schemas/event.schema.json) names these.
_PUBLISHED_ORDER_TARGETS: dict[str, type[Target]] = {"kombo": KomboTarget, "comeet": ComeetTarget}
# Order targets of vendors added by registering a module (connector.vendors.registry):
# validated by their own model, outside the published union until the schema names them.
_REGISTERED_ORDER_TARGETS: dict[str, type[Target]] = {}


def register_order_target(vendor: str, model: type[Target]) -> None:
    """Accept ``model`` as an order event's target when its ``vendor`` is ``vendor``."""
    known = _PUBLISHED_ORDER_TARGETS.get(vendor) or _REGISTERED_ORDER_TARGETS.get(vendor)
    if known is model:
        return
    if known is not None:
        raise ValueError(f"vendor {vendor!r} already has the order target {known.__name__}")
    _REGISTERED_ORDER_TARGETS[vendor] = model


def unregister_order_target(vendor: str) -> None:
    """Forget a registered (never a published) order target; for tests."""
    _REGISTERED_ORDER_TARGETS.pop(vendor, None)


def _registered_target(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    # A registered vendor's target is validated by its own model; anything else by the
    # published union, whose errors (an unknown vendor included) stay as they were.
    if _REGISTERED_ORDER_TARGETS and isinstance(value, dict):
        vendor = value.get("vendor")
        model = _REGISTERED_ORDER_TARGETS.get(vendor) if isinstance(vendor, str) else None
        if model is not None:
            return model.model_validate(value)
    return handler(value)


if TYPE_CHECKING:
    # Statically any vendor's target: code that needs one vendor's fields narrows it.
    OrderTarget: TypeAlias = Target
else:
    OrderTarget = Annotated[
        KomboTarget | ComeetTarget,
        Field(discriminator="vendor"),
        WrapValidator(_registered_target),
    ]


class Score(_Model):
    """A score on the vendor's own scale ``0..max``: ``value`` must not exceed ``max``.

    JSON Schema (draft 2020-12) cannot compare two values of one instance, so this
    schema does not check ``value <= max``; the connector does (dead letter ``schema``).
    """

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

    model_config = ConfigDict(
        json_schema_extra={
            # Exactly one source; inline data needs its content type.
            "oneOf": [
                {
                    "title": "inline data",
                    "required": ["data", "content_type"],
                    "properties": {
                        "data": {"type": "string"},
                        "content_type": {"type": "string"},
                        "data_url": {"type": "null"},
                    },
                },
                {
                    "title": "data by URL",
                    "required": ["data_url"],
                    "properties": {"data_url": {"type": "string"}, "data": {"type": "null"}},
                },
            ]
        }
    )

    name: Text
    content_type: (
        Annotated[
            str,
            StringConstraints(pattern=CONTENT_TYPE_PATTERN),
            Publish(pattern=CONTENT_TYPE_SCHEMA_PATTERN),
        ]
        | None
    ) = None
    data: Base64 | None = None
    data_url: Url | None = None

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
            # Python's strict mode still accepts padding beyond the last quantum
            # ("QUJD====", "QUJD="); standard base64 (and BASE64_PATTERN) does not.
            if len(value) % 4 or value.find("=", 0, len(value) - 2) != -1:
                raise ValueError("data is not valid base64 (padding)")
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
    event_id: Annotated[
        str,
        StringConstraints(min_length=1, max_length=128, pattern=r"^\S+$"),
        Publish(pattern=EVENT_ID_PATTERN),
    ]
    occurred_at: Timestamp
    schema_version: SchemaVersion | None = None
    # Set by parse_record: the paths of fields this connector does not know.
    _unknown_fields: tuple[str, ...] = PrivateAttr(default=())

    @property
    def key(self) -> str:
        return order_key(self.target)  # type: ignore[attr-defined]

    @property
    def unknown_fields(self) -> tuple[str, ...]:
        """Paths of the fields the producer sent that this schema does not name (at most
        :data:`MAX_UNKNOWN_FIELDS_LISTED`, then ``"…"``): accepted and ignored."""
        return self._unknown_fields


class OrderOpened(_EventBase):
    type: Literal[EventType.OPENED]
    target: OrderTarget
    result_url: Url | None = None


class OrderProgress(_EventBase):
    """An interim status, e.g. "Test started"."""

    type: Literal[EventType.PROGRESS]
    target: OrderTarget
    status_text: Text
    result_url: Url | None = None


class OrderCompleted(_EventBase):
    type: Literal[EventType.COMPLETED]
    target: OrderTarget
    outcome: Outcome
    completed_at: Timestamp
    result_url: Url
    # Comeet distinguishes a link for its users from a tokenised public one.
    public_result_url: Url | None = None
    score: Score | None = None
    summary: str | None = Field(default=None, max_length=100_000)
    sub_results: list[SubResult] = Field(default_factory=list, max_length=200)
    attributes: list[TextAttribute] = Field(default_factory=list, max_length=200)
    attachments: list[Attachment] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    # Passed to Kombo's ``remote_fields`` untouched (validated against its schema on mapping).
    kombo_remote_fields: (
        Annotated[dict[str, Any], WithJsonSchema(json_object(JSON_VALUE_PLACEHOLDER))] | None
    ) = None


class OrderCancelled(_EventBase):
    """The order ended without a result: cancelled by someone, or expired."""

    type: Literal[EventType.CANCELLED]
    target: OrderTarget
    kind: Literal["cancelled", "expired"]
    reason: Text
    cancelled_at: Timestamp | None = None
    result_url: Url | None = None

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


def event_json_schema() -> dict[str, Any]:
    """The published JSON Schema of an event (``topics/schemas/event.schema.json``)."""
    document = event_adapter.json_schema(schema_generator=PublishedSchemaGenerator)
    return {"description": SCHEMA_DESCRIPTION, **document}


def order_key(target: Target) -> str:
    """The Kafka key (and table key) of a target: each target model names its own.

    Integration ids hold no ``|``, so a key splits unambiguously at its first two ``|``
    although order and evaluation ids may hold any printable character, ``|`` included.
    """
    return target.key


def order_key_of_record(key: bytes | None) -> str | None:
    """The order key a record's Kafka key names, or None when it has none of that form.

    For a record that cannot be parsed the key is all that is known of its order: its
    audit records and dead letter carry it, so that ``audit tail --order`` and ``order
    show`` find them. Only a key that :func:`order_key` could have made counts (valid
    UTF-8, a known vendor prefix, ids within their limits and free of control
    characters), so a hostile key never becomes an order key in the audit trail.
    """
    if not key or len(key) > 16 + MAX_INTEGRATION_ID_LENGTH + 4 * MAX_ORDER_ID_LENGTH:
        return None
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return None
    vendor, _, rest = text.partition("|")
    if vendor == "comeet":
        integration, order_id = None, rest
    elif vendor == "kombo":
        integration, _, order_id = rest.partition("|")
    elif vendor == "kombo-packages":
        integration, order_id = rest, None
    else:
        return None
    if integration is not None and not (
        0 < len(integration) <= MAX_INTEGRATION_ID_LENGTH and not _NOT_KEY_SAFE.search(integration)
    ):
        return None
    if order_id is not None and not (
        0 < len(order_id) <= MAX_ORDER_ID_LENGTH and not _CONTROL_OR_SURROGATE.search(order_id)
    ):
        return None
    return text


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


def _unpaired_surrogate_at(value: Any) -> str | None:
    """Where a string (or object key) holds a lone surrogate, which ``json`` lets through
    from a ``\\ud800``-style escape; such text cannot be encoded to UTF-8 anywhere later."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                return path or "event"
        elif isinstance(node, dict):
            for name, child in node.items():
                lone = _SURROGATE.search(name) is not None
                shown = ascii(name[:64]) if lone else name[:64]
                where = f"{path}.{shown}" if path else shown
                if lone:
                    return f"{where} (a key)"
                stack.append((child, where))
        elif isinstance(node, list):
            stack.extend((child, f"{path}.{i}") for i, child in enumerate(node))
    return None


def _field_name(name: str) -> str:
    # Unknown names go to audit records and terminals: no control characters, bounded.
    shown = _CONTROL_OR_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", name)
    if len(shown) > MAX_UNKNOWN_FIELD_NAME:
        shown = shown[: MAX_UNKNOWN_FIELD_NAME - 1] + "…"
    return shown


def _unknown_fields(raw: dict[str, Any], model: BaseModel) -> tuple[str, ...]:
    """Paths (``a.b.0.c``) of the keys in ``raw`` that ``model``'s schema does not name.

    Walks the raw document alongside the validated model, so a discriminated union's
    branch is the one pydantic chose. Free-form objects (``kombo_remote_fields``) are
    payload, not schema: their keys are never unknown fields.
    """
    found: list[str] = []
    stack: list[tuple[dict[str, Any], BaseModel, str]] = [(raw, model, "")]
    while stack and len(found) <= MAX_UNKNOWN_FIELDS_LISTED:
        node, validated, path = stack.pop()
        fields = type(validated).model_fields
        for name, value in node.items():
            if name not in fields:
                found.append(path + _field_name(name))
                continue
            child = getattr(validated, name)
            if isinstance(child, BaseModel) and isinstance(value, dict):
                stack.append((value, child, f"{path}{name}."))
            elif isinstance(child, list | tuple) and isinstance(value, list):
                for index, (raw_item, item) in enumerate(zip(value, child, strict=False)):
                    if isinstance(item, BaseModel) and isinstance(raw_item, dict):
                        stack.append((raw_item, item, f"{path}{name}.{index}."))
    found.sort()
    if len(found) > MAX_UNKNOWN_FIELDS_LISTED:
        return (*found[:MAX_UNKNOWN_FIELDS_LISTED], "…")
    return tuple(found)


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
    event = parse_value(value, max_bytes=max_bytes)
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


def parse_value(value: bytes | None, *, max_bytes: int) -> Event:
    """Decode and validate one record value, whatever its key (``connector publish``
    computes the key from it). Raises only InvalidEventError."""
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
    # The depth (a scalar counts as a level) is at most one more than the number of
    # opening brackets (those inside strings only add to the count), and counting them
    # is a C loop: the walk is needed only for events with about the limit in brackets.
    brackets = text.count("{") + text.count("[")
    if brackets + 1 > MAX_JSON_DEPTH and _depth(raw, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise InvalidEventError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", code="too_deep")
    if not isinstance(raw, dict):
        raise InvalidEventError(
            f"event must be a JSON object, got {type(raw).__name__}", code="not_object"
        )
    # The version first: another major version may name its types and fields differently.
    try:
        major = schema_major(raw.get("schema_version"))
    except ValueError as exc:
        raise InvalidEventError(f"schema_version: {exc}", code="schema") from None
    if major != SCHEMA_MAJOR:
        raise InvalidEventError(
            f"schema_version {str(raw['schema_version'])[:32]!r} has major version {major}; "
            f"this connector reads major version {SCHEMA_MAJOR}: upgrade the connector, then "
            "replay (connector dlq replay --code unsupported_version --force)",
            code="unsupported_version",
        )
    event_type = raw.get("type")
    if not isinstance(event_type, str) or event_type not in _EVENT_TYPES:
        raise InvalidEventError(
            f"unknown event type {str(raw.get('type'))[:64]!r}; expected one of "
            + ", ".join(EventType),
            code="unknown_type",
        )
    # Lone surrogates only arrive as \\u escapes (the UTF-8 decoding above is strict).
    if "\\u" in text:
        where = _unpaired_surrogate_at(raw)
        if where is not None:
            raise InvalidEventError(f"{where}: {_SURROGATE_PROBLEM}", code="schema")
    try:
        event = event_adapter.validate_python(raw)
    except ValidationError as exc:
        raise InvalidEventError(_format_validation_error(exc), code="schema") from None
    # Frozen models still take private attributes; the event is not shared yet.
    event._unknown_fields = _unknown_fields(raw, event)
    return event
