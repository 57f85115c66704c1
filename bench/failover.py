"""Crash-to-first-delivery: SIGKILL one of two workers under a steady load.

    python -m bench.failover [--rate 300] [--before-kill 15] [--after-kill S]
                             [--steady-seconds 60] [--saturate-orders 10000] [--runs 1]
                             [--variants kill,restart,steady,saturate]
                             [--session-timeout S] [--heartbeat S] [--set KEY=VALUE ...]

Two real ``connector worker`` processes (:class:`bench.processes.ConnectorGroup`) in one
group, a sandbox at ``--latency-ms``, fresh orders (:mod:`bench.workload`) paced at
``--rate`` events/s over ``--partitions`` partitions. Variants:

- ``kill``: after ``--before-kill`` seconds one worker gets SIGKILL and stays dead; the
  load goes on for ``--after-kill`` seconds (default: the session timeout + 30 s).
- ``restart``: the same, and the killed worker is started again at once with the same
  worker id (a StatefulSet pod, a Compose container with a restart policy).
- ``steady``: no kill, ``--steady-seconds`` of the paced load: rebalances in the logs
  are spurious ones.
- ``saturate``: no kill, ``--saturate-orders`` orders sent unpaced (workers saturated).

Which partitions the killed worker owned comes from its ``/metrics`` just before the
kill (the consumer lag series lists the assigned partitions); the figures come from the
sandbox's recorded requests (:mod:`bench.failover_analysis`). A rebalance is a
"Joined group" line in a worker's log (aiokafka logs one per group generation joined).

Settings: the shipped defaults unless ``--session-timeout``, ``--heartbeat`` or ``--set
CONNECTOR_...=value`` say otherwise. Kafka: ``KAFKA_BOOTSTRAP_SERVERS``, else a local
broker. Prints one Markdown table; logs stay in ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import re
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

from bench.failover_analysis import Takeover, partition_of_orders, takeover
from bench.observe import RunSandbox
from bench.processes import REGISTRY, ConnectorGroup, LoadMeter
from bench.scenario import BenchContext, connector_env, new_run_id
from bench.workload import EventProducer, create_topic, delete_topics, make_orders, waves
from connector.local.kafka import LocalKafka
from connector.local.worker import WorkerProcess
from connector.settings import KafkaSettings, external_bootstrap_servers

__all__ = ["main"]

VARIANTS = ("kill", "restart", "steady", "saturate")
READY_TIMEOUT_S = 180.0
DRAIN_S = 90.0  # after the load: time left for the backlog to be delivered
_JOINED = b"Joined group"


@dataclass(frozen=True)
class Outcome:
    variant: str
    seconds: float  # of load
    delivered_s: float  # from the first send until every request arrived (or the drain cap)
    delivered: int
    expected: int
    rebalances: dict[str, int]  # worker id -> groups joined during the load
    others_cores: float
    victim: tuple[int, ...] = ()
    victim_id: str = ""
    figures: Takeover | None = None


def _progress(message: str) -> None:
    print(f"[failover {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def _joins(log: Path, since: int) -> int:
    with log.open("rb") as file:
        file.seek(since)
        return file.read().count(_JOINED)


def _size(log: Path) -> int:
    return log.stat().st_size if log.exists() else 0


async def _owned(worker: WorkerProcess, topic: str) -> set[int]:
    """The events partitions ``worker`` is assigned (its consumer lag series)."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        text = (await client.get(f"http://127.0.0.1:{worker.web_port}/metrics")).text
    pattern = re.compile(
        r'^connector_consumer_lag\{[^}]*partition="(\d+)"[^}]*topic="' + re.escape(topic) + '"'
        r'|^connector_consumer_lag\{[^}]*topic="' + re.escape(topic) + r'"[^}]*partition="(\d+)"',
        re.MULTILINE,
    )
    return {int(a or b) for a, b in pattern.findall(text)}


async def _wait_count(sandbox: RunSandbox, expected: int, deadline: float) -> int:
    while True:
        count = await sandbox.count()
        if count >= expected or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.5)


