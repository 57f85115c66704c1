"""Resilience invariants, computed from what the test published, the audit topic, the
dead-letter topic and the sandboxes' recorded requests.

Pieces:

* :class:`Ledger`: every record a test publishes (valid events and raw bad records), with
  the Kafka position it got, the order it belongs to and the exact vendor body it maps to.
* :class:`Publisher`: publishes through one producer into a ledger, all at once or paced.
* :class:`Follower`: tails the audit and dead-letter topics incrementally, so a test can wait
  for "a third of the records ended" without re-reading the topics from the start.
* :func:`check` -> :class:`Report`: the counts (sent, delivered, dead-lettered, rejected,
  duplicates, out-of-order, regressions, lost, ...) plus the per-event details behind them.

A received request is matched to its event by the sandbox record key (Kombo
``"<integration>/<order>"`` or the integration id for packages, the Comeet evaluation id) and
the request body, which :func:`connector.vendors.map_event` makes deterministic; the ledger
refuses two events of one target with the same body, so the match is unambiguous.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from connector.domain.events import ComeetTarget, KomboTarget, event_adapter
from connector.errors import MappingError
from connector.local.worker import WorkerProcess
from connector.sandbox import Sandboxes
from connector.vendors import map_event
from tests.factories import make_event, target

if TYPE_CHECKING:
    from tests.e2e.harness import Deployment

__all__ = [
    "FAST_GROUP",
    "KOMBO_INTEGRATIONS",
    "Follower",
    "Ledger",
    "Publisher",
    "Report",
    "Sent",
    "assert_invariants",
    "check",
    "committed_offsets",
    "follower_for",
    "in_rounds",
    "lifecycle",
    "log_excerpt",
    "mixed_orders",
    "publisher_for",
    "received",
    "record_report",
    "start",
]

KOMBO_FINAL = frozenset({"COMPLETED", "CANCELLED"})
COMEET_FINAL = "completed"
Source = tuple[int, int]  # (partition, offset) of an input record
SandboxKey = tuple[str, str]  # (vendor, record key in the sandbox log)


def canonical(body: Any) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# -- what was published ------------------------------------------------------------------------


@dataclass
class Sent:
    """One published record."""

    key: bytes | None
    value: bytes
    event_id: str | None = None  # None for a record that is not a valid event
    label: str = "valid"  # the planted case, for the scenario's own expectations
    partition: int | None = None
    offset: int | None = None
    sent_at: float | None = None  # time.time() when handed to the producer

    @property
    def source(self) -> Source | None:
        if self.partition is None or self.offset is None:
            return None
        return (self.partition, self.offset)


@dataclass
class EventInfo:
    event_id: str
    type: str
    order_key: str
    sandbox_key: SandboxKey | None  # None: never sent (the mapping refuses it)
    index: int  # position among the order's published events (first publication)
    status: str | None  # the vendor status in the body (None for packages)
    final: bool


class Ledger:
    """Every record a test publishes, in publication order."""

    def __init__(self) -> None:
        self.records: list[Sent] = []
        self.events: dict[str, EventInfo] = {}
        self._bodies: dict[tuple[SandboxKey, str], str] = {}
        self._per_order: dict[str, int] = defaultdict(int)

    def event(self, event: dict[str, Any], label: str = "valid") -> Sent:
        """Register a valid event (again, for a planted duplicate) and return its record."""
        model = event_adapter.validate_python(event)
        event_id = model.event_id
        if event_id not in self.events:
            self.events[event_id] = self._describe(model)
        sent = Sent(model.key.encode(), json.dumps(event).encode(), event_id, label)
        self.records.append(sent)
        return sent

    def raw(self, key: bytes | None, value: bytes, label: str) -> Sent:
        """Register a record that is not a valid event (bad JSON, wrong key, ...)."""
        sent = Sent(key, value, None, label)
        self.records.append(sent)
        return sent

    def _describe(self, model: Any) -> EventInfo:
        order = model.key
        index = self._per_order[order]
        self._per_order[order] = index + 1
        try:
            request = map_event(model)
        except MappingError:
            return EventInfo(model.event_id, str(model.type), order, None, index, None, False)
        target = model.target
        if isinstance(target, KomboTarget):
            sandbox_key: SandboxKey = (
                "kombo",
                f"{target.integration_id}/{target.assessment_order_id}",
            )
        elif isinstance(target, ComeetTarget):
            sandbox_key = ("comeet", target.evaluation_id)
        else:
            sandbox_key = ("kombo", target.integration_id)
        status = request.body.get("status")
        final = (
            status in KOMBO_FINAL if request.vendor == "kombo" else status == COMEET_FINAL
        ) and status is not None
        identity = (sandbox_key, canonical(request.body))
        other = self._bodies.setdefault(identity, model.event_id)
        if other != model.event_id:
            raise ValueError(
                f"events {other} and {model.event_id} map to the same request to "
                f"{sandbox_key}: make their content differ so requests can be told apart"
            )
        return EventInfo(model.event_id, str(model.type), order, sandbox_key, index, status, final)

    def event_of(self, vendor: str, key: str | None, body: Any) -> str | None:
        if key is None:
            return None
        return self._bodies.get(((vendor, key), canonical(body)))

    def by_source(self) -> dict[Source, Sent]:
        return {s.source: s for s in self.records if s.source is not None}


class Publisher:
    """One producer that publishes into a :class:`Ledger` (acks=all, positions recorded)."""

    def __init__(self, bootstrap: str, topic: str, ledger: Ledger, **client_config: Any) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            max_request_size=4_000_000,
            linger_ms=5,
            request_timeout_ms=120_000,
            **client_config,
        )
        self.topic = topic
        self.ledger = ledger

    async def __aenter__(self) -> Publisher:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(self, records: Iterable[Sent]) -> None:
        """Publish ``records`` as fast as the producer takes them; returns once all are acked."""
        pending = []
        for sent in records:
            sent.sent_at = time.time()
            future = await self._producer.send(self.topic, sent.value, key=sent.key)
            pending.append((sent, future))
        await self._settle(pending)

    async def send_paced(self, records: Sequence[Sent], rate_per_s: float) -> None:
        """Publish ``records`` at a steady ``rate_per_s`` (each one sent on its own tick)."""
        start = time.monotonic()
        pending = []
        for i, sent in enumerate(records):
            delay = start + i / rate_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent.sent_at = time.time()
            future = await self._producer.send(self.topic, sent.value, key=sent.key)
            pending.append((sent, future))
            if len(pending) >= 200:
                await self._settle(pending)
                pending = []
        await self._settle(pending)

    @staticmethod
    async def _settle(pending: list[tuple[Sent, Any]]) -> None:
        for sent, future in pending:
            metadata = await future
            sent.partition, sent.offset = metadata.partition, metadata.offset


def publisher_for(deployment: Deployment, ledger: Ledger) -> Publisher:
    return Publisher(
        deployment.bootstrap, deployment.events_topic, ledger, **deployment.client_config
    )


def follower_for(deployment: Deployment) -> Follower:
    return Follower(
        deployment.bootstrap,
        deployment.audit_topic,
        deployment.dlq_topic,
        deployment.events_topic,
        **deployment.client_config,
    )


async def committed_offsets(deployment: Deployment) -> dict[int, int]:
    """The consumer group's committed offset per partition of the events topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=deployment.bootstrap, **deployment.client_config)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(deployment.env["CONNECTOR_APP_ID"])
    finally:
        await admin.close()
    return {
        tp.partition: meta.offset
        for tp, meta in offsets.items()
        if tp.topic == deployment.events_topic and meta.offset >= 0
    }


