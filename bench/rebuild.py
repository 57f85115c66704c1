"""Failover at scale: how long a worker that takes partitions over needs before it delivers.

    python -m bench.rebuild --orders 100000,1000000,5000000 [--modes cold,standby]
                            [--check 2000] [--history] [--settle S] [--connector-env KEY=VALUE ...]

For each N, the order table is filled with N COMPLETED orders by writing its changelog
topic directly (:mod:`bench.changelog_fill`: the records the connector writes, in its
partitions; a worker of the run's app id is started first, with no events, so that
Faust creates the changelog with its own configs). No event of those orders is in the
events topic, so nothing is replayed: the worker's first deliveries are the fresh ones.

* ``cold`` -- no standby: one worker with an empty data dir starts and is assigned every
  partition. Measured from its log (the JSON ``time`` of each line): assignment
  ("Executing _on_partitions_assigned"), recovery done ("Done reading from changelog
  topics"); then the first delivery, by the sandbox's own receive time, of fresh events
  (one new order per partition) produced as soon as the assignment is seen. Recovery
  holds every partition until all are recovered, so first and last fresh delivery are
  close. Peak RSS = the worker's ``VmHWM``.
* ``standby`` -- ``CONNECTOR_STANDBY_REPLICAS=1``: two workers (each rebuilds its actives
  and standbys from the changelog, then is idle: caught up), then SIGKILL of one. On the
  survivor: kill -> its next assignment (the group's session timeout,
  ``CONNECTOR_KAFKA__SESSION_TIMEOUT_S``, 6 s here unless given), then assignment ->
  recovery done -> first and last delivery of fresh events produced after it.

``--check N`` first verifies the synthetic table at N orders: a worker recovering from it
refuses a reopening event of a completed order ("cannot reopen a final order", no call to
the vendor), delivers a new order, and writes that order's state to the partition the
fill computes for it. ``--history`` writes the six records per order the connector
writes (intent and confirmation per event), i.e. a changelog not compacted yet;
``--settle S`` then gives the broker's log cleaner S seconds before the worker starts;
``--kafka-default-changelog`` creates the changelog with the broker's segment and cleaner
defaults (as the connector did before it set its own).
Each row says how many changelog records the measured worker read in bulk.

The machine may be shared: each row reports the others' load during the measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.changelog_fill import FillReport, fill_changelog, partition_of, table_records
from bench.observe import RunSandbox
from bench.processes import REGISTRY, LoadMeter, cpu_seconds, peak_rss_mb, rss_mb
from bench.report import markdown_table
from bench.scenario import BenchContext, connector_env, new_run_id
from bench.workload import Order, create_topic, delete_topics, event_value, iter_orders
from connector.local.worker import WorkerProcess
from connector.settings import external_bootstrap_servers

__all__ = ["RebuildResult", "main", "run_rebuild"]

ASSIGNED = "Executing _on_partitions_assigned"
BULK = re.compile(r"table recovery: (\d+) changelog records")
RECOVERED = "Done reading from changelog topics"
NOTHING_TO_RECOVER = "Recovery complete"
POLL_S = 0.05
DELIVERY_CAP_S = 1800.0


def _progress(message: str) -> None:
    print(f"[rebuild {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RebuildResult:
    orders: int
    mode: str  # "cold" | "standby"
    records: int  # changelog records written
    read: int  # changelog records the measured worker read in bulk after the assignment
    fill_s: float
    kill_to_assigned_s: float | None  # standby mode only
    assigned_to_recovered_s: float
    assigned_to_first_s: float
    assigned_to_last_s: float
    cpu_s: float  # the worker's CPU seconds from the assignment to the last delivery
    peak_rss_mb: float
    rss_at_takeover_mb: float | None
    other_cores: float


class LogWatch:
    """Lines of a worker's JSON log, from a byte offset on; times are the lines' own."""

    def __init__(self, path: Path, start: int = 0) -> None:
        self._path = path
        self._offset = start
        self._lines: list[dict[str, Any]] = []

    @staticmethod
    def end_of(path: Path) -> int:
        return path.stat().st_size if path.exists() else 0

    def _read(self) -> None:
        if not self._path.exists():
            return
        with self._path.open("rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        complete = chunk.rfind(b"\n") + 1
        self._offset += complete
        for raw in chunk[:complete].splitlines():
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if isinstance(line, dict):
                    self._lines.append(line)

    def read_in_bulk(self) -> int:
        """Changelog records the worker applied in bulk so far (its recovery log lines)."""
        self._read()
        found = (BULK.search(str(line.get("message", ""))) for line in self._lines)
        return sum(int(m.group(1)) for m in found if m)

    def find(self, *needles: str) -> float | None:
        """Epoch time of the first line containing any of ``needles`` seen so far."""
        self._read()
        for line in self._lines:
            message = str(line.get("message", ""))
            if any(needle in message for needle in needles):
                return datetime.fromisoformat(str(line["time"])).timestamp()
        return None

    async def wait(self, *needles: str, timeout: float, alive: WorkerProcess) -> float:
        deadline = time.monotonic() + timeout
        while (found := self.find(*needles)) is None:
            if not alive.running:
                raise RuntimeError(f"worker {alive.worker_id} died; log {alive.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {needles!r} in {self._path} within {timeout:.0f} s")
            await asyncio.sleep(POLL_S)
        return found


def fresh_orders(run_id: str, partitions: int, tag: str) -> list[Order]:
    """One new Comeet order per partition (by the default partitioner)."""
    found: dict[int, Order] = {}
    n = 0
    while len(found) < partitions:
        order_id = f"{run_id}-{tag}-{n}"
        key = f"comeet|{order_id}".encode()
        found.setdefault(
            partition_of(key, partitions), Order("comeet", order_id, "", key, order_id)
        )
        n += 1
    return [found[p] for p in range(partitions)]


async def _produce(bootstrap: str, topic: str, events: list[tuple[Order, str, str]]) -> None:
    """``(order, kind, event id suffix)`` events; keys go through the default partitioner."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0)
    await producer.start()
    try:
        for order, kind, suffix in events:
            value = json.loads(event_value(order, kind, time.time()))
            value["event_id"] += suffix
            await producer.send_and_wait(topic, json.dumps(value).encode(), key=order.key)
    finally:
        await producer.stop()