async def run_variant(ctx: BenchContext, args: argparse.Namespace, variant: str) -> Outcome:
    run_id = new_run_id()
    label = f"failover-{variant}-{run_id}"
    paced = variant != "saturate"
    if variant in ("kill", "restart"):
        load_s = args.before_kill + args.after_kill
    else:
        load_s = args.steady_seconds
    orders = make_orders(
        run_id, math.ceil(args.rate * load_s / 3) if paced else args.saturate_orders
    )
    expected = 3 * len(orders)
    (ctx.data_dir / run_id).mkdir(parents=True, exist_ok=True)
    try:
        async with RunSandbox(args.latency_ms, ctx.log_dir / f"{label}-sandbox.log") as sandbox:
            topic = f"bench-events-{run_id}"
            await create_topic(ctx.bootstrap, topic, ctx.partitions)
            env = connector_env(ctx, run_id, topic, sandbox)
            group = ConnectorGroup(env, 2, ctx.log_dir, label)
            try:
                await group.start(READY_TIMEOUT_S)
                survivor, victim = group.workers
                if args.victim == "w1":  # w1 usually joined first: the group's leader
                    survivor, victim = victim, survivor
                logs = {w.worker_id: (w.log_path, _size(w.log_path)) for w in group.workers}
                meter = LoadMeter([*group.pids, *(p for p in (sandbox.pid,) if p)])
                async with EventProducer(ctx.bootstrap, topic) as producer:
                    sending = asyncio.create_task(
                        producer.send(waves(orders), rate=args.rate if paced else None)
                    )
                    started = time.monotonic()
                    owned: set[int] = set()
                    killed_at = 0.0
                    if variant in ("kill", "restart"):
                        await asyncio.sleep(args.before_kill)
                        owned = await _owned(victim, topic)
                        if not owned:  # no series yet: the complement of the survivor's
                            owned = set(range(ctx.partitions)) - await _owned(survivor, topic)
                        victim.kill()  # returns once the process is reaped
                        killed_at = time.time()
                        _progress(f"{variant}: killed {victim.worker_id} owning {sorted(owned)}")
                        if variant == "restart":
                            victim.start(wait_ready=None)
                    await sending
                    load = time.monotonic() - started
                count = await _wait_count(sandbox, expected, time.monotonic() + DRAIN_S)
                delivered_s = time.monotonic() - started
                others = meter.others_cores()
                rebalances = {wid: _joins(path, since) for wid, (path, since) in logs.items()}
            finally:
                await group.stop()
            entries = await sandbox.recorded()
    finally:
        with contextlib.suppress(Exception):
            await delete_topics(ctx.bootstrap, run_id)
    figures = None
    if owned:
        figures = takeover(
            entries,
            partition_of_orders(orders, ctx.partitions),
            owned,
            killed_at,
            window_s=args.after_kill,
        )
    return Outcome(
        variant=variant,
        seconds=load,
        delivered_s=delivered_s,
        delivered=count,
        expected=expected,
        rebalances=rebalances,
        others_cores=others,
        victim=tuple(sorted(owned)),
        victim_id=victim.worker_id if owned else "",
        figures=figures,
    )


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def table(outcomes: Sequence[Outcome], settings: str) -> str:
    rows = [
        f"Settings: {settings}",
        "",
        "| variant | load (all delivered) | kill → first delivery on its partitions "
        "| backlog caught up | survivor's longest gap | rebalances (w1 / w2) | requests / events "
        "| others' load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for o in outcomes:
        f = o.figures
        joins = " / ".join(str(o.rebalances.get(w, "?")) for w in ("w1", "w2"))
        backlog = f"{_s(f.caught_up_s)} ({f.backlog} events)" if f else "—"
        name = f"{o.variant} {o.victim_id}".strip()
        rows.append(
            f"| {name} | {o.seconds:.0f} s ({o.delivered_s:.0f} s) "
            f"| {_s(f.first_delivery_s) if f else '—'} | {backlog} "
            f"| {_s(f.survivor_gap_s) if f else '—'} | {joins} "
            f"| {o.delivered:,} / {o.expected:,} | {o.others_cores:.2f} cores |"
        )
    return "\n".join(rows)


@contextlib.asynccontextmanager
async def _kafka(log_dir: Path) -> AsyncIterator[str]:
    external = external_bootstrap_servers()
    if external:
        yield external
        return
    kafka = LocalKafka(log_file=log_dir / "broker.log")
    REGISTRY.add(id(kafka), kafka.stop)
    try:
        await asyncio.to_thread(kafka.start)
        yield kafka.bootstrap_servers
    finally:
        await asyncio.to_thread(kafka.stop)
        REGISTRY.discard(id(kafka))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.failover", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--variants", default="kill,restart,steady")
    parser.add_argument("--runs", type=int, default=1, help="runs of each variant")
    parser.add_argument("--rate", type=float, default=300.0, help="events/s")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--victim", choices=("w1", "w2"), default="w2")
    parser.add_argument("--before-kill", type=float, default=15.0)
    parser.add_argument("--after-kill", type=float, default=None)
    parser.add_argument("--steady-seconds", type=float, default=60.0)
    parser.add_argument("--saturate-orders", type=int, default=10_000)
    parser.add_argument("--session-timeout", type=float, default=None)
    parser.add_argument("--heartbeat", type=float, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
    return args


def _settings(args: argparse.Namespace) -> dict[str, str]:
    env = dict(item.split("=", 1) for item in args.set)
    if args.session_timeout is not None:
        env["CONNECTOR_KAFKA__SESSION_TIMEOUT_S"] = str(args.session_timeout)
    if args.heartbeat is not None:
        env["CONNECTOR_KAFKA__HEARTBEAT_INTERVAL_S"] = str(args.heartbeat)
    return env


async def _main(args: argparse.Namespace) -> str:
    env = _settings(args)
    session = float(
        env.get("CONNECTOR_KAFKA__SESSION_TIMEOUT_S", KafkaSettings().session_timeout_s)
    )
    if args.after_kill is None:
        args.after_kill = session + 30.0
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir = args.out / f"failover-{stamp}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    async with _kafka(log_dir) as bootstrap:
        ctx = BenchContext(
            bootstrap=bootstrap,
            partitions=args.partitions,
            cap_s=0.0,
            log_dir=log_dir,
            data_dir=log_dir / "data",
            connector_env=env,
        )
        for variant in args.variants.split(","):
            for n in range(args.runs):
                _progress(f"{variant} run {n + 1}/{args.runs}")
                outcome = await run_variant(ctx, args, variant)
                _progress(f"{outcome}")
                outcomes.append(outcome)
    shown = ", ".join(f"{k}={v}" for k, v in sorted(env.items())) or "shipped defaults"
    described = (
        f"{shown}; {args.rate:g} events/s paced over {args.partitions} partitions, "
        f"sandbox {args.latency_ms:g} ms; logs in {log_dir}"
    )
    return table(outcomes, described)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        print(asyncio.run(_main(args)))
    finally:
        REGISTRY.kill_all()


if __name__ == "__main__":
    main()
