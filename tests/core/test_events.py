"""parse_record: every input ends in an event or in one specific InvalidEventError."""

from __future__ import annotations

import json

import pytest

from connector.domain.events import (
    MAX_JSON_DEPTH,
    OrderCompleted,
    order_key_of_record,
    parse_record,
)
from connector.errors import InvalidEventError
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


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH - 2, MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH])
@pytest.mark.parametrize(("opening", "closing"), [('{"a":', "}"), ("[", "]")])
def test_nesting_limit_is_exact(levels: int, opening: str, closing: str) -> None:
    # A scalar inside ``levels`` containers sits at depth levels + 1: around the limit,
    # where counting the brackets stops being enough to decide without the walk.
    value = ('{"x":' + opening * levels + "1" + closing * levels + "}").encode()
    code = _reason(b"k", value).code
    assert code == ("too_deep" if levels + 2 > MAX_JSON_DEPTH else "unknown_type")


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
        ({"schema_version": "one"}, "schema_version"),
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


# -- schema evolution (issue 14, item 3) -----------------------------------------------------


def test_unknown_fields_are_accepted_listed_and_never_mapped() -> None:
    from connector.vendors import map_event

    for vendor in ("kombo", "comeet"):
        event = make_event("completed", target(vendor, "o-evolve", "w:1"))
        event["reviewer_note_v2"] = "new and optional"
        event["target"]["tenant"] = "acme"
        event["sub_results"][1]["weight"] = 0.5
        event["attachments"] = [
            {"name": "r.pdf", "content_type": "application/pdf", "data": PDF_B64, "pages": 3}
        ]
        event["kombo_remote_fields"] = {"recruitee": {"subtitle": "payload, not schema"}}
        event["schema_version"] = "1.9"
        parsed = parse(event)
        assert parsed.unknown_fields == (
            "attachments.0.pages",
            "reviewer_note_v2",
            "sub_results.1.weight",
            "target.tenant",
        )
        assert parsed.key == f"{vendor}|w:1|o-evolve".replace("comeet|w:1|", "comeet|")
        request = map_event(parsed)
        body = json.dumps([request.path, request.params, request.headers, request.body])
        for name in ("reviewer_note_v2", "tenant", "weight", "pages", "acme"):
            assert name not in body


def test_known_events_have_no_unknown_fields() -> None:
    assert parse(make_event("completed")).unknown_fields == ()


def test_unknown_field_names_are_bounded_and_printable() -> None:
    event = make_event("opened") | {f"f{i:03}": i for i in range(500)}
    event["bad\x1bname" + "x" * 200] = 1
    listed = parse(event).unknown_fields
    assert len(listed) == 21 and listed[-1] == "…"
    assert all(len(name) <= 64 for name in listed)
    hostile = make_event("opened") | {"a\x1b[2Jb": 1}
    assert parse(hostile).unknown_fields == ("a\\u001b[2Jb",)


@pytest.mark.parametrize("version", [None, 1, 1.0, "1", "1.0", "1.42"])
def test_major_version_one_is_read(version: object) -> None:
    event = make_event("opened") | {"schema_version": version}
    assert parse(event).type == "order.opened"
    without = make_event("opened")
    assert "schema_version" not in without
    assert parse(without).schema_version is None


@pytest.mark.parametrize("version", [2, "2", "2.0", 0, "0.9", 99])
def test_an_unknown_major_version_is_dead_lettered_before_anything_else(version: object) -> None:
    # No type, no target: a future major may name them differently, so the version decides.
    error = _reason(b"k", json.dumps({"schema_version": version, "kind": "new"}).encode())
    assert error.code == "unsupported_version"
    assert "major version" in error.reason and "upgrade the connector" in error.reason


@pytest.mark.parametrize("version", ["v1", "1.x", "", True, -1, 1.5, [1], {"major": 1}])
def test_a_malformed_version_is_a_schema_error(version: object) -> None:
    error = _reason(b"k", json.dumps(make_event("opened") | {"schema_version": version}).encode())
    assert error.code == "schema"
    assert "schema_version" in error.reason


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