async def _deliveries(sandbox: RunSandbox, count: int, timeout: float) -> list[float]:
    """The sandbox's receive times of the first ``count`` requests (waits for them)."""
    deadline = time.monotonic() + timeout
    while await sandbox.count() < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} deliveries within {timeout:.0f} s")
        await asyncio.sleep(POLL_S)
    return sorted(float(r["received_at"]) for r in await sandbox.recorded())[:count]


async def _idle(pids: list[int], quiet_s: float = 3.0, timeout: float = 1800.0) -> None:
    """Until the processes used under 5% of a core for ``quiet_s`` (standbys caught up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(cpu_seconds(p) or 0.0 for p in pids)
        await asyncio.sleep(quiet_s)
        if sum(cpu_seconds(p) or 0.0 for p in pids) - before < 0.05 * quiet_s * len(pids):
            return
    raise TimeoutError("workers never went idle")


class _Run:
    """One run's names, sandbox and workers."""

    def __init__(self, ctx: BenchContext, sandbox: RunSandbox, run_id: str, label: str) -> None:
        self.ctx, self.sandbox, self.run_id, self.label = ctx, sandbox, run_id, label
        self.topic = f"bench-events-{run_id}"
        self.env = connector_env(ctx, run_id, self.topic, sandbox)
        self.changelog = f"{self.env['CONNECTOR_APP_ID']}-orders-changelog"
        self.workers: list[WorkerProcess] = []

    def worker(self, worker_id: str, **extra: str) -> WorkerProcess:
        log = self.ctx.log_dir / f"{self.label}-{worker_id}.log"
        worker = WorkerProcess({**self.env, **extra}, worker_id=worker_id, log_path=log)
        self.workers.append(worker)
        worker.start(wait_ready=None)
        REGISTRY.add(id(worker), worker.kill)
        return worker

    async def prepare(
        self, orders: int, history: bool, settle_s: float = 0.0, kafka_defaults: bool = False
    ) -> FillReport:
        """Topics (the changelog created by a worker, with Faust's configs), then the fill.

        ``kafka_defaults``: the changelog is created first, compacted but with the
        broker's defaults for everything else (as the connector created it before it
        set its own segment and cleaner configs); the worker then keeps it as it is.
        """
        await create_topic(self.ctx.bootstrap, self.topic, self.ctx.partitions)
        if kafka_defaults:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.ctx.bootstrap)
            await admin.start()
            try:
                changelog = NewTopic(
                    self.changelog,
                    self.ctx.partitions,
                    1,
                    topic_configs={"cleanup.policy": "compact"},
                )
                await admin.create_topics([changelog])
            finally:
                await admin.close()
        creator = self.worker("creator")
        await asyncio.to_thread(creator.wait_ready, 120.0)
        await asyncio.to_thread(creator.stop, 30.0)
        records = table_records(self.run_id, orders, self.ctx.partitions, history=history)
        fill = await fill_changelog(self.ctx.bootstrap, self.changelog, records)
        if settle_s > 0:
            # Time for the broker's log cleaner to compact what the fill superseded.
            _progress(f"{self.label}: letting the log cleaner run for {settle_s:.0f} s")
            await asyncio.sleep(settle_s)
        return fill

    async def stop(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(w.stop, 30.0) for w in self.workers))
        for worker in self.workers:
            REGISTRY.discard(id(worker))


