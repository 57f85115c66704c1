"""The worker's metrics without a worker: series known in advance exist from the start."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from connector.domain.audit import DEAD_LETTER_CODES, DeadLetter
from connector.domain.events import EventType
from connector.infra.metrics import EVENT_OUTCOMES, Metrics

ROOT = Path(__file__).resolve().parents[2]


def _samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def test_a_fresh_worker_serves_every_known_series_at_0() -> None:
    # increase() counts nothing for a series whose first sample is already 1: a dead
    # letter code or a parked event type first seen at 1 would fire no alert.
    samples = _samples(Metrics())
    for code in DEAD_LETTER_CODES:
        assert samples[("connector_dead_letters_total", frozenset({("code", code)}))] == 0
    for event_type in EventType:
        for outcome in EVENT_OUTCOMES:
            labels = frozenset({("event_type", event_type.value), ("outcome", outcome)})
            assert samples[("connector_events_total", labels)] == 0
    for outcome in ("invalid", "dead_lettered"):
        labels = frozenset({("event_type", "unknown"), ("outcome", outcome)})
        assert samples[("connector_events_total", labels)] == 0
    assert ("connector_dead_letters_total", frozenset({("code", "permanent")})) in samples


def test_a_dead_letter_counts_on_its_precreated_series() -> None:
    metrics = Metrics()
    metrics.observe_dead_letter(DeadLetter(worker_id="w", code="not_json", reason="x"))
    samples = _samples(metrics)
    assert samples[("connector_dead_letters_total", frozenset({("code", "not_json")}))] == 1
    assert samples[("connector_dead_letters_total", frozenset({("code", "schema")}))] == 0


def test_every_dead_letter_code_the_connector_writes_is_known_in_advance() -> None:
    written: set[str] = {"invalid_event"}  # InvalidEventError's default code
    sources = [ROOT / "connector" / name for name in ("domain/events.py", "errors.py")]
    sources += sorted((ROOT / "connector" / "pipeline").glob("*.py"))
    for path in sources:
        source = path.read_text(encoding="utf-8")
        written |= set(re.findall(r'\bcode\s*=\s*"([a-z_]+)"', source))
        written |= set(re.findall(r'dead_lettered\(\s*job,\s*"([a-z_]+)"', source))
        written |= set(re.findall(r'"([a-z_]+)" if isinstance\(error', source))
        written |= set(re.findall(r'else "([a-z_]+)"\n', source))
    assert {"not_json", "permanent", "retries_exhausted", "expired", "internal"} <= written
    assert written <= set(DEAD_LETTER_CODES)
