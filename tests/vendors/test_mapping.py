"""Vendor mappings are pure: exact bodies per event type, and every contract limit."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from connector import vendors
from connector.domain.events import ComeetTarget, KomboTarget, Score, event_adapter
from connector.errors import InvalidEventError, MappingError
from connector.vendors import comeet, kombo, map_event
from connector.vendors.comeet import to_comeet_score
from connector.vendors.kombo import format_completed_at
from tests.factories import PDF_B64, make_event, target


def mapped(kind: str, vendor: str, **overrides):
    tgt = target(vendor, "o-1", "workday:ACME1")
    return map_event(event_adapter.validate_python(make_event(kind, tgt, **overrides)))


def test_kombo_completed_body() -> None:
    request = mapped("completed", "kombo")
    assert (request.method, request.path) == ("PUT", "/assessment/orders/o-1/result")
    assert request.headers == {"X-Integration-Id": "workday:ACME1"}
    assert request.body == {
        "status": "COMPLETED",
        "result_url": "https://vendor.example/results/1",
        "completed_at": "2026-11-23T11:00:00.456Z",
        "score": 90.0,
        "max_score": 100.0,
        "attributes": [
            {"type": "TEXT", "label": "Outcome", "value": "passed"},
            {"type": "TEXT", "label": "Summary", "value": "Performed well."},
            {
                "type": "SUB_RESULT",
                "id": "algo",
                "label": "Algorithms",
                "score": {"value": 8.0, "max": 10.0},
                "status": "COMPLETED",
            },
            {"type": "TEXT", "label": "Code style", "value": "completed: Readable."},
            {"type": "TEXT", "label": "Role fit", "value": "Excellent"},
        ],
        "attachments": [{"name": "Report.pdf", "content_type": "application/pdf", "data": PDF_B64}],
    }


def test_kombo_interim_and_cancelled_bodies() -> None:
    assert mapped("opened", "kombo").body == {
        "status": "OPEN",
        "result_url": "https://vendor.example/tests/1",
    }
    assert mapped("progress", "kombo").body["attributes"] == [
        {"type": "TEXT", "label": "Status", "value": "Test started"}
    ]
    cancelled = mapped("cancelled", "kombo").body
    assert cancelled["status"] == "CANCELLED"
    assert cancelled["completed_at"] == "2026-11-23T10:00:00.123Z"  # occurred_at
    assert cancelled["attributes"][0]["value"].startswith("Expired: The candidate")


def test_kombo_packages_body() -> None:
    request = mapped("packages", "kombo")
    assert (request.method, request.path) == ("PUT", "/assessment/packages")
    assert request.body == {
        "packages": [
            {
                "id": "1001",
                "type": "SKILLS_TEST",
                "name": "TypeScript",
                "description": "TypeScript coding skills assessments",
            }
        ]
    }


def test_kombo_requires_result_url() -> None:
    with pytest.raises(MappingError, match="result_url is required"):
        mapped("opened", "kombo", result_url=None)


def test_kombo_sub_result_max_below_one_breaks_contract() -> None:
    sub = [{"id": "a", "label": "A", "score": {"value": 0.2, "max": 0.5}}]
    with pytest.raises(MappingError, match="greater than or equal to 1"):
        mapped("completed", "kombo", sub_results=sub)


def test_kombo_unknown_remote_field_breaks_contract() -> None:
    with pytest.raises(MappingError, match="kombo contract"):
        mapped("completed", "kombo", kombo_remote_fields={"lever": {"x": 1}})
    ok = mapped("completed", "kombo", kombo_remote_fields={"smartrecruiters": {"scoreLabel": "A+"}})
    assert ok.body["remote_fields"] == {"smartrecruiters": {"scoreLabel": "A+"}}


def test_comeet_completed_body() -> None:
    request = mapped("completed", "comeet")
    assert (request.method, request.path, request.params) == (
        "POST",
        "/evaluation/status",
        {"evaluation_id": "o-1"},
    )
    assert request.body == {
        "status": "completed",
        "outcome": "passed",
        "score": 4.6,
        "summary": "Performed well.",
        "criteria": [
            {"title": "Algorithms", "notes": "Solid.", "score": 4.2, "group": "Exercise 1"},
            {"title": "Code style", "notes": "Readable."},
            {"title": "Role fit", "notes": "Excellent", "group": "Details"},
        ],
        "url_for_users": "https://vendor.example/results/1",
        "url_for_non_users": "https://vendor.example/results/1?token=abc",
    }


def test_comeet_interim_bodies_have_no_outcome() -> None:
    assert mapped("opened", "comeet").body == {
        "status": "Assessment sent",
        "url_for_users": "https://vendor.example/tests/1",
    }
    assert mapped("progress", "comeet").body["status"] == "Test started"
    assert "outcome" not in mapped("progress", "comeet").body


def test_comeet_expiry_completes_with_review_and_explains() -> None:
    body = mapped("cancelled", "comeet").body
    assert body["status"] == "completed" and body["outcome"] == "review"
    assert body["summary"] == (
        "Test expired: The candidate did not complete the test within 7 days."
    )


@pytest.mark.parametrize(
    ("kind", "overrides", "fragment"),
    [
        ("progress", {"status_text": "x" * 41}, "status: String should have at most 40"),
        ("completed", {"summary": "x" * 2001}, "summary: String should have at most 2000"),
        (
            "completed",
            {"sub_results": [{"id": "a", "label": "A", "notes": "n" * 501}]},
            "criteria.0.notes",
        ),
        (
            "completed",
            {"sub_results": [{"id": "a", "label": "A", "group": "g" * 201}]},
            "criteria.0.group",
        ),
    ],
)
def test_comeet_limits(kind: str, overrides: dict, fragment: str) -> None:
    with pytest.raises(MappingError, match=fragment.replace(".", r"\.")):
        mapped(kind, "comeet", **overrides)


@pytest.mark.parametrize(
    ("value", "maximum", "expected"),
    [(0, 100, 1.0), (100, 100, 5.0), (50, 100, 3.0), (3.5, 5, 3.8), (1, 3, 2.33)],
)
def test_score_scale(value: float, maximum: float, expected: float) -> None:
    assert to_comeet_score(Score(value=value, max=maximum)) == expected


def test_completed_at_format_is_utc_millis_z() -> None:
    from datetime import datetime, timedelta, timezone

    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    assert format_completed_at(moment) == "2026-01-02T01:04:05.678Z"


@pytest.mark.parametrize(
    ("order_id", "segment"),
    [
        ("a/b?c#d%2F..", "a%2Fb%3Fc%23d%252F.."),
        (".", "%2E"),
        ("..", "%2E%2E"),
        ("...", "..."),
        ("ü-ñ 日本", "%C3%BC-%C3%B1%20%E6%97%A5%E6%9C%AC"),
        ("a|b", "a%7Cb"),
        ("a+b&c=d;e", "a%2Bb%26c%3Dd%3Be"),
        ("o-1_x.y~z", "o-1_x.y~z"),
    ],
)
def test_kombo_order_id_is_one_percent_encoded_path_segment(order_id: str, segment: str) -> None:
    request = map_event(
        event_adapter.validate_python(make_event("opened", target("kombo", order_id, "w:1")))
    )
    assert request.path == f"/assessment/orders/{segment}/result"
    assert request.headers == {"X-Integration-Id": "w:1"}


@pytest.mark.parametrize("evaluation_id", ["a&b=c#d+e%20f", "ü-ñ 日本", "..", "a/b"])
def test_comeet_evaluation_id_is_a_query_parameter_as_is(evaluation_id: str) -> None:
    # httpx encodes query parameters (tests/vendors/test_clients.py checks it on the wire).
    request = map_event(
        event_adapter.validate_python(make_event("opened", target("comeet", evaluation_id)))
    )
    assert (request.path, request.params) == (
        "/evaluation/status",
        {"evaluation_id": evaluation_id},
    )


# -- exhaustive: an unknown event type or vendor is refused, never sent as OPEN ----------

KOMBO = KomboTarget(vendor="kombo", integration_id="workday:ACME1", assessment_order_id="o-1")
COMEET = ComeetTarget(vendor="comeet", evaluation_id="e-1")


def unknown_type(target: Any) -> Any:
    """An event of a type this code does not know (as a newer schema might bring)."""
    return SimpleNamespace(
        type="order.reopened",
        event_id="evt-1",
        target=target,
        result_url="https://vendor.example/tests/1",
    )


@pytest.mark.parametrize(
    ("mapper", "tgt"),
    [(kombo.map_event, KOMBO), (comeet.map_event, COMEET), (vendors.map_event, KOMBO)],
    ids=["kombo", "comeet", "dispatch"],
)
def test_an_unknown_event_type_is_never_mapped_as_an_open_update(mapper, tgt) -> None:
    with pytest.raises(AssertionError):
        mapper(unknown_type(tgt))


def test_an_unknown_vendor_is_a_typed_permanent_error_never_kombo() -> None:
    # Kombo's fields, another vendor's name: it once fell through to Kombo's mapping.
    tgt = SimpleNamespace(vendor="zeta", integration_id="w:1", assessment_order_id="o-1")
    event = SimpleNamespace(type="order.opened", target=tgt, result_url="https://x.example/")
    with pytest.raises(InvalidEventError) as raised:  # dead-lettered, never retried
        vendors.map_event(event)
    assert raised.value.code == "unknown_vendor"