async def run_rebuild(
    ctx: BenchContext,
    orders: int,
    mode: str,
    history: bool,
    settle_s: float = 0.0,
    kafka_defaults: bool = False,
) -> RebuildResult:
    run_id = new_run_id()
    label = f"rebuild-{mode}-{orders}-{run_id}"
    try:
        async with RunSandbox(0.0, ctx.log_dir / f"{label}-sandbox.log", 10_000) as sandbox:
            run = _Run(ctx, sandbox, run_id, label)
            try:
                _progress(f"{label}: filling the changelog")
                fill = await run.prepare(orders, history, settle_s, kafka_defaults)
                _progress(
                    f"{label}: {fill.records:,} records ({fill.payload_bytes / 1e6:.0f} MB) in "
                    f"{fill.seconds:.1f} s ({fill.per_second:,.0f}/s)"
                )
                if mode == "cold":
                    return await _cold(run, orders, fill)
                return await _standby(run, orders, fill)
            finally:
                await run.stop()
    finally:
        with contextlib.suppress(Exception):
            await delete_topics(ctx.bootstrap, run_id)


async def _cold(run: _Run, orders: int, fill: FillReport) -> RebuildResult:
    worker = run.worker("fresh")
    assert worker.pid is not None
    meter = LoadMeter([worker.pid, *(p for p in (run.sandbox.pid, run.ctx.broker_pid) if p)])
    watch = LogWatch(worker.log_path)
    assigned = await watch.wait(ASSIGNED, timeout=300.0, alive=worker)
    return await _takeover(run, worker, watch, assigned, meter, orders, fill, mode="cold")


async def _standby(run: _Run, orders: int, fill: FillReport) -> RebuildResult:
    extra = {"CONNECTOR_STANDBY_REPLICAS": "1"}
    if "CONNECTOR_KAFKA__SESSION_TIMEOUT_S" not in run.env:
        extra["CONNECTOR_KAFKA__SESSION_TIMEOUT_S"] = "6"
    victim, survivor = run.worker("w1", **extra), run.worker("w2", **extra)
    for worker in (victim, survivor):
        await asyncio.to_thread(worker.wait_ready, DELIVERY_CAP_S)
    pids = [w.pid for w in (victim, survivor) if w.pid is not None]
    await _idle(pids)
    assert survivor.pid is not None
    _progress(f"{run.label}: both workers ready and idle; killing w1")
    watch = LogWatch(survivor.log_path, LogWatch.end_of(survivor.log_path))
    rss_before = rss_mb(survivor.pid)
    meter = LoadMeter([survivor.pid, *(p for p in (run.sandbox.pid, run.ctx.broker_pid) if p)])
    killed = time.time()
    await asyncio.to_thread(victim.kill)
    assigned = await watch.wait(ASSIGNED, timeout=300.0, alive=survivor)
    result = await _takeover(run, survivor, watch, assigned, meter, orders, fill, mode="standby")
    return replace(result, kill_to_assigned_s=assigned - killed, rss_at_takeover_mb=rss_before)


