"""The operator's views without a broker: partitions, --since, the table, dead-letter filters."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner

from connector.domain.audit import DeadLetter, ReplayMarker, SourceRef
from connector.ops.audit_view import (
    AuditFilter,
    format_header,
    format_row,
    parse_since,
    partition_for_key,
    show_key,
    vendor_of,
)
from connector.ops.dlq import NOT_REPLAYABLE, Letter, LetterFilter, plan_replay, target_of
from connector.ops.order_view import OrderStory, format_story

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("key", ["comeet|c-1", "kombo|workday:ACME1|ord-42", "kombo|w|a|b 🎉"])
@pytest.mark.parametrize("partitions", [1, 4, 6, 12])
def test_partition_for_key_is_kafkas_default_partitioner(key: str, partitions: int) -> None:
    every = list(range(partitions))
    assert partition_for_key(key, partitions) == DefaultPartitioner()(key.encode(), every, every)


def test_partition_for_key_matches_the_java_client() -> None:
    # Java's Utils.toPositive(Utils.murmur2("kombo|workday:ACME1|ord-42".getBytes())) % 6.
    assert partition_for_key("kombo|workday:ACME1|ord-42", 6) == partition_for_key(
        b"kombo|workday:ACME1|ord-42", 6
    )
    assert {partition_for_key(f"comeet|{i}", 6) for i in range(200)} == set(range(6))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - timedelta(seconds=90)),
        ("15m", NOW - timedelta(minutes=15)),
        ("2h", NOW - timedelta(hours=2)),
        ("1d", NOW - timedelta(days=1)),
        ("1w", NOW - timedelta(weeks=1)),
        ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12-01T10:30", datetime(2026, 12, 1, 10, 30, tzinfo=UTC)),
        ("2026-12-01T10:30:00+01:00", datetime(2026, 12, 1, 9, 30, tzinfo=UTC)),
        ("2026-12-01T10:30:00Z", datetime(2026, 12, 1, 10, 30, tzinfo=UTC)),
    ],
)
def test_since_takes_durations_and_times(text: str, expected: datetime) -> None:
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "5 parsecs", "-2h", ""])
def test_since_refuses_anything_else_with_the_forms_it_takes(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_since(text, now=NOW)


LONG_INTEGRATION = "greenhouse:HWUTwvyx2wLoSUHpQ7rT"


def test_a_kombo_key_is_elided_in_the_integration_never_in_the_order_id() -> None:
    for order_id in ("ord-000001", "ord-000002"):
        key = f"kombo|{LONG_INTEGRATION}|{order_id}"
        shown = show_key(key, 30)
        assert len(shown) == 30
        assert shown.startswith("kombo|gre") and shown.endswith(f"|{order_id}")
        assert "…" in shown


def test_an_order_id_wider_than_the_column_is_shown_whole() -> None:
    order_id = "x" * 80
    assert show_key(f"kombo|w:1|{order_id}", 30).endswith(order_id)
    assert show_key(f"comeet|{order_id}", 30) == f"comeet|{order_id}"


def _record(**fields: object) -> dict:
    return {
        "time": "2026-12-02T16:30:49.548651Z",
        "worker_id": "w1",
        "outcome": "delivered",
        "terminal": True,
        "event_type": "order.completed",
        "order_key": f"kombo|{LONG_INTEGRATION}|ord-000001",
        "vendor": "kombo",
        "http_status": 200,
        "attempt": 3,
        "reason": "r" * 300,
        **fields,
    }


@pytest.mark.parametrize("width", [80, 120, 200])
def test_rows_fit_the_terminal_with_date_time_and_the_order_id(width: int) -> None:
    row = format_row(_record(), width)
    assert all(len(line) <= width for line in row.splitlines())
    assert row.startswith("2026-12-02 16:30:49" + (".548 w1" if width >= 120 else " w1"))
    assert "rrrr" in row
    long_id = format_row(_record(order_key="comeet|" + "x" * 50), width)
    assert "comeet|" + "x" * 50 + " " in long_id
    # The row grows by what the key needs beyond its column, no more.
    assert all(len(line) <= max(width, 69 + 57) for line in long_id.splitlines())
    assert "|ord-000001 " in row
    assert format_header(width).splitlines()[0].startswith("time")
    assert all(len(line) <= width for line in format_header(width).splitlines())


def test_rows_name_unknown_fields() -> None:
    row = format_row(_record(reason="", unknown_fields=["target.tenant"]), 200)
    assert row.endswith("unknown fields: target.tenant")


def test_a_whole_order_key_filters_exactly_and_a_part_as_a_substring() -> None:
    key = f"kombo|{LONG_INTEGRATION}|ord-1"
    assert AuditFilter(order=key)(_record(order_key=key))
    assert not AuditFilter(order=key)(_record(order_key=key + "0"))
    assert AuditFilter(order="ord-1")(_record(order_key=key + "0"))


def test_vendor_and_target_of_keys() -> None:
    assert vendor_of("kombo-packages|w:1") == "kombo"
    assert vendor_of("comeet|c") == "comeet"
    assert target_of("kombo|w:1|o|x") == "kombo|w:1"
    assert target_of("kombo-packages|w:1") == "kombo|w:1"
    assert target_of("comeet|c|x") == "comeet"
    assert target_of(None) is None


def _letter(code: str, offset: int, *, key: str = "comeet|c-1", hours: int = 0) -> Letter:
    letter = DeadLetter(
        worker_id="w1",
        code=code,
        reason=code,
        order_key=key,
        event_id=f"e{offset}",
        time=NOW - timedelta(hours=hours),
        original_value_b64=base64.b64encode(b"{}").decode(),
    )
    return Letter(letter, SourceRef(topic="dlq", partition=0, offset=offset))


def _marker(entry: Letter) -> ReplayMarker:
    to = SourceRef(topic="events", partition=0, offset=99)
    return ReplayMarker(by="op@host", letter=entry.position, replayed_to=to, code="x")


def test_letter_filters() -> None:
    old = _letter("permanent", 1, key="kombo|w:1|o-1", hours=5)
    new = _letter("retries_exhausted", 2, key="comeet|c-2", hours=1)
    new.replays.append(_marker(new))
    both = [old, new]

    def pick(**kw: object) -> list[int]:
        f = LetterFilter(**kw)  # type: ignore[arg-type]
        return [e.position.offset for e in both if f(e)]

    assert pick(vendor="kombo") == [1]
    assert pick(target="kombo|w:1") == [1]
    assert pick(target="comeet") == [2]
    assert pick(since=NOW - timedelta(hours=2)) == [2]
    assert pick(until=NOW - timedelta(hours=2)) == [1]
    assert pick(status="open") == [1]
    assert pick(status="replayed") == [2]
    assert pick(order="kombo|w:1|o-1") == [1]
    assert pick(order="kombo|w:1|o") == []  # a whole key is exact
    assert pick(order="o-1") == [1]


def test_an_unreadable_letter_is_found_by_its_kafka_key() -> None:
    junk = Letter(
        DeadLetter(
            worker_id="w1",
            code="not_json",
            reason="not JSON",
            original_key_b64=base64.b64encode(b"kombo|w:1|o-9").decode(),
            original_value_b64=base64.b64encode(b"junk").decode(),
        ),
        SourceRef(topic="dlq", partition=0, offset=3),
    )
    assert junk.key == "kombo|w:1|o-9"
    assert LetterFilter(vendor="kombo", target="kombo|w:1", order="kombo|w:1|o-9")(junk)
    assert not LetterFilter(vendor="comeet")(junk)


def test_replay_refuses_codes_that_cannot_succeed_again_unless_forced() -> None:
    assert {"schema", "not_json", "key_mismatch", "unsupported_version"} <= NOT_REPLAYABLE
    assert not {"permanent", "retries_exhausted", "expired", "internal"} & NOT_REPLAYABLE
    letters = [_letter("schema", 1), _letter("retries_exhausted", 2), _letter("not_json", 3)]
    done = _letter("permanent", 4)
    done.replays.append(_marker(done))
    letters.append(done)
    plan = plan_replay(letters, lambda e: True, force=False, again=False)
    assert [e.position.offset for e in plan.send] == [2]
    assert plan.refused_codes() == {"not_json": 1, "schema": 1}
    assert [e.position.offset for e in plan.already] == [4]
    forced = plan_replay(letters, lambda e: True, force=True, again=True)
    assert [e.position.offset for e in forced.send] == [1, 2, 3, 4]


def test_a_letter_lists_as_replayed_with_its_marker() -> None:
    entry = _letter("retries_exhausted", 7)
    assert entry.to_json()["status"] == "open"
    entry.replays.append(_marker(entry))
    doc = entry.to_json()
    assert doc["status"] == "replayed"
    assert doc["replays"][0]["replayed_to"]["offset"] == 99


def test_an_orders_events_summarise_attempts_and_errors() -> None:
    key = "comeet|c-9"
    base = {"order_key": key, "event_id": "e1", "event_type": "order.completed"}
    story = OrderStory(key)
    story.timeline = [
        {**base, "outcome": "failed", "terminal": False, "attempt": 1, "http_status": 503},
        {**base, "outcome": "parked", "terminal": False, "reason": "circuit open"},
        {**base, "outcome": "failed", "terminal": False, "http_status": 503},
        {**base, "outcome": "delivered", "terminal": True, "http_status": 204},
    ]
    (event,) = story.events()
    assert event["outcome"] == "delivered"
    assert event["attempts"] == 3 and event["parked"]
    assert event["errors"] == ["HTTP 503", "HTTP 503"]
    text = format_story(story, 160)
    assert "e1  completed  delivered  3 attempts, parked on the way" in text
    assert "state    none" in text


def test_publish_names_unknown_fields_and_refuses_an_unknown_major(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector.cli import main
    from tests.factories import make_event

    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("CONNECTOR_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps(make_event("opened") | {"schema_version": "1.2", "team": "x"}))
    with pytest.raises(SystemExit):  # valid: it stops only for want of a broker
        main(["publish", str(newer)])
    assert "event #0: unknown fields, ignored: team" in capsys.readouterr().err
    future = tmp_path / "future.json"
    future.write_text(json.dumps(make_event("opened") | {"schema_version": 2}))
    assert main(["publish", str(future)]) == 2
    assert "major version 2" in capsys.readouterr().err


def test_a_worker_serves_only_the_orders_of_its_partitions() -> None:
    from connector.domain.lifecycle import OrderState, OrderStatus
    from connector.ops.order_view import worker_answer

    state = OrderState(status=OrderStatus.COMPLETED)
    common: dict = {
        "partition": 2,
        "events_topic": "ev",
        "changelog": "app-orders-changelog",
        "worker_id": "w1",
        "owners": {"http://w2:6066": {"app-orders-changelog": [2, 3]}},
        "lookup": lambda raw: state if raw == b"comeet|a/b" else None,
        "rebalancing": False,
    }
    status, body, _ = worker_answer("comeet|a/b", owned={("ev", 2)}, **common)
    assert status == 200 and body["state"]["status"] == "COMPLETED"
    status, body, _ = worker_answer("comeet|x", owned={("ev", 2)}, **common)
    assert status == 404 and "state" not in body
    status, body, headers = worker_answer("comeet|a/b", owned={("ev", 1)}, **common)
    assert status == 307 and body["owner"] == "http://w2:6066"
    assert headers["Location"] == "http://w2:6066/orders/comeet%7Ca%2Fb?partition=2"
    status, body, _ = worker_answer("comeet|a/b", owned={("ev", 1)}, **{**common, "owners": {}})
    assert status == 503 and "no worker owns" in body["error"]
    status, _, _ = worker_answer("comeet|a/b", owned={("ev", 2)}, **{**common, "rebalancing": True})
    assert status == 503


def test_without_a_terminal_the_detail_is_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr("shutil.get_terminal_size", lambda fallback: os.terminal_size(fallback))
    row = format_row(_record())
    assert row.endswith("r" * 300)
    assert "|ord-000001" in row
    assert len(format_header().splitlines()[1]) < 200


@pytest.mark.parametrize("width", [90, 100, 120, 160, 1_000])
def test_worker_ids_fit_their_column(width: int) -> None:
    for worker in ("worker-1", "worker-12", "connector-3"):
        row = format_row(_record(worker_id=worker), width)
        assert f" {worker} " in row, row
    # Longer ids keep their end, where ids like these differ.
    row = format_row(_record(worker_id="assessment-connector-11"), 100)
    assert " …onnector-11 " in row


def test_a_narrow_terminal_keeps_the_end_of_a_worker_id() -> None:
    assert " …ker-1 " in format_row(_record(worker_id="worker-1"), 80)


def test_a_dry_run_with_json_prints_one_json_letter_per_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from connector.ops import dlq
    from connector.settings import Settings

    letters = [_letter("retries_exhausted", 1), _letter("permanent", 2), _letter("schema", 3)]

    async def read_letters(settings: Settings) -> list[Letter]:
        return letters

    monkeypatch.setattr(dlq, "read_letters", read_letters)
    parser = argparse.ArgumentParser()
    dlq.add_dlq_arguments(parser)
    args = parser.parse_args(["replay", "--dry-run", "--json"])
    assert dlq.dlq_command(Settings(), args) == 0
    out, err = capsys.readouterr()
    printed = [json.loads(line) for line in out.splitlines()]
    assert [(d["code"], d["position"]["offset"]) for d in printed] == [
        ("retries_exhausted", 1),
        ("permanent", 2),
    ]
    assert "would replay 2 dead letters" in err
    assert "refused 1" in err
