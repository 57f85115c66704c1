"""What the published JSON Schemas say beyond pydantic's defaults.

``topics/schemas/event.schema.json`` must reject everything the connector rejects as
``schema``. Rules the models check in Python code are published next to them as JSON
Schema keywords with :class:`Publish`. The patterns here are written for both regex
dialects a validator may use: ECMA-262 (JSON Schema's own; on UTF-16 code units, or on
code points with the ``u`` flag) and Python's ``re`` (the ``jsonschema`` library). Hence
explicit character classes instead of ``\\s``/``\\w``/``\\d`` (each dialect reads them
differently), surrogate pairs spelled out, and ``$(?!\\n)`` as the end anchor (Python's
``$`` also matches before a final newline). ``tests/test_schemas.py`` runs every pattern
in both dialects.
"""

from __future__ import annotations

from typing import Any

from pydantic import GetJsonSchemaHandler
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

__all__ = [
    "BASE64_PATTERN",
    "DATETIME_PATTERN",
    "EVENT_ID_PATTERN",
    "HTTP_URL_PATTERN",
    "INTEGRATION_ID_PATTERN",
    "JSON_VALUE_PLACEHOLDER",
    "LEGACY_ID_PATTERN",
    "ORDER_ID_PATTERN",
    "TEXT_PATTERN",
    "Publish",
    "PublishedSchemaGenerator",
    "any_case",
    "exact",
    "json_object",
]


def exact(body: str) -> str:
    """``body`` anchored at both ends, in both dialects."""
    return f"^(?:{body})$(?!\\n)"


# Lone UTF-16 surrogates, and a valid pair (one character beyond U+FFFF in a UTF-16 engine).
_LONE = r"\ud800-\udfff"
_PAIR = r"[\ud800-\udbff][\udc00-\udfff]"
# Unicode White_Space, which is what pydantic's ``\s`` (Rust regex) means.
_WHITE_SPACE = r"\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# C0 controls, DEL and C1 controls.
_CONTROLS = r"\u0000-\u001f\u007f-\u009f"


def _any_char_but(excluded: str) -> str:
    """One Unicode character (never a lone surrogate) outside ``excluded`` (class syntax)."""
    return f"(?:[^{excluded}{_LONE}]|{_PAIR})"


def any_case(word: str) -> str:
    """``word`` in any letter case (JSON Schema patterns have no flags)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


TEXT_PATTERN = exact(_any_char_but("") + "*")
ORDER_ID_PATTERN = exact(_any_char_but(_CONTROLS) + "+")
INTEGRATION_ID_PATTERN = exact(r"[\u0021-\u007b\u007d\u007e]+")
LEGACY_ID_PATTERN = exact(_any_char_but(_WHITE_SPACE + "/|") + "+")
EVENT_ID_PATTERN = exact(_any_char_but(_WHITE_SPACE) + "+")
BASE64_PATTERN = exact(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_YEAR = "(?!0000)[0-9]{4}"
_LEAP_YEAR = "[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00"
_DATE = (
    f"{_YEAR}-(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    f"|{_YEAR}-(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    f"|{_YEAR}-02-(?:0[1-9]|1[0-9]|2[0-8])"
    f"|(?:{_LEAP_YEAR})-02-29"
)
# What pydantic accepts as a timezone-aware datetime string (RFC 3339 and the common
# ISO 8601 variants): a real calendar date, T (or a space), hh:mm[:ss[.fraction]], then
# Z or an offset. Unix timestamps, which pydantic also reads, are not published.
DATETIME_PATTERN = exact(
    f"(?:{_DATE})[Tt ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:[.,][0-9]+)?)?"
    "(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9])"
)
_PORT = "0*(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_URL_SPACE = r"\u0000-\u0020\u007f"
# http(s)://, optional user info, a host without the characters URL parsing forbids
# there (or an IPv6 literal), an optional port, then path, query and fragment.
HTTP_URL_PATTERN = exact(
    r"[Hh][Tt][Tt][Pp][Ss]?://"
    + "(?:"
    + _any_char_but(_URL_SPACE + r"/?#@\\")
    + "*@)?"
    + "(?:"
    + _any_char_but(_URL_SPACE + r"/?#@:\\\[\]<>^|%")
    + r"+|\[[0-9A-Fa-f:.]+\])"
    + f"(?::(?:{_PORT})?)?"
    + r"(?:[/?#\\]"
    + _any_char_but(_URL_SPACE)
    + "*)?"
)


# ``kombo_remote_fields`` passes any JSON through; its text must be valid Unicode too.
# pydantic resolves every ``$ref`` while it generates, so the models name the recursive
# ``JsonValue`` definition by a placeholder that PublishedSchemaGenerator swaps for the ref.
JSON_VALUE_PLACEHOLDER = {"x-connector-json-value": True}
_JSON_VALUE_REF = {"$ref": "#/$defs/JsonValue"}


def json_object(value: dict[str, Any]) -> dict[str, Any]:
    """A JSON object with valid Unicode keys and ``value`` as the schema of its values."""
    return {
        "type": "object",
        "propertyNames": {"pattern": TEXT_PATTERN},
        "additionalProperties": value,
    }


JSON_VALUE_SCHEMA: dict[str, Any] = {
    "description": "Any JSON value whose strings and object keys are valid Unicode.",
    "anyOf": [
        {"type": ["null", "boolean", "number"]},
        {"type": "string", "pattern": TEXT_PATTERN},
        {"type": "array", "items": _JSON_VALUE_REF},
        json_object(_JSON_VALUE_REF),
    ],
}


class Publish:
    """Adds keywords to a type's published JSON Schema (for rules enforced in code)."""

    def __init__(self, **keywords: Any) -> None:
        self.keywords = keywords

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.update(self.keywords)
        return json_schema


class PublishedSchemaGenerator(GenerateJsonSchema):
    """pydantic's JSON Schema, plus what the connector enforces beyond it: every string
    is valid Unicode (pydantic refuses lone surrogates in constrained strings, and
    ``parse_record`` anywhere), and the ``JsonValue`` definition :func:`json_object` uses."""

    def str_schema(self, schema: core_schema.StringSchema) -> JsonSchemaValue:
        json_schema = super().str_schema(schema)
        json_schema.setdefault("pattern", TEXT_PATTERN)
        return json_schema

    def generate(self, schema: CoreSchema, mode: Any = "validation") -> JsonSchemaValue:
        document = _swap(super().generate(schema, mode), JSON_VALUE_PLACEHOLDER, _JSON_VALUE_REF)
        definitions = document.setdefault("$defs", {})
        for definition in definitions.values():
            # Said explicitly (it is JSON Schema's default): producers may add fields
            # before the connector knows them (README "Compatibility rules").
            if definition.get("type") == "object" and "properties" in definition:
                definition.setdefault("additionalProperties", True)
        definitions["JsonValue"] = JSON_VALUE_SCHEMA
        return {"$schema": self.schema_dialect, **document}


def _swap(node: Any, old: Any, new: Any) -> Any:
    if node == old:
        return new
    if isinstance(node, dict):
        return {key: _swap(value, old, new) for key, value in node.items()}
    if isinstance(node, list):
        return [_swap(value, old, new) for value in node]
    return node
