"""One configuration, end to end: fresh sandbox and topic, processes, events, figures.

Sequence of a run:

1. a sandbox process with the configuration's API latency, and a new events topic;
2. the implementation's processes, started and waited for until ready (their
   start-up is reported apart, it is not part of the measured seconds);
3. a producer connected; the clock starts at the first send; events are sent as
   fast as the producer takes them, or paced at a given rate;
4. the run ends when the sandbox has recorded every expected request, or at the
   cap; peak RSS and CPU time of the processes are read before they are stopped;
5. the recorded requests are analysed (:mod:`bench.analysis`) and every topic of
   the run is deleted.

Every name (topic, group, app id, data dir) carries a fresh run id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.analysis import analyse
from bench.contenders_env import contenders_python
from bench.observe import COMEET_TOKEN, KOMBO_KEY, RunSandbox
from bench.processes import (
    BaselineGroup,
    ConnectorGroup,
    ImplementationGroup,
    LoadMeter,
    cpu_seconds,
    peak_rss_mb,
)
from bench.report import RunResult
from bench.workload import EventProducer, Order, create_topic, delete_topics, make_orders, waves

__all__ = [
    "BASELINE_MODULES",
    "CONTENDERS",
    "IMPLEMENTATIONS",
    "BenchContext",
    "Workload",
    "connector_env",
    "new_run_id",
    "run_configuration",
]

logger = logging.getLogger(__name__)

# The default set; "connector-httpx" (the connector on httpx's own pool) is opt-in.
IMPLEMENTATIONS = ("connector", "naive", "loop-aiohttp", "loop-httpx", "quix", "faststream")
BASELINE_MODULES = {
    "naive": ("bench.baselines.naive_faust", "httpx"),
    "loop-aiohttp": ("bench.baselines.aiokafka_loop", "aiohttp"),
    "loop-httpx": ("bench.baselines.aiokafka_loop", "httpx"),
    "quix": ("bench.baselines.quix_app", "aiohttp"),
    "faststream": ("bench.baselines.faststream_app", "aiohttp"),
}
# Tools a team would pick instead; they run in their own environment (bench/contenders).
CONTENDERS = frozenset({"quix", "faststream"})
READY_TIMEOUT_S = 120.0
POLL_S = 0.2


@dataclass(frozen=True)
class BenchContext:
    bootstrap: str
    partitions: int
    cap_s: float
    log_dir: Path
    data_dir: Path
    broker_pid: int | None = None
    connector_env: dict[str, str] = field(default_factory=dict)
    loop_max_in_flight: int = 256
    # Another checkout of the connector (its own .venv, made by ``uv sync``): run as
    # "connector-before", beside this tree's "connector", for a before/after in one run.
    before: Path | None = None


@dataclass(frozen=True)
class Workload:
    orders: int
    rate: float | None = None  # events/s; None = as fast as the producer goes
    # Seconds at the start whose events are left out of the latency percentiles.
    warmup_s: float = 0.0

    @property
    def events(self) -> int:
        return 3 * self.orders

    def schedule(self, run_id: str) -> Iterator[tuple[Order, str]]:
        return waves(make_orders(run_id, self.orders))


def new_run_id() -> str:
    return "b" + uuid.uuid4().hex[:10]


def connector_env(
    ctx: BenchContext, run_id: str, topic: str, sandbox: RunSandbox
) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": ctx.bootstrap,
        "CONNECTOR_APP_ID": f"bench-app-{run_id}",
        "CONNECTOR_TOPICS__EVENTS": topic,
        "CONNECTOR_TOPICS__AUDIT": f"bench-audit-{run_id}",
        "CONNECTOR_TOPICS__DEAD_LETTER": f"bench-dlq-{run_id}",
        "CONNECTOR_TOPICS__PARTITIONS": str(ctx.partitions),
        "CONNECTOR_KOMBO__BASE_URL": sandbox.kombo_url,
        "CONNECTOR_KOMBO__API_KEY": KOMBO_KEY,
        "CONNECTOR_COMEET__BASE_URL": sandbox.comeet_url,
        "CONNECTOR_COMEET__TOKEN": COMEET_TOKEN,
        "CONNECTOR_DATA_DIR": str(ctx.data_dir / run_id),
        "CONNECTOR_STORE": "rocksdb://",
        **ctx.connector_env,
    }


def _baseline_env(
    ctx: BenchContext, run_id: str, topic: str, sandbox: RunSandbox, http: str
) -> dict[str, str]:
    return {
        "BENCH_BOOTSTRAP": ctx.bootstrap,
        "BENCH_TOPIC": topic,
        "BENCH_GROUP": f"bench-group-{run_id}",
        "BENCH_PARTITIONS": str(ctx.partitions),
        "BENCH_KOMBO_URL": sandbox.kombo_url,
        "BENCH_KOMBO_KEY": KOMBO_KEY,
        "BENCH_COMEET_URL": sandbox.comeet_url,
        "BENCH_COMEET_TOKEN": COMEET_TOKEN,
        "BENCH_DATA_DIR": str(ctx.data_dir / run_id),
        "BENCH_MAX_IN_FLIGHT": str(ctx.loop_max_in_flight),
        "BENCH_HTTP": http,
    }


def _group(
    ctx: BenchContext,
    impl: str,
    workers: int,
    run_id: str,
    topic: str,
    sandbox: RunSandbox,
    label: str,
) -> ImplementationGroup:
    (ctx.data_dir / run_id).mkdir(parents=True, exist_ok=True)
    if impl.startswith("connector"):
        env = connector_env(ctx, run_id, topic, sandbox)
        if impl == "connector-httpx":
            env["CONNECTOR_DELIVERY__TRANSPORT"] = "httpx"
        argv = None
        if impl == "connector-before":
            if ctx.before is None:
                raise ValueError("connector-before needs bench.run --before DIR")
            # Its console script: `python -m` would put our working directory (and our
            # connector package) first on sys.path.
            argv = [str(ctx.before / ".venv" / "bin" / "connector"), "worker"]
        return ConnectorGroup(env, workers, ctx.log_dir, label, argv)
    module, http = BASELINE_MODULES[impl]
    env = _baseline_env(ctx, run_id, topic, sandbox, http)
    python = contenders_python() if impl in CONTENDERS else sys.executable
    return BaselineGroup(module, env, workers, ctx.partitions, ctx.log_dir, label, python)


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) or 0.0 for pid in pids)


async def _await_delivery(
    sandbox: RunSandbox, group: ImplementationGroup, expected: int, deadline: float
) -> bool:
    """Wait until the sandbox recorded ``expected`` requests; True if the cap hit first."""
    while True:
        if await sandbox.count() >= expected:
            return False
        dead = group.dead()
        if dead:
            raise RuntimeError(f"implementation process died during the run: {dead}")
        if time.time() >= deadline:
            return True
        await asyncio.sleep(POLL_S)


async def run_configuration(
    ctx: BenchContext,
    impl: str,
    workers: int,
    latency_ms: float,
    workload: Workload,
    *,
    cap_s: float | None = None,
    note: str = "",
) -> RunResult:
    cap = cap_s if cap_s is not None else ctx.cap_s
    run_id = new_run_id()
    label = f"{impl}-{workers}w-{latency_ms:g}ms{'-paced' if workload.rate else ''}-{run_id}"
    try:
        async with RunSandbox(latency_ms, ctx.log_dir / f"{label}-sandbox.log") as sandbox:
            topic = f"bench-events-{run_id}"
            await create_topic(ctx.bootstrap, topic, ctx.partitions)
            group = _group(ctx, impl, workers, run_id, topic, sandbox, label)
            try:
                begin = time.monotonic()
                await group.start(READY_TIMEOUT_S)
                ready_s = time.monotonic() - begin
                async with EventProducer(ctx.bootstrap, topic) as producer:
                    ours = [*group.pids, *(p for p in (sandbox.pid, ctx.broker_pid) if p)]
                    meter = LoadMeter(ours)
                    cpu0 = _cpu(group.pids)
                    started = time.time()
                    sending = asyncio.create_task(
                        producer.send(workload.schedule(run_id), rate=workload.rate)
                    )
                    try:
                        capped = await _await_delivery(
                            sandbox, group, workload.events, started + cap
                        )
                    finally:
                        if not sending.done():
                            sending.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await sending
                    cpu = _cpu(group.pids) - cpu0
                    peaks = [peak_rss_mb(pid) or 0.0 for pid in group.pids]
                    others = meter.others_cores()
            finally:
                await group.stop()
            entries = await sandbox.recorded()
    finally:
        with contextlib.suppress(Exception):  # best effort: never hide the run's own error
            await delete_topics(ctx.bootstrap, run_id)
    stats = analyse(
        entries,
        expected=workload.events,
        started_at=started,
        cap_s=cap,
        capped=capped,
        warmup_s=workload.warmup_s,
    )
    return RunResult(
        implementation=impl,
        workers=workers,
        latency_ms=latency_ms,
        stats=stats,
        peak_rss_mb=peaks,
        cpu_s=cpu,
        ready_s=ready_s,
        other_cores=others,
        note=note,
    )