# -- identifiers (issue 10, item 5) ----------------------------------------------------------

ODD_ORDER_IDS = [
    "a/b?c#d%2F..",
    ".",
    "..",
    "ü-ñ 日本",
    "a|b",
    "|",
    "with space",
    "emoji 🎉 + & = ; ,",
    "%",
    "x" * 1024,
]


@pytest.mark.parametrize("order_id", ODD_ORDER_IDS)
def test_any_printable_kombo_order_id_is_accepted_and_keyed(order_id: str) -> None:
    event = make_event("opened", target("kombo", order_id, "workday:ACME1"))
    key = f"kombo|workday:ACME1|{order_id}".encode()
    parsed = parse_record(key, json.dumps(event).encode(), max_bytes=MAX)
    assert parsed.target.assessment_order_id == order_id  # type: ignore[union-attr]
    assert parsed.key.encode() == key


@pytest.mark.parametrize("evaluation_id", ODD_ORDER_IDS)
def test_any_printable_comeet_evaluation_id_is_accepted_and_keyed(evaluation_id: str) -> None:
    event = make_event("completed", target("comeet", evaluation_id))
    key = f"comeet|{evaluation_id}".encode()
    parsed = parse_record(key, json.dumps(event).encode(), max_bytes=MAX)
    assert parsed.target.evaluation_id == evaluation_id  # type: ignore[union-attr]


def test_a_pipe_in_an_order_id_keeps_keys_unambiguous() -> None:
    # The integration id can hold no "|", so the first two "|" always split the key.
    event = make_event("opened", target("kombo", "a|b", "w:1"))
    assert parse(event).key == "kombo|w:1|a|b"
    other = make_event("opened", target("kombo", "b", "w:1|a"))
    with pytest.raises(Exception) as info:
        parse_record(b"kombo|w:1|a|b", json.dumps(other).encode(), max_bytes=MAX)
    assert isinstance(info.value, InvalidEventError)
    assert info.value.code == "schema"


@pytest.mark.parametrize(
    "bad_char", ["\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\x85", "\x9f"], ids=repr
)
@pytest.mark.parametrize("vendor", ["kombo", "comeet"])
def test_control_characters_in_order_ids_are_schema_errors(vendor: str, bad_char: str) -> None:
    event = make_event("opened", target(vendor, f"ord{bad_char}1", "w:1"))
    error = _reason(b"k", json.dumps(event).encode())
    assert error.code == "schema"
    assert "control character" in error.reason
    assert f"U+{ord(bad_char):04X}" in error.reason


@pytest.mark.parametrize("vendor", ["kombo", "comeet"])
@pytest.mark.parametrize("order_id", ["", "x" * 1025])
def test_order_id_length_limits(vendor: str, order_id: str) -> None:
    event = make_event("opened", target(vendor, "placeholder", "w:1"))
    field = "assessment_order_id" if vendor == "kombo" else "evaluation_id"
    event["target"][field] = order_id
    error = _reason(b"k", json.dumps(event).encode())
    assert error.code == "schema"
    assert field in error.reason


@pytest.mark.parametrize(
    "integration_id",
    ["workday:ü", "a b", "a|b", "a\tb", "a\x7fb", "日本", "", "x" * 257],
    ids=repr,
)
@pytest.mark.parametrize("kind", ["opened", "packages"])
def test_integration_id_must_be_visible_ascii_without_pipe(kind: str, integration_id: str) -> None:
    event = make_event(kind, target("kombo", "o-1", "placeholder"))
    event["target"]["integration_id"] = integration_id
    key = f"kombo|{integration_id}|o-1".encode("utf-8", "surrogatepass")
    error = _reason(key, json.dumps(event).encode())
    assert error.code == "schema"
    assert "integration_id" in error.reason
    if integration_id and len(integration_id) <= 256:
        assert "visible ASCII" in error.reason