# -- following the audit and dead-letter topics --------------------------------------------------


class Follower:
    """Reads the audit and dead-letter topics from the start, incrementally."""

    def __init__(
        self,
        bootstrap: str,
        audit_topic: str,
        dlq_topic: str,
        events_topic: str,
        **client_config: Any,
    ) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            request_timeout_ms=60_000,
            **client_config,
        )
        self.audit_topic, self.dlq_topic, self.events_topic = audit_topic, dlq_topic, events_topic
        self.audit: list[dict[str, Any]] = []
        self.dlq: list[dict[str, Any]] = []
        self.terminal_sources: set[Source] = set()
        self.dlq_sources: set[Source] = set()
        self.terminal_count = 0

    async def __aenter__(self) -> Follower:
        await self._consumer.start()
        self._consumer.subscribe([self.audit_topic, self.dlq_topic])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def poll(self, timeout_ms: int = 200) -> int:
        """Read what is there; returns the number of new records."""
        batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=20_000)
        new = 0
        for tp, messages in batch.items():
            for message in messages:
                new += 1
                record = json.loads(message.value)
                source = _source_of(record, self.events_topic)
                if tp.topic == self.audit_topic:
                    self.audit.append(record)
                    if record.get("terminal"):
                        self.terminal_count += 1
                        if source is not None:
                            self.terminal_sources.add(source)
                else:
                    self.dlq.append(record)
                    if source is not None:
                        self.dlq_sources.add(source)
        return new

    def ended(self, ledger: Ledger) -> int:
        """How many of the ledger's published records have a terminal audit or DLQ record."""
        ended = self.terminal_sources | self.dlq_sources
        return sum(1 for s in ledger.records if s.source is not None and s.source in ended)

    async def wait(self, condition: Callable[[Follower], bool], timeout: float) -> bool:
        """Poll until ``condition(self)`` holds (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while True:
            await self.poll()
            if condition(self):
                return True
            if time.monotonic() >= deadline:
                return False

    async def wait_all_ended(
        self,
        ledger: Ledger,
        timeout: float,
        settle_s: float = 1.0,
        give_up: Callable[[], bool] | None = None,
    ) -> bool:
        """Until every published record ended (or ``give_up()``); then read ``settle_s`` more
        for late records. True if every record ended."""
        total = sum(1 for s in ledger.records if s.source is not None)
        await self.wait(
            lambda f: f.ended(ledger) >= total or (give_up is not None and give_up()), timeout
        )
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            await self.poll(100)
        return self.ended(ledger) >= total

    async def lag(self) -> dict[int, int]:
        """Audit records per partition not read yet (0 everywhere = caught up)."""
        partitions = self._consumer.partitions_for_topic(self.audit_topic) or set()
        tps = [TopicPartition(self.audit_topic, p) for p in partitions]
        ends = await self._consumer.end_offsets(tps)
        return {tp.partition: ends[tp] - await self._consumer.position(tp) for tp in tps}


def _source_of(record: dict[str, Any], events_topic: str) -> Source | None:
    source = record.get("source")
    if not source or source.get("topic") != events_topic:
        return None
    return (source["partition"], source["offset"])


# -- the report ------------------------------------------------------------------------------


@dataclass
class Report:
    records_sent: int = 0  # every published record, valid or not, duplicates included
    events_sent: int = 0  # distinct valid event ids
    invalid_sent: int = 0  # records that are not valid events
    delivered: int = 0  # event ids with a terminal 'delivered'
    dead_lettered: int = 0  # records with a terminal 'dead_lettered' (or only a DLQ record)
    rejected: int = 0  # records with a terminal 'rejected'
    duplicate_outcomes: int = 0  # terminal 'duplicate' audit records
    redelivered_events: int = 0  # events the sandbox accepted (2xx) more than once
    extra_vendor_receipts: int = 0  # 2xx receipts beyond the first, summed over events
    duplicates: int = 0  # duplicate_outcomes + redelivered_events
    reprocessed_records: int = 0  # records with more than one terminal audit record
    out_of_order: int = 0  # events first accepted by the vendor after a later event of the order
    regressions: int = 0  # accepted_regressions + refused_regressions
    accepted_regressions: int = 0  # 2xx for another status after a final one
    refused_regressions: int = 0  # 400 status-change refusals (the connector tried one)
    other_vendor_4xx: int = 0  # 4xx on a known body that is not a refused status change
    unaudited_deliveries: int = 0  # accepted by the vendor, yet no terminal 'delivered' record
    phantom_deliveries: int = 0  # audited 'delivered', yet the vendor never accepted it
    unmatched_requests: int = 0  # recorded requests matching no published event
    vendor_requests: int = 0  # requests the sandboxes recorded (retries and faults included)
    lost: int = 0  # records with neither a terminal audit record nor a DLQ record
    elapsed_s: float | None = None
    details: dict[str, Any] = field(default_factory=dict, repr=False)

    def counts(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "details"}

    def summary(self) -> str:
        return (
            f"records sent {self.records_sent} (events {self.events_sent}, invalid "
            f"{self.invalid_sent}), delivered {self.delivered}, dead-lettered "
            f"{self.dead_lettered}, rejected {self.rejected}, duplicates {self.duplicates} "
            f"(outcomes {self.duplicate_outcomes}, vendor redeliveries "
            f"{self.redelivered_events}), reprocessed {self.reprocessed_records}, out-of-order "
            f"{self.out_of_order}, regressions {self.regressions} (refused "
            f"{self.refused_regressions}), lost {self.lost}, unaudited deliveries "
            f"{self.unaudited_deliveries}, phantom deliveries {self.phantom_deliveries}, "
            "vendor requests "
            f"{self.vendor_requests}, unmatched {self.unmatched_requests}"
        )


def check(
    ledger: Ledger,
    audit: Sequence[dict[str, Any]],
    dlq: Sequence[dict[str, Any]],
    requests: Iterable[dict[str, Any]],
    events_topic: str,
) -> Report:
    """Compute the report. ``requests``: ``sb.kombo.recorded() + sb.comeet.recorded()``."""
    report = Report()
    report.records_sent = len(ledger.records)
    report.events_sent = len(ledger.events)
    report.invalid_sent = sum(1 for s in ledger.records if s.event_id is None)

    # -- audit and dead letters, per input record ----------------------------------------
    terminal_by_source: dict[Source, list[str]] = defaultdict(list)
    terminal_by_event: dict[str, list[str]] = defaultdict(list)
    for r in audit:
        if not r.get("terminal"):
            continue
        if r.get("event_id"):
            terminal_by_event[r["event_id"]].append(r["outcome"])
        source = _source_of(r, events_topic)
        if source is not None:
            terminal_by_source[source].append(r["outcome"])
    dlq_sources = {s for s in (_source_of(d, events_topic) for d in dlq) if s is not None}

    lost: list[dict[str, Any]] = []
    unpublished = 0
    outcome_of_record: dict[Source, str] = {}
    for sent in ledger.records:
        source = sent.source
        if source is None:
            unpublished += 1
            continue
        outcomes = terminal_by_source.get(source, [])
        if outcomes:
            outcome_of_record[source] = outcomes[0]
        elif source in dlq_sources:
            outcome_of_record[source] = "dead_lettered"
        else:
            lost.append({"event_id": sent.event_id, "label": sent.label, "source": source})
        if len(outcomes) > 1:
            report.reprocessed_records += 1
    report.lost = len(lost) + unpublished
    per_outcome = Counter(outcome_of_record.values())
    report.dead_lettered = per_outcome["dead_lettered"]
    report.rejected = per_outcome["rejected"]
    report.delivered = sum(1 for outs in terminal_by_event.values() if "delivered" in outs)
    report.duplicate_outcomes = sum(
        1 for outs in terminal_by_source.values() for o in outs if o == "duplicate"
    )

    # -- the vendors' view, per order ------------------------------------------------------
    receipts: Counter[str] = Counter()
    first_ok_at: dict[str, float] = {}
    first_sequence: dict[SandboxKey, list[str]] = defaultdict(list)
    final_status: dict[SandboxKey, str] = {}
    regressions: list[dict[str, Any]] = []
    other_4xx: list[dict[str, Any]] = []
    unmatched: list[dict[str, Any]] = []
    out_of_order: list[dict[str, Any]] = []
    entries = sorted(requests, key=lambda e: (e["vendor"], e["index"]))
    report.vendor_requests = len(entries)
    for entry in entries:
        event_id = ledger.event_of(entry["vendor"], entry["key"], entry["body"])
        if event_id is None:
            unmatched.append(_brief(entry))
            continue
        info = ledger.events[event_id]
        assert info.sandbox_key is not None
        code = entry["status_code"]
        if not isinstance(code, int):  # "dropped": never processed
            continue
        order = info.sandbox_key
        final = final_status.get(order)
        changes_final = final is not None and info.status is not None and info.status != final
        if 200 <= code < 300:
            receipts[event_id] += 1
            if receipts[event_id] == 1:
                first_ok_at[event_id] = entry["received_at"]
                first_sequence[order].append(event_id)
            if changes_final:
                regressions.append({"accepted": True, "event_id": event_id, **_brief(entry)})
            if info.final and final is None:
                final_status[order] = info.status or ""
        elif code == 400 and changes_final:
            regressions.append({"accepted": False, "event_id": event_id, **_brief(entry)})
        elif 400 <= code < 500 and code not in (404, 408, 425, 429):
            other_4xx.append({"event_id": event_id, **_brief(entry)})
    for order, sequence in first_sequence.items():
        highest = -1
        for event_id in sequence:
            index = ledger.events[event_id].index
            if index < highest:
                out_of_order.append({"order": order, "event_id": event_id, "sequence": sequence})
            highest = max(highest, index)
    unaudited = [
        {"event_id": e, "terminal": terminal_by_event.get(e, [])}
        for e in receipts
        if "delivered" not in terminal_by_event.get(e, [])
    ]
    phantom = [
        e for e, outs in terminal_by_event.items() if "delivered" in outs and not receipts[e]
    ]
    report.unaudited_deliveries = len(unaudited)
    report.phantom_deliveries = len(phantom)
    report.redelivered_events = sum(1 for n in receipts.values() if n > 1)
    report.extra_vendor_receipts = sum(n - 1 for n in receipts.values() if n > 1)
    report.duplicates = report.duplicate_outcomes + report.redelivered_events
    report.out_of_order = len(out_of_order)
    report.accepted_regressions = sum(1 for r in regressions if r["accepted"])
    report.refused_regressions = sum(1 for r in regressions if not r["accepted"])
    report.regressions = len(regressions)
    report.other_vendor_4xx = len(other_4xx)
    report.unmatched_requests = len(unmatched)
    report.details = {
        "lost": lost,
        "out_of_order": out_of_order,
        "regressions": regressions,
        "other_4xx": other_4xx,
        "unmatched": unmatched,
        "unaudited": unaudited,
        "phantom": phantom,
        "receipts": receipts,
        "first_ok_at": first_ok_at,
        "terminal_by_event": terminal_by_event,
        "terminal_by_source": terminal_by_source,
        "outcome_of_record": outcome_of_record,
        "per_outcome": per_outcome,
    }
    return report


def _brief(entry: dict[str, Any]) -> dict[str, Any]:
    body = entry.get("body")
    status = body.get("status") if isinstance(body, dict) else None
    return {
        "vendor": entry["vendor"],
        "key": entry["key"],
        "index": entry["index"],
        "status_code": entry["status_code"],
        "body_status": status,
    }


def record_report(
    name: str, report: Report, tmp: Path, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Print the report and append it as one JSON line to ``tmp/<name>.jsonl`` and to
    ``bench-results/resilience.jsonl`` (git-ignored) at the repository root."""
    line = {
        "test": name,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **report.counts(),
        **(extra or {}),
    }
    print(f"\n[{name}] {report.summary()}")
    if extra:
        print(f"[{name}] {json.dumps(extra, sort_keys=True)}")
    text = json.dumps(line, sort_keys=True, default=str) + "\n"
    root = Path(__file__).resolve().parents[2]
    for path in (tmp / f"{name}.jsonl", root / "bench-results" / "resilience.jsonl"):
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(text)
    return line


