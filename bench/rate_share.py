"""``python -m bench.rate_share``: do N workers together keep to one target's rate limit?

Usage::

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:39092 python -m bench.rate_share --workers 1,2,3
        [--rate 20] [--burst 5] [--vendor-burst 10] [--seconds 20] [--partitions 4]

For each worker count: the Kombo sandbox enforces ``--rate`` requests/s on one integration
(a token bucket of ``--vendor-burst``; requests above it answer 429), the connector is
configured with the same rate (``CONNECTOR_KOMBO__RATE_LIMIT_PER_S``) and ``--burst``, N
workers start and settle into one group, then a backlog of orders of that one integration
(keys spread over every partition) is published, more than the limit lets through in
``--seconds``. The figures come from the sandbox's request log over the ``--seconds`` from
the first request: requests/s it received, requests/s it accepted, and the 429s.

The vendor's burst is above the connector's on purpose: at a rate equal to the vendor's,
the connector is exactly at the limit, and a request that reaches the vendor a little
sooner after its predecessor than the first one did needs a token saved up. The
difference (5 tokens at 20/s: 250 ms) is the jitter the run tolerates.

Kafka: ``KAFKA_BOOTSTRAP_SERVERS`` (required: the run is short and starts no broker).
Logs of every worker go to ``--out`` (a temporary folder by default).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.processes import REGISTRY, ConnectorGroup
from bench.workload import EventProducer, Order, create_topic, delete_topics
from connector.sandbox import Sandboxes
from connector.settings import external_bootstrap_servers

__all__ = ["RateFigures", "figures", "main", "measure"]

logger = logging.getLogger("bench.rate_share")

KOMBO_KEY = "kombo-rate-key-0001"
COMEET_TOKEN = "comeet-rate-token-0002"
INTEGRATION = "rate:INT1"
READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class RateFigures:
    workers: int
    configured_per_s: float
    seconds: float  # the measured window
    received: int  # requests to the target in the window, 429s included
    accepted: int
    rate_limited: int  # 429s in the window
    rate_limited_total: int  # 429s over the whole run

    @property
    def received_per_s(self) -> float:
        return self.received / self.seconds

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.seconds

    @property
    def ratio(self) -> float:
        """Accepted rate over the configured rate (1.0 = exactly the limit)."""
        return self.accepted_per_s / self.configured_per_s

    def row(self) -> str:
        return (
            f"| {self.workers} | {self.configured_per_s:g} | {self.received_per_s:.2f} | "
            f"{self.accepted_per_s:.2f} | {self.ratio:.2f} | {self.rate_limited} | "
            f"{self.rate_limited_total} |"
        )


HEADER = (
    "| workers | configured /s | received /s | accepted /s | accepted / configured "
    "| 429s in window | 429s in run |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def figures(
    requests: Iterable[tuple[float, Any]], *, workers: int, configured_per_s: float, seconds: float
) -> RateFigures:
    """The figures of one run from ``(received_at, status_code)`` of the target's requests.

    The window is ``seconds`` long from the first request; every 429 of the run is counted
    as well (one after the window is still one too many).
    """
    ordered = sorted(requests, key=lambda r: r[0])
    if not ordered:
        return RateFigures(workers, configured_per_s, seconds, 0, 0, 0, 0)
    end = ordered[0][0] + seconds
    window = [status for at, status in ordered if at < end]
    return RateFigures(
        workers=workers,
        configured_per_s=configured_per_s,
        seconds=seconds,
        received=len(window),
        accepted=sum(1 for s in window if isinstance(s, int) and 200 <= s < 300),
        rate_limited=window.count(429),
        rate_limited_total=sum(1 for _, s in ordered if s == 429),
    )


async def measure(
    bootstrap: str,
    workers: int,
    *,
    rate: float,
    burst: int,
    vendor_burst: int,
    seconds: float,
    partitions: int,
    log_dir: Path,
) -> RateFigures:
    """One run with ``workers`` workers (see the module docstring)."""
    run_id = "r" + uuid.uuid4().hex[:10]
    topic = f"rate-events-{run_id}"
    data_dir = log_dir / run_id
    data_dir.mkdir(parents=True, exist_ok=True)
    async with Sandboxes(kombo_key=KOMBO_KEY, comeet_token=COMEET_TOKEN) as sandboxes:
        sandboxes.kombo.faults.add_rate_limit(
            target=INTEGRATION, per_s=rate, burst=vendor_burst, retry_after_s=1
        )
        await create_topic(bootstrap, topic, partitions)
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "CONNECTOR_APP_ID": f"rate-app-{run_id}",
            "CONNECTOR_TOPICS__EVENTS": topic,
            "CONNECTOR_TOPICS__AUDIT": f"rate-audit-{run_id}",
            "CONNECTOR_TOPICS__DEAD_LETTER": f"rate-dlq-{run_id}",
            "CONNECTOR_TOPICS__PARTITIONS": str(partitions),
            "CONNECTOR_KOMBO__BASE_URL": sandboxes.kombo_url,
            "CONNECTOR_KOMBO__API_KEY": KOMBO_KEY,
            "CONNECTOR_KOMBO__RATE_LIMIT_PER_S": str(rate),
            "CONNECTOR_KOMBO__RATE_LIMIT_BURST": str(burst),
            "CONNECTOR_COMEET__BASE_URL": sandboxes.comeet_url,
            "CONNECTOR_COMEET__TOKEN": COMEET_TOKEN,
            "CONNECTOR_DATA_DIR": str(data_dir),
            "CONNECTOR_STORE": "rocksdb://",
        }
        group = ConnectorGroup(env, workers, log_dir, f"{run_id}-{workers}w")
        try:
            await group.start(READY_TIMEOUT_S)
            # More than the limit lets through in the window: every worker stays busy.
            backlog = int(rate * seconds * 1.5) + vendor_burst
            async with EventProducer(bootstrap, topic) as producer:
                await producer.send((order, "opened") for order in _orders(run_id, backlog))
            await _until_window_ends(sandboxes, seconds, group)
        finally:
            await group.stop()
            await delete_topics(bootstrap, run_id)
        requests = [
            (entry["received_at"], entry["status_code"])
            for entry in sandboxes.kombo.recorded()
            if (entry["key"] or "").startswith(INTEGRATION + "/")
        ]
    return figures(requests, workers=workers, configured_per_s=rate, seconds=seconds)


def _orders(run_id: str, count: int) -> Iterable[Order]:
    for i in range(count):
        order_id = f"{run_id}-{i}"
        key = f"kombo|{INTEGRATION}|{order_id}"
        yield Order("kombo", order_id, INTEGRATION, key.encode(), f"{INTEGRATION}/{order_id}")


async def _until_window_ends(sandboxes: Sandboxes, seconds: float, group: ConnectorGroup) -> None:
    """Wait for the first request, then ``seconds`` more (and a second for stragglers)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not sandboxes.kombo.recorded(limit=1):
        if group.dead():
            raise RuntimeError(f"worker died: {group.dead()}")
        if time.monotonic() > deadline:
            raise TimeoutError("no request reached the sandbox")
        await asyncio.sleep(0.05)
    await asyncio.sleep(seconds + 1.0)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.rate_share", description=__doc__)
    parser.add_argument("--workers", type=_ints, default=[1, 2, 3])
    parser.add_argument("--rate", type=float, default=20.0, help="the vendor's limit, /s")
    parser.add_argument("--burst", type=int, default=5, help="the connector's burst")
    parser.add_argument("--vendor-burst", type=int, default=10, help="the sandbox's burst")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="folder for the worker logs")
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace) -> int:
    bootstrap = external_bootstrap_servers()
    if not bootstrap:
        print("set KAFKA_BOOTSTRAP_SERVERS (this run starts no broker)", file=sys.stderr)
        return 2
    log_dir = args.out or Path(tempfile.mkdtemp(prefix="rate-share-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"rate {args.rate:g}/s, connector burst {args.burst}, vendor burst "
        f"{args.vendor_burst}, {args.partitions} partitions, {args.seconds:g} s window; "
        f"logs in {log_dir}\n"
    )
    print(HEADER, flush=True)
    for workers in args.workers:
        result = await measure(
            bootstrap,
            workers,
            rate=args.rate,
            burst=args.burst,
            vendor_burst=args.vendor_burst,
            seconds=args.seconds,
            partitions=args.partitions,
            log_dir=log_dir,
        )
        print(result.row(), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    args = parse_args(argv)
    try:
        return asyncio.run(_run(args))
    finally:
        REGISTRY.kill_all()


if __name__ == "__main__":
    sys.exit(main())
