"""Issue 7: a corpus of bad inputs through the real broker. Each is dead-lettered with a
specific reason, the worker keeps running, and the valid events between them are delivered."""

from __future__ import annotations

import base64
import json

import pytest

from connector.sandbox import Sandboxes
from tests.e2e.harness import Deployment, terminal_by_event
from tests.factories import PDF_B64, make_event, record, target

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

LIMIT = 200_000  # small, so the oversized case stays cheap
KOMBO = target("kombo", "k-bad", "greenhouse:BAD1")
COMEET = target("comeet", "c-bad")


def completed(**change: object) -> dict:
    return make_event("completed", KOMBO) | change


def comeet_completed(**change: object) -> dict:
    return make_event("completed", COMEET) | change


def _raw(document: dict, key: bytes | None = None) -> tuple[bytes | None, bytes]:
    return (
        record(make_event("opened", document["target"]))[0] if key is None else key,
        json.dumps(document).encode(),
    )


def corpus() -> list[tuple[str, bytes | None, bytes, str, str]]:
    """(name, key, value, expected dead-letter code, fragment of the reason)."""
    kkey = b"kombo|greenhouse:BAD1|k-bad"
    good = completed()
    text = json.dumps(good)
    cases: list[tuple[str, bytes | None, bytes, str, str]] = [
        ("not json", kkey, b"hello", "not_json", "not valid JSON"),
        ("truncated json", kkey, text[: len(text) // 2].encode(), "not_json", "not valid JSON"),
        ("empty value", kkey, b"", "not_json", "not valid JSON"),
        ("json array", kkey, b"[]", "not_object", "must be a JSON object"),
        ("json string", kkey, b'"order"', "not_object", "must be a JSON object"),
        ("invalid utf-8", kkey, b'{"type": "\xff"}', "not_utf8", "not valid UTF-8"),
        ("deeply nested", kkey, b'{"a":' * 1000 + b"1" + b"}" * 1000, "too_deep", "nested deeper"),
        (
            "oversized",
            kkey,
            b'{"pad": "' + b"x" * (LIMIT + 10) + b'"}',
            "too_large",
            f"above the {LIMIT}-byte limit",
        ),
        (
            "NaN score",
            kkey,
            text.replace('"value": 90', '"value": NaN').encode(),
            "not_json",
            "NaN",
        ),
        (
            "Infinity score",
            kkey,
            text.replace('"value": 90', '"value": Infinity').encode(),
            "not_json",
            "Infinity",
        ),
        (
            "unknown type",
            kkey,
            json.dumps(good | {"type": "order.exploded"}).encode(),
            "unknown_type",
            "unknown event type 'order.exploded'",
        ),
        (
            "missing type",
            kkey,
            json.dumps({k: v for k, v in good.items() if k != "type"}).encode(),
            "unknown_type",
            "unknown event type",
        ),
        (
            "missing target",
            kkey,
            json.dumps({k: v for k, v in good.items() if k != "target"}).encode(),
            "schema",
            "target: Field required",
        ),
        (
            "unknown vendor",
            kkey,
            json.dumps(good | {"target": {"vendor": "workday"}}).encode(),
            "schema",
            "target",
        ),
        (
            "missing event id",
            kkey,
            json.dumps({k: v for k, v in good.items() if k != "event_id"}).encode(),
            "schema",
            "event_id: Field required",
        ),
        ("wrong type for score", *_raw(completed(score="high")), "schema", "score"),
        (
            "score above max",
            *_raw(completed(score={"value": 101, "max": 100})),
            "schema",
            "above its max",
        ),
        (
            "negative score",
            *_raw(completed(score={"value": -5, "max": 100})),
            "schema",
            "score.value",
        ),
        ("malformed date", *_raw(completed(completed_at="23/11/2026")), "schema", "completed_at"),
        (
            "naive date",
            *_raw(completed(occurred_at="2026-11-23T10:00:00")),
            "schema",
            "occurred_at",
        ),
        ("bad outcome", *_raw(completed(outcome="maybe")), "schema", "outcome"),
        (
            "six attachments",
            *_raw(
                completed(
                    attachments=[
                        {"name": f"r{i}.pdf", "content_type": "application/pdf", "data": PDF_B64}
                        for i in range(6)
                    ]
                )
            ),
            "schema",
            "at most 5",
        ),
        (
            "invalid base64",
            *_raw(
                completed(
                    attachments=[
                        {"name": "r.pdf", "content_type": "application/pdf", "data": "***"}
                    ]
                )
            ),
            "schema",
            "not valid base64",
        ),
        (
            "generic content type",
            *_raw(
                completed(
                    attachments=[
                        {
                            "name": "r.bin",
                            "content_type": "application/octet-stream",
                            "data": PDF_B64,
                        }
                    ]
                )
            ),
            "schema",
            "generic",
        ),
        (
            "content type pattern",
            *_raw(
                completed(
                    attachments=[{"name": "r.pdf", "content_type": "pdf file", "data": PDF_B64}]
                )
            ),
            "schema",
            "content_type",
        ),
        (
            "attachment without source",
            *_raw(completed(attachments=[{"name": "r.pdf"}])),
            "schema",
            "exactly one of data",
        ),
        # Producers evolve (issue 14 item 3): an unknown field is accepted (see the valid
        # events below); an unknown major version is its own dead letter.
        (
            "unknown major version",
            *_raw(completed(schema_version="2.0", surprise=True)),
            "unsupported_version",
            "major version 2",
        ),
        (
            "unknown major version, nothing else known",
            kkey,
            b'{"schema_version": 3, "kind": "order.finished.v3"}',
            "unsupported_version",
            "this connector reads major version 1",
        ),
        (
            "malformed version",
            *_raw(completed(schema_version="one")),
            "schema",
            "schema_version",
        ),
        (
            "key mismatch",
            b"kombo|greenhouse:BAD1|someone-else",
            text.encode(),
            "key_mismatch",
            "does not match the event's target",
        ),
        ("missing key", None, text.encode(), "key_missing", "record has no key"),
        (
            "status over 40",
            *_raw(make_event("progress", COMEET, status_text="s" * 41)),
            "contract_violation",
            "status: String should have at most 40 characters",
        ),
        (
            "summary over 2000",
            *_raw(comeet_completed(summary="s" * 2001)),
            "contract_violation",
            "summary: String should have at most 2000 characters",
        ),
        (
            "notes over 500",
            *_raw(comeet_completed(sub_results=[{"id": "a", "label": "A", "notes": "n" * 501}])),
            "contract_violation",
            "criteria.0.notes",
        ),
        (
            "kombo without result_url",
            *_raw(make_event("opened", KOMBO, result_url=None)),
            "contract_violation",
            "result_url is required",
        ),
        (
            "kombo sub-result max below 1",
            *_raw(
                completed(
                    sub_results=[{"id": "a", "label": "A", "score": {"value": 0.1, "max": 0.5}}]
                )
            ),
            "contract_violation",
            "max",
        ),
        (
            "unknown remote field",
            *_raw(completed(kombo_remote_fields={"lever": {}})),
            "contract_violation",
            "remote_fields",
        ),
        (
            "bad base64 in valid-looking json",
            kkey,
            json.dumps(
                completed(
                    attachments=[
                        {
                            "name": "x.pdf",
                            "content_type": "application/pdf",
                            "data": base64.b64encode(b"x").decode() + "!",
                        }
                    ]
                )
            ).encode(),
            "schema",
            "base64",
        ),
    ]
    return cases


async def test_corpus_of_bad_inputs(deployment: Deployment, sandboxes: Sandboxes) -> None:
    cases = corpus()
    assert len(cases) >= 30
    valid = [make_event("completed", target("comeet", f"c-ok-{i}")) for i in range(len(cases))]
    # Every other valid event comes from a producer on a newer minor version.
    for event in valid[::2]:
        event |= {"schema_version": "1.4", "surprise": True}
    records: list[tuple[bytes | None, bytes]] = []
    for (_, key, value, _, _), event in zip(cases, valid, strict=True):
        records.append((key, value))
        records.append(record(event))  # a valid event after every bad one
    deployment.worker(CONNECTOR_KAFKA__MAX_MESSAGE_BYTES=str(LIMIT))
    positions = await deployment.publish_raw(records)
    audit = await deployment.audit_until_terminal(
        [e["event_id"] for e in valid], invalid=len(cases), timeout=120
    )
    assert all(
        v == ["delivered"]
        for k, v in terminal_by_event(audit).items()
        if k.startswith("evt-") and k in {e["event_id"] for e in valid}
    )
    letters = await deployment.read(deployment.dlq_topic, lambda rs: len(rs) >= len(cases))
    by_position = {(lt["source"]["partition"], lt["source"]["offset"]): lt for lt in letters}
    assert len(by_position) == len(cases)
    problems = []
    for (name, _, _, code, fragment), position in zip(cases, positions[::2], strict=True):
        letter = by_position.get(position)
        if letter is None:
            problems.append(f"{name}: no dead letter")
        elif letter["code"] != code or fragment not in letter["reason"]:
            problems.append(f"{name}: got {letter['code']}: {letter['reason']}")
    assert not problems, "\n".join(problems)
    # The valid events all reached Comeet, in spite of everything around them.
    reached = [e for e in sandboxes.comeet.recorded() if e["status_code"] == 204]
    assert len(reached) == len(valid)
    assert not any("surprise" in json.dumps(e["body"]) for e in reached)  # never sent
    newer = {e["event_id"] for e in valid[::2]}
    listed = {
        r["event_id"]: r["unknown_fields"]
        for r in audit
        if r["terminal"] and r["event_id"] in newer
    }
    assert listed == {event_id: ["surprise"] for event_id in newer}
