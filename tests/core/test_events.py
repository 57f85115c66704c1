"""parse_record: every input ends in an event or in one specific InvalidEventError."""

from __future__ import annotations

import json

import pytest

from connector.errors import InvalidEventError
from connector.events import OrderCompleted, parse_record
from tests.factories import PDF_B64, make_event, record, target

MAX = 1_000_000


def parse(event: dict) -> object:
    key, value = record(event)
    return parse_record(key, value, max_bytes=MAX)


@pytest.mark.parametrize(
    ("kind", "type_name"),
    [
        ("opened", "order.opened"),
        ("progress", "order.progress"),
        ("completed", "order.completed"),
        ("cancelled", "order.cancelled"),
        ("packages", "packages.set"),
    ],
)
def test_every_event_type_parses(kind: str, type_name: str) -> None:
    assert parse(make_event(kind)).type == type_name


def test_key_is_the_order_identity() -> None:
    kombo = make_event("opened", target("kombo", "o1", "greenhouse:X9"))
    comeet = make_event("opened", target("comeet", "e1"))
    assert record(kombo)[0] == b"kombo|greenhouse:X9|o1"
    assert record(comeet)[0] == b"comeet|e1"


def _reason(key: bytes | None, value: bytes | None) -> InvalidEventError:
    with pytest.raises(InvalidEventError) as info:
        parse_record(key, value, max_bytes=MAX)
    return info.value


def test_key_mismatch_is_rejected_with_both_keys_named() -> None:
    event = make_event("opened", target("comeet", "e1"))
    error = _reason(b"comeet|other", json.dumps(event).encode())
    assert error.code == "key_mismatch"
    assert "comeet|other" in error.reason and "comeet|e1" in error.reason


def test_missing_key_is_rejected() -> None:
    assert _reason(None, json.dumps(make_event("opened")).encode()).code == "key_missing"


@pytest.mark.parametrize(
    ("value", "code", "fragment"),
    [
        (b"not json", "not_json", "not valid JSON"),
        (b'{"type": "order.opened"', "not_json", "not valid JSON"),
        (b"\xff\xfe", "not_utf8", "UTF-8"),
        (b"[1, 2]", "not_object", "JSON object"),
        (b"[" * 5000 + b"]" * 5000, "too_deep", "nested deeper"),
        (b'{"type": "order.exploded"}', "unknown_type", "unknown event type"),
        (None, "empty", "tombstone"),
    ],
)
def test_undecodable_values(value: bytes | None, code: str, fragment: str) -> None:
    error = _reason(b"k", value)
    assert error.code == code
    assert fragment in error.reason


def test_oversized_value() -> None:
    error = _reason(b"k", b"x" * 101)
    assert error.code == "not_json"
    with pytest.raises(InvalidEventError) as info:
        parse_record(b"k", b"x" * 101, max_bytes=100)
    assert info.value.code == "too_large"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"target": None}, "target"),
        ({"score": {"value": 120, "max": 100}}, "above its max"),
        ({"score": {"value": -1, "max": 100}}, "score.value"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"occurred_at": "2026-11-23T10:00:00"}, "timezone"),
        ({"outcome": "great"}, "outcome"),
        (
            {
                "attachments": [{"name": "a", "content_type": "application/pdf", "data": PDF_B64}]
                * 6
            },
            "at most 5",
        ),
        (
            {
                "attachments": [
                    {"name": "a", "content_type": "application/octet-stream", "data": PDF_B64}
                ]
            },
            "generic",
        ),
        ({"attachments": [{"name": "a", "content_type": "pdf", "data": PDF_B64}]}, "content_type"),
        (
            {
                "attachments": [
                    {"name": "a", "content_type": "application/pdf", "data": "!!!notbase64"}
                ]
            },
            "base64",
        ),
        ({"attachments": [{"name": "a"}]}, "exactly one of data"),
        ({"event_id": ""}, "event_id"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_schema_errors_name_the_field(change: dict, fragment: str) -> None:
    event = make_event("completed") | change
    key = b"kombo|workday:ACME1|x"
    if event.get("target"):
        key = record(make_event("opened", event["target"]))[0]
    error = _reason(key, json.dumps(event).encode())
    assert error.code == "schema"
    assert fragment in error.reason


def test_nan_and_infinity_are_refused() -> None:
    event = make_event("completed")
    text = json.dumps(event).replace('"value": 90', '"value": NaN')
    error = _reason(record(event)[0], text.encode())
    assert "NaN" in error.reason
    text = json.dumps(event).replace('"value": 90', '"value": Infinity')
    assert "Infinity" in _reason(record(event)[0], text.encode()).reason


def test_completed_event_round_trips_content() -> None:
    event = parse(make_event("completed"))
    assert isinstance(event, OrderCompleted)
    assert event.score is not None and event.score.value == 90
    assert [s.id for s in event.sub_results] == ["algo", "style"]