def log_excerpt(
    path: Path, patterns: Sequence[str] = ("ERROR", "CRITICAL", "Traceback"), n: int = 40
) -> str:
    """The last ``n`` lines of a worker log that match any of ``patterns`` (for reports)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return f"(no log at {path})"
    hits = [line for line in lines if any(p in line for p in patterns)]
    return "\n".join(hits[-n:]) or "\n".join(lines[-n:])


# -- scenario helpers ---------------------------------------------------------------------------

# A SIGKILLed consumer stays in its group until its session times out (Faust's default:
# 60 s); the tests shorten that through Faust's own environment settings.
FAST_GROUP = {
    "CONNECTOR_KAFKA__SESSION_TIMEOUT_S": "10",
    "CONNECTOR_KAFKA__HEARTBEAT_INTERVAL_S": "1",
}

KOMBO_INTEGRATIONS = ("workday:ACME1", "greenhouse:BETA2", "lever:GAMMA3")


def lifecycle(tgt: dict[str, Any], tag: str, final: str = "completed") -> list[dict[str, Any]]:
    """opened -> progress -> completed (or cancelled), with content unique to this order."""
    return [
        make_event("opened", tgt, result_url=f"https://vendor.example/tests/{tag}"),
        make_event(
            "progress",
            tgt,
            status_text=f"Started {tag}"[:40],
            result_url=f"https://vendor.example/tests/{tag}",
        ),
        make_event(final, tgt, result_url=f"https://vendor.example/results/{tag}"),
    ]


def mixed_orders(count: int, prefix: str) -> list[list[dict[str, Any]]]:
    """``count`` orders alternating Kombo (over three integrations) and Comeet."""
    integrations = itertools.cycle(KOMBO_INTEGRATIONS)
    orders = []
    for i in range(count):
        tag = f"{prefix}-{i}"
        if i % 2:
            tgt = target("comeet", f"c-{tag}")
        else:
            tgt = target("kombo", f"k-{tag}", next(integrations))
        final = "cancelled" if i % 7 == 3 else "completed"
        orders.append(lifecycle(tgt, tag, final))
    return orders


def in_rounds(orders: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """All first events, then all second events, ...: orders interleave, each keeps its order."""
    return [order[i] for i in range(max(map(len, orders))) for order in orders if i < len(order)]


def received(sb: Sandboxes) -> list[dict[str, Any]]:
    """Every request both sandboxes recorded (the ``requests`` argument of :func:`check`)."""
    return [*sb.kombo.recorded(), *sb.comeet.recorded()]


async def start(worker: WorkerProcess, timeout: float = 120.0) -> WorkerProcess:
    """Start a worker and wait until it is ready, without blocking the event loop (the
    in-process sandboxes must keep answering meanwhile)."""
    await asyncio.to_thread(worker.start, wait_ready=timeout)
    return worker


def assert_invariants(report: Report, workers: list[WorkerProcess]) -> None:
    """Nothing lost, per-order order kept, no final status regressed (or even attempted),
    every vendor request accounted for; failures quote the workers' log errors."""
    logs = "\n".join(f"--- {w.worker_id}\n{log_excerpt(w.log_path)}" for w in workers)
    details = report.details
    assert report.lost == 0, f"lost {report.lost}: {details['lost'][:20]}\n{logs}"
    assert report.out_of_order == 0, f"out of order: {details['out_of_order'][:10]}\n{logs}"
    assert report.regressions == 0, f"regressions: {details['regressions'][:10]}\n{logs}"
    assert report.unmatched_requests == 0, f"unmatched: {details['unmatched'][:10]}"
    assert report.phantom_deliveries == 0, f"audited, never accepted: {details['phantom'][:10]}"