async def _takeover(
    run: _Run,
    worker: Any,
    watch: LogWatch,
    assigned: float,
    meter: LoadMeter,
    orders: int,
    fill: FillReport,
    *,
    mode: str,
) -> RebuildResult:
    """From ``worker``'s assignment: fresh orders produced, their deliveries, the figures."""
    assert worker.pid is not None
    cpu_at_assignment = cpu_seconds(worker.pid) or 0.0
    fresh = fresh_orders(run.run_id, run.ctx.partitions, "fresh")
    await _produce(run.ctx.bootstrap, run.topic, [(o, "opened", "") for o in fresh])
    received = await _deliveries(run.sandbox, len(fresh), DELIVERY_CAP_S)
    recovered = await watch.wait(RECOVERED, NOTHING_TO_RECOVER, timeout=60.0, alive=worker)
    return RebuildResult(
        orders=orders,
        mode=mode,
        records=fill.records,
        read=watch.read_in_bulk(),
        fill_s=fill.seconds,
        kill_to_assigned_s=None,
        assigned_to_recovered_s=recovered - assigned,
        assigned_to_first_s=received[0] - assigned,
        assigned_to_last_s=received[-1] - assigned,
        cpu_s=(cpu_seconds(worker.pid) or 0.0) - cpu_at_assignment,
        peak_rss_mb=peak_rss_mb(worker.pid) or 0.0,
        rss_at_takeover_mb=None,
        other_cores=meter.others_cores(),
    )


# -- the check of the synthetic table ---------------------------------------------------


