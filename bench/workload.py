"""The benchmark's events: full order lifecycles, stamped with their produce time.

Every order gets three events, ``order.opened`` -> ``order.progress`` ->
``order.completed``; even orders target Kombo (spread over a few integrations),
odd ones Comeet. The events are valid for the connector's contract (same shape
as ``tests/factories.py``, with a full completed result) so the sandboxes accept
what any implementation maps from them.

Produce timestamp: the event's ``result_url`` carries ``?k=<kind>&t=<epoch s>``,
set when the event is handed to the producer (``occurred_at`` is set to the same
moment). Both vendors' requests carry that URL (Kombo ``result_url``, Comeet
``url_for_users``), so a request recorded by the sandbox tells which event it
delivers and when that event was produced, whatever implementation sent it.

Order of production: lifecycles advance in *waves* of ``wave`` orders (all
openings of a wave, then all progress events, then all completions). In real
traffic an order's events are minutes apart, so neighbouring records belong to
different orders; one order's three events back to back would instead make
every implementation wait on its own per-order chain.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

__all__ = [
    "KINDS",
    "EventProducer",
    "Order",
    "ProduceReport",
    "create_topic",
    "delete_topics",
    "iter_orders",
    "make_orders",
    "opened_only",
    "read_stamp",
    "waves",
]

KINDS: tuple[str, ...] = ("opened", "progress", "completed")
_CODE = {"opened": "o", "progress": "p", "completed": "c"}
_KIND_OF_CODE = {code: kind for kind, code in _CODE.items()}
_KOMBO_INTEGRATIONS = 8
_PDF_B64 = base64.b64encode(b"%PDF-1.4 benchmark report").decode()


@dataclass(frozen=True, slots=True)
class Order:
    vendor: str  # "kombo" | "comeet"
    order_id: str
    integration_id: str  # Kombo only
    key: bytes  # the Kafka record key (connector.domain.events.order_key)
    sandbox_key: str  # the ``key`` the sandbox records: "<integration>/<order>" or the evaluation

    @property
    def target(self) -> dict[str, str]:
        if self.vendor == "kombo":
            return {
                "vendor": "kombo",
                "integration_id": self.integration_id,
                "assessment_order_id": self.order_id,
            }
        return {"vendor": "comeet", "evaluation_id": self.order_id}


def iter_orders(run_id: str, count: int) -> Iterator[Order]:
    for i in range(count):
        order_id = f"{run_id}-{i}"
        if i % 2 == 0:
            integration = f"bench:INT{i % _KOMBO_INTEGRATIONS}"
            key = f"kombo|{integration}|{order_id}"
            yield Order("kombo", order_id, integration, key.encode(), f"{integration}/{order_id}")
        else:
            yield Order("comeet", order_id, "", f"comeet|{order_id}".encode(), order_id)


def make_orders(run_id: str, count: int) -> list[Order]:
    return list(iter_orders(run_id, count))


def waves(orders: Sequence[Order], wave: int = 1000) -> Iterator[tuple[Order, str]]:
    """Every order's lifecycle, wave by wave (see the module docstring)."""
    for start in range(0, len(orders), wave):
        chunk = orders[start : start + wave]
        for kind in KINDS:
            for order in chunk:
                yield order, kind


def opened_only(orders: Iterable[Order]) -> Iterator[tuple[Order, str]]:
    for order in orders:
        yield order, "opened"


