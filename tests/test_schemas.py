"""The checked-in files under topics/ are what the models generate, and examples are valid."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from connector.domain.events import event_adapter, parse_record
from connector.errors import InvalidEventError
from connector.ops.schemas import generated_files
from tests.factories import PDF_B64, make_event, target

TOPICS = Path(__file__).resolve().parent.parent / "topics"


@pytest.mark.parametrize("relative", sorted(generated_files()))
def test_checked_in_file_matches_models(relative: str) -> None:
    path = TOPICS / relative
    assert path.exists(), f"{relative} missing: run `connector topics generate`"
    assert path.read_text(encoding="utf-8") == generated_files()[relative], (
        f"topics/{relative} drifted from the models: run `connector topics generate`"
    )


EXAMPLES = sorted((TOPICS / "examples").glob("*.json"))


def test_there_is_an_example_per_event_type_and_vendor() -> None:
    names = {p.name for p in EXAMPLES}
    for kind in ("opened", "progress", "completed", "cancelled"):
        for vendor in ("kombo", "comeet"):
            assert f"order.{kind}.{vendor}.json" in names
    assert "packages.set.kombo.json" in names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid(path: Path) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    schema = json.loads((TOPICS / "schemas/event.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(document, schema)
    event = event_adapter.validate_python(document)
    assert path.name.startswith(str(event.type))


# -- the published schema rejects what the connector rejects ---------------------------------

SCHEMA = json.loads((TOPICS / "schemas/event.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
BIG = 10**6


def test_the_published_schema_is_valid_draft_2020_12() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def _set(event: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node: Any = event
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    for part in parents:
        node = node[part]
    if value is _DROP:
        del node[last]
    else:
        node[last] = value
    return event


_DROP = object()
_ATT = "attachments.0"
_PDF = {"name": "r.pdf", "content_type": "application/pdf", "data": PDF_B64}


def _completed(vendor: str = "kombo") -> dict[str, Any]:
    event = make_event("completed", target(vendor, "o-1", "w:1"))
    event["kombo_remote_fields"] = {"recruitee": {"subtitle": "ok"}}
    return event


# (name, event kind/vendor, path, value): each one the connector dead-letters as `schema`.
INVALID: list[tuple[str, str, str, Any]] = [
    ("score above max", "completed", "score", {"value": 101, "max": 100}),
    ("score negative", "completed", "score.value", -1),
    ("score max zero", "completed", "score.max", 0),
    ("score infinite", "completed", "score.value", "1e999"),
    ("sub-result score above max", "completed", "sub_results.0.score.value", 11),
    ("base64 bad chars", "completed", f"{_ATT}.data", "!!!notbase64"),
    ("base64 no padding", "completed", f"{_ATT}.data", "QQ"),
    ("base64 extra padding", "completed", f"{_ATT}.data", "QUJD===="),
    ("base64 padding without need", "completed", f"{_ATT}.data", "QUJD="),
    ("base64 newline", "completed", f"{_ATT}.data", "QUJD\n"),
    ("base64 data after padding", "completed", f"{_ATT}.data", "QQ==QQ=="),
    ("both data and data_url", "completed", f"{_ATT}.data_url", "https://example.com/r.pdf"),
    ("neither data nor data_url", "completed", f"{_ATT}.data", _DROP),
    ("data null, no data_url", "completed", f"{_ATT}.data", None),
    ("data without content type", "completed", f"{_ATT}.content_type", _DROP),
    ("data with null content type", "completed", f"{_ATT}.content_type", None),
    ("generic content type", "completed", f"{_ATT}.content_type", "application/octet-stream"),
    (
        "generic content type, any case",
        "completed",
        f"{_ATT}.content_type",
        "Application/OCTET-Stream",
    ),
    ("binary/octet-stream", "completed", f"{_ATT}.content_type", "binary/octet-stream"),
    ("binary/octet-stream, any case", "completed", f"{_ATT}.content_type", "BINARY/Octet-STREAM"),
    ("content type without subtype", "completed", f"{_ATT}.content_type", "pdf"),
    ("content type with parameters", "completed", f"{_ATT}.content_type", "text/plain; charset=x"),
    ("content type newline", "completed", f"{_ATT}.content_type", "application/pdf\n"),
    ("six attachments", "completed", "attachments", [_PDF] * 6),
    ("attachment name empty", "completed", f"{_ATT}.name", ""),
    ("data_url ftp", "completed", "attachments", [{"name": "r", "data_url": "ftp://x.org/r"}]),
    ("result_url not a URL", "completed", "result_url", "not a url"),
    ("result_url no host", "completed", "result_url", "https://"),
    ("result_url empty host", "completed", "result_url", "https://:80/x"),
    ("result_url bad port", "completed", "result_url", "https://example.com:65536/"),
    ("result_url space in host", "completed", "result_url", "https://exa mple.com/"),
    ("result_url javascript", "completed", "result_url", "javascript:alert(1)"),
    ("occurred_at without timezone", "completed", "occurred_at", "2026-11-23T10:00:00"),
    ("completed_at without timezone", "completed", "completed_at", "2026-11-23T11:00:00.456"),
    ("cancelled_at without timezone", "cancelled", "cancelled_at", "2026-11-23T11:00:00"),
    ("date only", "completed", "occurred_at", "2026-11-23"),
    ("not a date", "completed", "occurred_at", "yesterday"),
    ("February 30", "completed", "occurred_at", "2026-02-30T10:00:00Z"),
    ("February 29, 2100", "completed", "occurred_at", "2100-02-29T10:00:00Z"),
    ("April 31", "completed", "occurred_at", "2026-04-31T10:00:00Z"),
    ("hour 24", "completed", "occurred_at", "2026-11-23T24:00:00Z"),
    ("leap second", "completed", "occurred_at", "2026-11-23T23:59:60Z"),
    ("offset 24h", "completed", "occurred_at", "2026-11-23T10:00:00+24:00"),
    ("offset hours only", "completed", "occurred_at", "2026-11-23T10:00:00+01"),
    ("year 0", "completed", "occurred_at", "0000-01-01T10:00:00Z"),
    ("datetime newline", "completed", "occurred_at", "2026-11-23T10:00:00Z\n"),
    ("order id empty", "opened", "target.assessment_order_id", ""),
    ("order id too long", "opened", "target.assessment_order_id", "x" * 1025),
    ("order id NUL", "opened", "target.assessment_order_id", "a\x00b"),
    ("order id newline", "opened", "target.assessment_order_id", "a\n"),
    ("order id tab", "opened", "target.assessment_order_id", "a\tb"),
    ("order id DEL", "opened", "target.assessment_order_id", "a\x7f"),
    ("order id C1", "opened", "target.assessment_order_id", "a\x85b"),
    ("order id ESC", "opened", "target.assessment_order_id", "\x1b[31mred"),
    ("evaluation id empty", "opened/comeet", "target.evaluation_id", ""),
    ("evaluation id control", "opened/comeet", "target.evaluation_id", "e\r\n1"),
    ("evaluation id too long", "opened/comeet", "target.evaluation_id", "e" * 1025),
    ("integration id non-ASCII", "opened", "target.integration_id", "workday:ü"),
    ("integration id space", "opened", "target.integration_id", "a b"),
    ("integration id pipe", "opened", "target.integration_id", "a|b"),
    ("integration id empty", "opened", "target.integration_id", ""),
    ("integration id too long", "opened", "target.integration_id", "i" * 257),
    ("integration id newline", "opened", "target.integration_id", "abc\n"),
    ("packages integration id", "packages", "target.integration_id", "日本"),
    ("sub-result id space", "completed", "sub_results.0.id", "a b"),
    ("sub-result id slash", "completed", "sub_results.0.id", "a/b"),
    ("sub-result id newline", "completed", "sub_results.0.id", "a\n"),
    ("package id pipe", "packages", "packages.0.id", "a|b"),
    ("package id NBSP", "packages", "packages.0.id", "a\xa0b"),
    ("event id empty", "completed", "event_id", ""),
    ("event id space", "completed", "event_id", "a b"),
    ("event id newline", "completed", "event_id", "evt-1\n"),
    ("event id NEL", "completed", "event_id", "evt\x851"),
    ("event id too long", "completed", "event_id", "e" * 129),
    ("surrogate in order id", "opened", "target.assessment_order_id", "o\ud800"),
    ("surrogate in evaluation id", "opened/comeet", "target.evaluation_id", "\udfff"),
    ("surrogate in event id", "completed", "event_id", "evt\udc00"),
    ("surrogate in summary", "completed", "summary", "x\ud800y"),
    ("surrogate in label", "completed", "attributes.0.label", "\ud83d"),
    ("surrogate in sub-result id", "completed", "sub_results.0.id", "s\ud800"),
    ("surrogate in remote field", "completed", "kombo_remote_fields.recruitee.subtitle", "\ud800"),
    ("surrogate deep in remote fields", "completed", "kombo_remote_fields.x", [{"y": ["\udc00"]}]),
    ("status text empty", "progress", "status_text", ""),
    ("status text too long", "progress", "status_text", "s" * 10_001),
    ("summary too long", "completed", "summary", "s" * 100_001),
    ("schema_version not a version", "completed", "schema_version", "v1"),
    ("schema_version negative", "completed", "schema_version", -1),
    ("schema_version boolean", "completed", "schema_version", True),
    ("schema_version minor only", "completed", "schema_version", ".1"),
    ("missing target", "completed", "target", _DROP),
    ("kombo target without order", "opened", "target.assessment_order_id", _DROP),
    ("unknown vendor", "opened", "target.vendor", "greenhouse"),
    ("outcome unknown", "completed", "outcome", "great"),
    ("cancel kind unknown", "cancelled", "kind", "vanished"),
    ("remote fields not an object", "completed", "kombo_remote_fields", ["x"]),
    ("package type unknown", "packages", "packages.0.type", "IQ_TEST"),
]


def _corpus_event(kind: str, path: str, value: Any) -> str:
    kind, _, vendor = kind.partition("/")
    event = (
        _completed(vendor or "kombo")
        if kind == "completed"
        else make_event(kind, target(vendor or "kombo", "o-1", "w:1"))
    )
    if path == "kombo_remote_fields.x":
        event["kombo_remote_fields"] = {}
    text = json.dumps(_set(event, path, "1e999" if value == "1e999" else value))
    # JSON has no infinity literal; 1e999 is a finite-looking literal that overflows.
    return text.replace('"1e999"', "1e999")


@pytest.mark.parametrize(("name", "kind", "path", "value"), INVALID, ids=[c[0] for c in INVALID])
def test_what_the_connector_rejects_as_schema_the_published_schema_rejects(
    name: str, kind: str, path: str, value: Any
) -> None:
    text = _corpus_event(kind, path, value)
    with pytest.raises(InvalidEventError) as info:
        parse_record(b"any key", text.encode(), max_bytes=BIG)
    assert info.value.code == "schema", info.value.reason
    if name in CANNOT_EXPRESS:
        assert VALIDATOR.is_valid(json.loads(text))
        return
    assert not VALIDATOR.is_valid(json.loads(text)), f"the schema accepts: {name}"


# Rules draft 2020-12 cannot state; each is named in the schema's descriptions.
CANNOT_EXPRESS = {
    "score above max": "must not exceed",
    "sub-result score above max": "must not exceed",
}
URLS_BEYOND_THE_PATTERN = [
    "https://xn--/",  # invalid punycode
    "https://256.1.1.1/",  # IPv4 literal out of range
    "https://1.2.3.4.5/",
    "https://[::1::2]/",  # invalid IPv6 literal
]


@pytest.mark.parametrize("url", URLS_BEYOND_THE_PATTERN)
def test_url_parsing_beyond_the_pattern_is_named_in_the_schema(url: str) -> None:
    text = _corpus_event("completed", "result_url", url)
    with pytest.raises(InvalidEventError) as info:
        parse_record(b"any key", text.encode(), max_bytes=BIG)
    assert info.value.code == "schema"
    assert VALIDATOR.is_valid(json.loads(text))
    assert "WHATWG" in SCHEMA["description"]


def test_rules_the_schema_cannot_express_are_described() -> None:
    assert "cannot express" in SCHEMA["description"]
    assert "must not exceed its max" in SCHEMA["description"]
    score = SCHEMA["$defs"]["Score"]["description"]
    assert "must not exceed" in score and "cannot compare" in score
    assert set(CANNOT_EXPRESS) <= {c[0] for c in INVALID}


VALID_ODDITIES: list[tuple[str, str, str, Any]] = [
    ("order id with URL characters", "opened", "target.assessment_order_id", "a/b?c#d%2F.."),
    ("order id dot", "opened", "target.assessment_order_id", "."),
    ("order id dots", "opened", "target.assessment_order_id", ".."),
    ("order id non-ASCII", "opened", "target.assessment_order_id", "ü-ñ 日本"),
    ("order id pipe", "opened", "target.assessment_order_id", "a|b"),
    ("order id emoji", "opened", "target.assessment_order_id", "🎉"),
    ("order id 1024", "opened", "target.assessment_order_id", "x" * 1024),
    ("evaluation id odd", "opened/comeet", "target.evaluation_id", "a&b=c#d+e%20f"),
    ("integration id punctuation", "opened", "target.integration_id", "~!#$%&*/:"),
    ("summary with newlines", "completed", "summary", "line 1\nline 2\n"),
    ("summary with emoji", "completed", "summary", "🎉 great"),
    ("offset without colon", "completed", "occurred_at", "2026-11-23T10:00:00+0100"),
    ("lowercase t and z", "completed", "occurred_at", "2026-11-23t10:00:00.5z"),
    ("space separator", "completed", "occurred_at", "2026-11-23 10:00Z"),
    ("February 29, 2024", "completed", "occurred_at", "2024-02-29T10:00:00-05:30"),
    ("February 29, 2000", "completed", "occurred_at", "2000-02-29T10:00:00Z"),
    ("content type any case", "completed", f"{_ATT}.content_type", "Application/PDF"),
    ("empty base64", "completed", f"{_ATT}.data", ""),
    ("URL with port, user, query", "completed", "result_url", "https://u:p@x.org:8443/a?b#c"),
    ("URL IPv6", "completed", "result_url", "http://[::1]:8080/r"),
    ("URL upper-case scheme", "completed", "result_url", "HTTPS://X.ORG/"),
    (
        "attachment by URL",
        "completed",
        "attachments",
        [{"name": "r", "data_url": "https://x.org/r"}],
    ),
    (
        "by URL, data null",
        "completed",
        "attachments",
        [{"name": "r", "data": None, "data_url": "https://x.org/r"}],
    ),
    (
        "remote fields nested",
        "completed",
        "kombo_remote_fields",
        {"recruitee": {"subtitle": "ü 🎉"}},
    ),
    # Producers evolve (README "Compatibility rules"): unknown fields anywhere, a version.
    ("unknown field", "completed", "unexpected", 1),
    ("unknown target field", "opened", "target.extra", "x"),
    ("unknown sub-result field", "completed", "sub_results.0.weight", {"x": [1]}),
    ("packages target with order", "packages", "target.assessment_order_id", "o"),
    ("schema_version major", "completed", "schema_version", 1),
    ("schema_version major.minor", "completed", "schema_version", "1.7"),
    ("schema_version string major", "completed", "schema_version", "1"),
    ("schema_version null", "completed", "schema_version", None),
]


@pytest.mark.parametrize(
    ("name", "kind", "path", "value"), VALID_ODDITIES, ids=[c[0] for c in VALID_ODDITIES]
)
def test_odd_but_valid_events_pass_both(name: str, kind: str, path: str, value: Any) -> None:
    text = _corpus_event(kind, path, value)
    event = event_adapter.validate_json(text)
    parse_record(event.key.encode(), text.encode(), max_bytes=BIG)
    VALIDATOR.validate(json.loads(text))


@pytest.mark.parametrize("version", [2, "2.0", "0", 10, "17.3"])
def test_an_unknown_major_version_is_its_own_dead_letter_and_the_schema_refuses_it(
    version: Any,
) -> None:
    text = _corpus_event("completed", "schema_version", version)
    with pytest.raises(InvalidEventError) as info:
        parse_record(b"any key", text.encode(), max_bytes=BIG)
    assert info.value.code == "unsupported_version", info.value.reason
    assert not VALIDATOR.is_valid(json.loads(text))


def test_the_schema_states_the_compatibility_rules() -> None:
    assert "unsupported_version" in SCHEMA["description"]
    assert "unknown_fields" in SCHEMA["description"]
    completed = SCHEMA["$defs"]["OrderCompleted"]
    assert completed["additionalProperties"] is True
    assert "schema_version" in completed["properties"]
    assert "schema_version" not in completed["required"]


def _patterns(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["pattern"]} if isinstance(node.get("pattern"), str) else set()
        return found.union(*(_patterns(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_patterns(v) for v in node))
    return set()


PROBES = [
    "",
    "a",
    "abc\n",
    "\n",
    "a b",
    "a/b|c",
    "ü",
    "日本",
    "🎉",
    "x\ud800",
    "\udc00y",
    "\ud83d\ude00",
    "a\x00",
    "\x7f",
    "\x85",
    "\xa0",
    "\u2028",
    "application/pdf",
    "APPLICATION/octet-stream",
    "QUJD",
    "QQ==",
    "QQ",
    "2026-11-23T10:00:00Z",
    "2024-02-29 10:00+01:00",
    "2026-02-29T10:00Z",
    "https://x.org/a b",
    "https://u@x.org:65535/p?q#f",
    "http://[::1]/",
    "ftp://x",
    "~!#",
]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node for ECMA-262 regexes")
def test_patterns_mean_the_same_in_ecma_262_and_python() -> None:
    # JSON Schema patterns are ECMA-262; the jsonschema library runs them with Python's re.
    patterns = sorted(_patterns(SCHEMA))
    script = (
        "const [patterns, probes] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "console.log(JSON.stringify(patterns.map(p => [new RegExp(p, 'u'), new RegExp(p)]"
        ".map(r => probes.map(s => r.test(s))))));"
    )
    out = subprocess.run(
        ["node", "-e", script],
        input=json.dumps([patterns, PROBES]),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    for pattern, (unicode_mode, code_unit_mode) in zip(patterns, json.loads(out), strict=True):
        python = [re.search(pattern, probe) is not None for probe in PROBES]
        assert unicode_mode == python, pattern
        assert code_unit_mode == python, pattern
