"""Scenario ``--state-orders N``: one connector worker's RSS with N orders in its table.

N ``order.opened`` events of N distinct orders are produced first (big batches,
no compression: the broker is local), then one connector worker with the
rocksdb store (``CONNECTOR_STORE=rocksdb://``) starts and delivers them to a
zero-latency sandbox. Every delivered event leaves one order in the table. The
worker's RSS is sampled as the table fills; the result is its peak (``VmHWM``),
the time taken, and, when the time cap stops the run first, a linear
extrapolation of RSS to N from the second half of the samples (marked as such).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from bench.observe import RunSandbox
from bench.processes import ConnectorGroup, LoadMeter, peak_rss_mb, rss_mb
from bench.report import markdown_table
from bench.scenario import READY_TIMEOUT_S, BenchContext, connector_env, new_run_id
from bench.workload import EventProducer, create_topic, delete_topics, iter_orders, opened_only

__all__ = ["StateResult", "run_state", "state_table"]

SAMPLE_S = 5.0


@dataclass(frozen=True)
class StateResult:
    requested: int
    produced: int
    produce_s: float
    delivered: int
    seconds: float  # worker ready -> last delivery counted (or the cap)
    capped: bool
    peak_rss_mb: float
    other_cores: float
    samples: list[tuple[float, int, float]] = field(default_factory=list)  # (s, delivered, MB)

    @property
    def per_second(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0

    def estimate_mb(self, orders: int) -> float | None:
        """RSS at ``orders`` by a least-squares line over the second half of the samples."""
        points = [(n, mb) for _, n, mb in self.samples[len(self.samples) // 2 :] if n > 0]
        if len(points) < 2:
            return None
        mean_n = sum(n for n, _ in points) / len(points)
        mean_mb = sum(mb for _, mb in points) / len(points)
        spread = sum((n - mean_n) ** 2 for n, _ in points)
        if spread == 0:
            return None
        slope = sum((n - mean_n) * (mb - mean_mb) for n, mb in points) / spread
        return mean_mb + slope * (orders - mean_n)


async def run_state(ctx: BenchContext, orders: int, cap_s: float) -> StateResult:
    run_id = new_run_id()
    label = f"state-{orders}-{run_id}"
    try:
        # A small request log: the sandbox would otherwise keep every body of the run.
        async with RunSandbox(0.0, ctx.log_dir / f"{label}-sandbox.log", 10_000) as sandbox:
            topic = f"bench-events-{run_id}"
            await create_topic(ctx.bootstrap, topic, ctx.partitions)
            async with EventProducer(
                ctx.bootstrap, topic, batch_bytes=1024 * 1024, linger_ms=50
            ) as producer:
                report = await producer.send(opened_only(iter_orders(run_id, orders)))
            env = connector_env(ctx, run_id, topic, sandbox)
            (ctx.data_dir / run_id).mkdir(parents=True, exist_ok=True)
            group = ConnectorGroup(env, 1, ctx.log_dir, label)
            try:
                await group.start(READY_TIMEOUT_S)
                [pid] = group.pids
                meter = LoadMeter([pid, *(p for p in (sandbox.pid, ctx.broker_pid) if p)])
                started = time.monotonic()
                samples: list[tuple[float, int, float]] = []
                next_sample = started
                delivered = 0
                while True:
                    delivered = await sandbox.count()
                    now = time.monotonic()
                    if now >= next_sample or delivered >= orders:
                        samples.append((now - started, delivered, rss_mb(pid) or 0.0))
                        next_sample = now + SAMPLE_S
                    if delivered >= orders or now - started >= cap_s:
                        break
                    if group.dead():
                        raise RuntimeError(f"connector worker died: {group.dead()}")
                    await asyncio.sleep(0.5)
                seconds = time.monotonic() - started
                peak = peak_rss_mb(pid) or 0.0
                others = meter.others_cores()
            finally:
                await group.stop()
    finally:
        with contextlib.suppress(Exception):
            await delete_topics(ctx.bootstrap, run_id)
    return StateResult(
        requested=orders,
        produced=report.count,
        produce_s=report.finished_at - report.started_at,
        delivered=delivered,
        seconds=seconds,
        capped=delivered < orders,
        peak_rss_mb=peak,
        other_cores=others,
        samples=samples,
    )


def state_table(result: StateResult) -> str:
    estimate = result.estimate_mb(result.requested) if result.capped else None
    rows = [
        ["orders requested / produced", f"{result.requested:,} / {result.produced:,}"],
        ["produce time (before the worker starts)", f"{result.produce_s:.1f} s"],
        [
            "orders delivered (= orders in the table)",
            f"{result.delivered:,}" + (" (time cap reached)" if result.capped else ""),
        ],
        ["worker time, ready to last delivery", f"{result.seconds:.1f} s"],
        ["events/s", f"{result.per_second:,.0f}"],
        ["peak RSS of the worker (VmHWM)", f"{result.peak_rss_mb:.0f} MB"],
        [
            f"RSS extrapolated to {result.requested:,} orders",
            "-" if estimate is None else f"{estimate:.0f} MB (linear, second half of samples)",
        ],
        ["others' load during the run", f"{result.other_cores:.2f} cores"],
    ]
    curve = ", ".join(f"{n:,}: {mb:.0f} MB" for _, n, mb in _spread(result.samples, 8))
    rows.append(["RSS as the table filled (orders: RSS)", curve or "-"])
    return markdown_table(["state scenario", "value"], rows)


def _spread(samples: list[tuple[float, int, float]], count: int) -> list[tuple[float, int, float]]:
    if len(samples) <= count:
        return samples
    step = (len(samples) - 1) / (count - 1)
    return [samples[round(i * step)] for i in range(count)]