def _iso(moment: float) -> str:
    dt = datetime.fromtimestamp(moment, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def event_value(order: Order, kind: str, produced_at: float) -> bytes:
    """The record value of one event, stamped with ``produced_at`` (epoch seconds)."""
    url = f"https://results.example/{order.order_id}?k={_CODE[kind]}&t={produced_at:.6f}"
    event: dict[str, Any] = {
        "event_id": f"{order.order_id}-{kind}",
        "occurred_at": _iso(produced_at),
        "target": order.target,
    }
    if kind == "opened":
        event |= {"type": "order.opened", "result_url": url}
    elif kind == "progress":
        event |= {"type": "order.progress", "status_text": "Test started", "result_url": url}
    else:
        event |= _completed(url, produced_at)
    return json.dumps(event, separators=(",", ":")).encode()


def _completed(url: str, produced_at: float) -> dict[str, Any]:
    return {
        "type": "order.completed",
        "outcome": "passed",
        "completed_at": _iso(produced_at),
        "result_url": url,
        "public_result_url": "https://results.example/public?token=abc",
        "score": {"value": 90, "max": 100},
        "summary": "Performed well.",
        "sub_results": [
            {
                "id": "algo",
                "label": "Algorithms",
                "score": {"value": 8, "max": 10},
                "notes": "Solid.",
                "group": "Exercise 1",
            },
            {"id": "style", "label": "Code style", "notes": "Readable."},
        ],
        "attributes": [{"label": "Role fit", "value": "Excellent"}],
        "attachments": [
            {"name": "Report.pdf", "content_type": "application/pdf", "data": _PDF_B64}
        ],
    }


def read_stamp(body: Any) -> tuple[str, float] | None:
    """``(kind, produced_at)`` from a recorded vendor request body, if it carries a stamp."""
    if not isinstance(body, dict):
        return None
    url = body.get("result_url") or body.get("url_for_users")
    if not isinstance(url, str):
        return None
    query = parse_qs(urlsplit(url).query)
    try:
        return _KIND_OF_CODE[query["k"][0]], float(query["t"][0])
    except (KeyError, IndexError, ValueError):
        return None


# -- Kafka -------------------------------------------------------------------------------


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    """Create ``name`` and wait until every partition has a leader."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
        deadline = time.monotonic() + 30.0
        while True:
            [description] = await admin.describe_topics([name])
            leaders = [p["leader"] for p in description.get("partitions", [])]
            if len(leaders) == partitions and all(leader >= 0 for leader in leaders):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {name} has no leader for every partition")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, marker: str) -> None:
    """Delete every topic whose name contains ``marker`` (a run's unique id): the events
    topic and whatever the implementation created (audit, dead letters, changelogs)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if marker in t]
        if names:
            await admin.delete_topics(names, timeout_ms=30_000)
    finally:
        await admin.close()


@dataclass(frozen=True, slots=True)
class ProduceReport:
    started_at: float  # epoch seconds of the first send
    finished_at: float  # every record acknowledged by the broker
    count: int


class EventProducer:
    """An aiokafka producer for the events topic; connect first, then :meth:`send`.

    Connecting happens in ``__aenter__`` so that a run's clock (the first send)
    does not include it.
    """

    def __init__(
        self, bootstrap: str, topic: str, *, batch_bytes: int = 256 * 1024, linger_ms: int = 5
    ) -> None:
        self._topic = topic
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks=1,
            linger_ms=linger_ms,
            max_batch_size=batch_bytes,
            max_request_size=4 * 1024 * 1024,
        )

    async def __aenter__(self) -> Self:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._producer.stop()

    async def send(
        self, schedule: Iterator[tuple[Order, str]], *, rate: float | None = None
    ) -> ProduceReport:
        """Send the scheduled events, stamping each when it is handed to the producer.

        ``rate`` (events/s) paces the sends on an absolute schedule (at most 10 ms
        ahead of it, so a slow moment is caught up and the mean rate holds);
        ``None`` sends as fast as the producer takes them.
        """
        pending: list[asyncio.Future[Any]] = []
        started = time.time()
        begin = time.monotonic()
        count = 0
        for order, kind in schedule:
            if rate is not None:
                delay = begin + count / rate - time.monotonic()
                if delay > 0.01:
                    await asyncio.sleep(delay)
            value = event_value(order, kind, time.time())
            pending.append(await self._producer.send(self._topic, value, key=order.key))
            count += 1
            if len(pending) >= 10_000:  # bound the futures kept alive on a long run
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return ProduceReport(started, time.time(), count)