@pytest.mark.parametrize("integration_id", ["workday:HWUTwvyx2wLoSUHphiWVrp28", "a/b", "~!#$%&*"])
def test_visible_ascii_integration_ids_are_accepted(integration_id: str) -> None:
    event = make_event("opened", target("kombo", "o-1", integration_id))
    assert parse(event).key == f"kombo|{integration_id}|o-1"


def _with_surrogate(event: dict, path: list) -> bytes:
    node = event
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = "x\ud800y"
    return json.dumps(event).encode()  # ensure_ascii: the surrogate travels as "\ud800"


@pytest.mark.parametrize(
    ("kind", "vendor", "path"),
    [
        ("opened", "kombo", ["target", "assessment_order_id"]),
        ("opened", "kombo", ["target", "integration_id"]),
        ("opened", "comeet", ["target", "evaluation_id"]),
        ("completed", "kombo", ["summary"]),
        ("completed", "kombo", ["attributes", 0, "label"]),
        ("completed", "kombo", ["kombo_remote_fields", "recruitee", "subtitle"]),
        ("packages", "kombo", ["packages", 0, "id"]),
    ],
)
def test_a_lone_surrogate_anywhere_is_a_schema_error(kind: str, vendor: str, path: list) -> None:
    event = make_event(kind, target(vendor, "o-1", "w:1"))
    if path[0] == "kombo_remote_fields":
        event["kombo_remote_fields"] = {"recruitee": {"subtitle": "ok"}}
    value = _with_surrogate(event, path)
    assert b"\\ud800" in value
    for key in (b"kombo|w:1|o-1", b"comeet|o-1", b"k", None):
        error = _reason(key, value)
        assert error.code == "schema", error.reason
        assert "surrogate" in error.reason


def test_a_lone_surrogate_in_an_object_key_is_a_schema_error() -> None:
    event = make_event("completed", target("kombo", "o-1", "w:1"))
    text = json.dumps(event).replace('"summary"', '"summ\\udc00ary"')
    error = _reason(b"kombo|w:1|o-1", text.encode())
    assert error.code == "schema"
    assert "surrogate" in error.reason


def test_a_surrogate_pair_is_ordinary_text() -> None:
    event = make_event("opened", target("kombo", "o-😀", "w:1"))
    value = json.dumps(event).encode()  # "\ud83d\ude00": a valid pair
    assert b"\\ud83d\\ude00" in value
    assert parse_record("kombo|w:1|o-😀".encode(), value, max_bytes=MAX).key == "kombo|w:1|o-😀"


@pytest.mark.parametrize(
    "t",
    [
        target("comeet", "eval-bad"),
        target("kombo", "ord-42", "workday:ACME1"),
        target("comeet", "a|b 🎉"),  # an evaluation id may hold '|' and any printable text
        target("kombo", "o|r|d", "greenhouse:HW"),
    ],
)
def test_a_records_key_names_the_order_that_order_key_makes(t: dict) -> None:
    key = record(make_event("completed", t))[0]
    assert key is not None
    assert order_key_of_record(key) == key.decode()


def test_a_packages_key_names_its_order() -> None:
    assert order_key_of_record(b"kombo-packages|workday:ACME1") == "kombo-packages|workday:ACME1"


@pytest.mark.parametrize(
    "key",
    [
        None,
        b"",
        b"comeet",
        b"comeet|",
        b"kombo|workday:ACME1",  # no order id
        b"kombo||ord-1",
        b"kombo|work day|ord-1",  # an integration id is key-safe
        b"kombo-packages|",
        b"salesforce|x",
        b"comeet|\xff",  # not UTF-8
        b"comeet|a\nb",  # control characters would reach terminals and logs
        b"comeet|" + b"x" * 5000,
    ],
)
def test_anything_else_names_no_order(key: bytes | None) -> None:
    assert order_key_of_record(key) is None