async def check_table(ctx: BenchContext, orders: int) -> str:
    """A recovered worker sees the synthetic states; raises if it does not."""
    run_id = new_run_id()
    label = f"rebuild-check-{orders}-{run_id}"
    try:
        async with RunSandbox(0.0, ctx.log_dir / f"{label}-sandbox.log", 10_000) as sandbox:
            run = _Run(ctx, sandbox, run_id, label)
            try:
                await run.prepare(orders, history=False)
                worker = run.worker("fresh")
                await asyncio.to_thread(worker.wait_ready, 600.0)
                reopened = list(iter_orders(run_id, orders))[:: max(1, orders // 10)]
                fresh = fresh_orders(run_id, ctx.partitions, "check")
                await _produce(
                    ctx.bootstrap,
                    run.topic,
                    [(o, "opened", "-again") for o in reopened]
                    + [(o, "opened", "") for o in fresh],
                )
                ends = await _terminal_records(
                    ctx.bootstrap, run.env["CONNECTOR_TOPICS__AUDIT"], len(reopened) + len(fresh)
                )
                recorded = await sandbox.recorded()
                written = await _last_partitions(ctx.bootstrap, run.changelog, fresh)
            finally:
                await run.stop()
    finally:
        with contextlib.suppress(Exception):
            await delete_topics(ctx.bootstrap, run_id)
    return _judge_check(ctx.partitions, reopened, fresh, ends, recorded, written)


def _judge_check(
    partitions: int,
    reopened: list[Order],
    fresh: list[Order],
    ends: dict[str, dict[str, Any]],
    recorded: list[dict[str, Any]],
    written: dict[bytes, int],
) -> str:
    problems = []
    for order in reopened:
        end = ends.get(order.key.decode(), {})
        if end.get("outcome") != "rejected" or "final order" not in str(end.get("reason")):
            problems.append(f"{order.key!r}: {end.get('outcome')} ({end.get('reason')})")
    for order in fresh:
        if ends.get(order.key.decode(), {}).get("outcome") != "delivered":
            problems.append(f"{order.key!r} (new) not delivered")
        if written.get(order.key) != partition_of(order.key, partitions):
            problems.append(f"{order.key!r} state in partition {written.get(order.key)}")
    if len(recorded) != len(fresh):
        problems.append(f"the vendors got {len(recorded)} requests, expected {len(fresh)}")
    if problems:
        raise AssertionError("synthetic table not seen as written: " + "; ".join(problems))
    return (
        f"check passed: {len(reopened)} reopenings of completed orders refused "
        f'("cannot reopen a final order"), {len(fresh)} new orders delivered, their '
        "states in the computed partitions"
    )


async def _terminal_records(bootstrap: str, topic: str, count: int) -> dict[str, dict[str, Any]]:
    ends: dict[str, dict[str, Any]] = {}
    async for record in _read(bootstrap, topic, lambda r: len(ends) >= count):
        doc = json.loads(record.value)
        if doc.get("terminal"):
            ends[doc["order_key"]] = doc
    return ends


async def _last_partitions(bootstrap: str, topic: str, orders: list[Order]) -> dict[bytes, int]:
    wanted = {o.key for o in orders}
    found: dict[bytes, int] = {}
    async for record in _read(bootstrap, topic, lambda r: wanted <= found.keys()):
        if record.key in wanted:
            found[record.key] = record.partition
    return found


async def _read(bootstrap: str, topic: str, done: Any, timeout: float = 120.0) -> Any:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    deadline = time.monotonic() + timeout
    try:
        while not done(None):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not everything expected within {timeout:.0f} s")
            batch = await consumer.getmany(timeout_ms=500, max_records=50_000)
            for records in batch.values():
                for record in records:
                    yield record
    finally:
        await consumer.stop()


# -- report and command line ------------------------------------------------------------


def rebuild_table(results: list[RebuildResult]) -> str:
    rows = []
    for r in results:
        rows.append(
            [
                f"{r.orders:,}",
                "one standby" if r.mode == "standby" else "none (empty data dir)",
                f"{r.records:,} in {r.fill_s:.0f} s",
                f"{r.read:,}",
                "-" if r.kill_to_assigned_s is None else f"{r.kill_to_assigned_s:.1f} s",
                f"{r.assigned_to_recovered_s:.1f} s",
                f"{r.assigned_to_first_s:.1f} s / {r.assigned_to_last_s:.1f} s",
                f"{r.cpu_s:.1f} s",
                f"{r.peak_rss_mb:.0f} MB"
                + (
                    "" if r.rss_at_takeover_mb is None else f" ({r.rss_at_takeover_mb:.0f} at kill)"
                ),
                f"{r.other_cores:.2f}",
            ]
        )
    return markdown_table(
        [
            "orders in state",
            "standby",
            "changelog records (fill)",
            "records read in bulk",
            "kill -> assignment",
            "assignment -> recovered",
            "assignment -> first / last delivery",
            "worker CPU in that time",
            "peak RSS (VmHWM)",
            "others' load (cores)",
        ],
        rows,
    )


def _at_kill(mb: float | None) -> str:
    return "" if mb is None else f" ({mb:.0f} MB at the kill)"


def _ints(text: str) -> list[int]:
    return [int(v.replace("_", "")) for v in text.split(",") if v.strip()]


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.startswith("CONNECTOR_"):
        raise argparse.ArgumentTypeError("expected CONNECTOR_KEY=VALUE")
    return key, value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.rebuild", description=__doc__)
    parser.add_argument("--orders", type=_ints, default=[100_000, 1_000_000])
    parser.add_argument("--modes", default="cold,standby", help="cold, standby or both")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--check", type=int, default=0, help="verify the synthetic table first")
    parser.add_argument("--history", action="store_true", help="six records per order")
    parser.add_argument(
        "--kafka-default-changelog",
        action="store_true",
        help="create the changelog with the broker's segment and cleaner defaults",
    )
    parser.add_argument(
        "--settle", type=float, default=0.0, help="seconds for the log cleaner after the fill"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument(
        "--connector-env", type=_env_pair, action="append", default=[], metavar="KEY=VALUE"
    )
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    bootstrap = external_bootstrap_servers()
    if not bootstrap:
        raise SystemExit("set KAFKA_BOOTSTRAP_SERVERS (the shared broker)")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir = args.out / f"{stamp}-rebuild-logs"
    log_dir.mkdir(parents=True)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    results: list[RebuildResult] = []
    lines = [f"`python -m bench.rebuild {' '.join(argv)}` (logs in {log_dir})", ""]
    with tempfile.TemporaryDirectory(prefix="bench-rebuild-") as data_dir:
        ctx = BenchContext(
            bootstrap=bootstrap,
            partitions=args.partitions,
            cap_s=DELIVERY_CAP_S,
            log_dir=log_dir,
            data_dir=Path(data_dir),
            connector_env={"CONNECTOR_LOG_LEVEL": "INFO", **dict(args.connector_env)},
        )
        if args.check:
            verdict = await check_table(ctx, args.check)
            _progress(verdict)
            lines += [verdict, ""]
        for orders in args.orders:
            for mode in modes:
                result = await run_rebuild(
                    ctx, orders, mode, args.history, args.settle, args.kafka_default_changelog
                )
                results.append(result)
                _progress(rebuild_table([result]).splitlines()[-1])
    report = "\n".join([*lines, rebuild_table(results)]) if results else "\n".join(lines)
    (args.out / f"{stamp}-rebuild.md").write_text(report + "\n", encoding="utf-8")
    print(report, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        return asyncio.run(_run(args, argv))
    except KeyboardInterrupt:
        return 130
    finally:
        REGISTRY.kill_all()


if __name__ == "__main__":
    sys.exit(main())
