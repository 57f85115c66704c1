"""The implementations' processes: start, wait until ready, measure, stop.

- :class:`ConnectorGroup`: real ``connector worker`` processes
  (:class:`connector.local.worker.WorkerProcess`); ready when every worker's
  ``/health/ready`` answers 200 at the same time (a joining worker makes the others
  rebalance, so one worker's "ready" alone says little).
- :class:`BaselineGroup`: baseline processes; ready when their announced
  assignments split the topic's partitions between them.

Measurements come from ``/proc``: ``VmHWM`` (peak resident set) and the CPU time
of each process. Every process started is registered in :data:`REGISTRY` so the
benchmark can kill what is left on any exit path (Ctrl-C, errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

import httpx

from connector.local.worker import WorkerProcess
from connector.settings import child_environment

__all__ = [
    "REGISTRY",
    "BaselineGroup",
    "ConnectorGroup",
    "ImplementationGroup",
    "LoadMeter",
    "ProcessRegistry",
    "cpu_seconds",
    "machine_busy_seconds",
    "peak_rss_mb",
    "rss_mb",
]

logger = logging.getLogger(__name__)

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _status_kb(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def peak_rss_mb(pid: int) -> float | None:
    """The process's resident-set high-water mark (``VmHWM``), in MiB."""
    kb = _status_kb(pid, "VmHWM")
    return None if kb is None else kb / 1024


def rss_mb(pid: int) -> float | None:
    kb = _status_kb(pid, "VmRSS")
    return None if kb is None else kb / 1024


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process has used so far."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            text = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces; the fields after it do not.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time all cores spent busy since boot (``/proc/stat``; idle and iowait excluded)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _CLOCK_TICKS


class LoadMeter:
    """How much of the machine processes other than ours used during a run.

    The machine may be shared (other test suites, other brokers): a run's figures
    mean little if half the cores were busy elsewhere, so each run reports it.
    """

    def __init__(self, pids: list[int]) -> None:
        self._pids = [*pids, os.getpid()]
        self._t0 = time.monotonic()
        self._busy0 = machine_busy_seconds()
        self._ours0 = self._ours()

    def _ours(self) -> float:
        return sum(cpu_seconds(pid) or 0.0 for pid in self._pids)

    def others_cores(self) -> float:
        """Mean number of cores used by other processes since the meter started."""
        elapsed = time.monotonic() - self._t0
        if elapsed <= 0:
            return 0.0
        busy = machine_busy_seconds() - self._busy0
        ours = self._ours() - self._ours0
        return max(0.0, busy - ours) / elapsed


class ProcessRegistry:
    """Last-resort cleanup: a kill function per live process."""

    def __init__(self) -> None:
        self._kills: dict[int, Callable[[], None]] = {}
        self._lock = threading.Lock()

    def add(self, key: int, kill: Callable[[], None]) -> None:
        with self._lock:
            self._kills[key] = kill

    def discard(self, key: int) -> None:
        with self._lock:
            self._kills.pop(key, None)

    def kill_all(self) -> None:
        with self._lock:
            kills = list(self._kills.values())
            self._kills.clear()
        for kill in kills:
            try:
                kill()
            except Exception:  # keep killing the others
                logger.exception("could not kill a benchmark process")


REGISTRY = ProcessRegistry()


class ImplementationGroup(Protocol):
    """N processes of one implementation in one consumer group."""

    @property
    def pids(self) -> list[int]: ...

    def dead(self) -> list[str]: ...

    async def start(self, timeout: float) -> None: ...

    async def stop(self) -> None: ...


class ConnectorGroup:
    def __init__(
        self,
        env: dict[str, str],
        count: int,
        log_dir: Path,
        label: str,
        argv: list[str] | None = None,
    ) -> None:
        # ``argv``: another checkout's worker (``bench.run --before``); default, this tree's.
        self._workers = [
            WorkerProcess(
                env,
                worker_id=f"w{i + 1}",
                log_path=log_dir / f"{label}-w{i + 1}.log",
                argv=argv,
            )
            for i in range(count)
        ]

    @property
    def workers(self) -> list[WorkerProcess]:
        return list(self._workers)

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.pid is not None]

    def dead(self) -> list[str]:
        return [f"{w.worker_id} (log {w.log_path})" for w in self._workers if not w.running]

    async def start(self, timeout: float) -> None:
        for worker in self._workers:
            worker.start(wait_ready=None)
            REGISTRY.add(id(worker), worker.kill)
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while not await self._all_ready(client):
                if self.dead():
                    raise RuntimeError(f"connector worker exited while starting: {self.dead()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"connector workers not ready within {timeout:.0f} s")
                await asyncio.sleep(0.25)

    async def _all_ready(self, client: httpx.AsyncClient) -> bool:
        for worker in self._workers:
            try:
                response = await client.get(f"http://127.0.0.1:{worker.web_port}/health/ready")
            except httpx.HTTPError:
                return False
            if response.status_code != 200:
                return False
        return True

    async def stop(self) -> None:
        # In parallel: each graceful Faust shutdown takes seconds.
        await asyncio.gather(*(asyncio.to_thread(w.stop, 30.0) for w in self._workers))
        for worker in self._workers:
            REGISTRY.discard(id(worker))


class _Baseline:
    """One baseline process; a thread follows its stdout for assignment lines."""

    def __init__(
        self, module: str, env: dict[str, str], log_path: Path, python: str = sys.executable
    ) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.proc = subprocess.Popen(
            [python, "-m", module],
            env=child_environment({**env, "PYTHONUNBUFFERED": "1"}),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,  # our Ctrl-C is not theirs: we stop them ourselves
        )
        self.assigned: frozenset[int] = frozenset()
        self._reader = threading.Thread(target=self._follow, daemon=True)
        self._reader.start()

    def _follow(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and "assigned" in message:
                self.assigned = frozenset(message["assigned"])

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        if self.running:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()

    def stop(self, timeout: float) -> None:
        if self.running:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("baseline %s ignored SIGTERM; killing it", self.proc.pid)
        self.kill()


class BaselineGroup:
    def __init__(
        self,
        module: str,
        env: dict[str, str],
        count: int,
        partitions: int,
        log_dir: Path,
        label: str,
        python: str = sys.executable,
    ) -> None:
        self._module = module
        self._python = python
        self._env = env
        self._count = count
        self._partitions = partitions
        self._log_dir = log_dir
        self._label = label
        self._procs: list[_Baseline] = []

    @property
    def pids(self) -> list[int]:
        return [p.proc.pid for p in self._procs]

    def dead(self) -> list[str]:
        return [f"pid {p.proc.pid} (log {p.log_path})" for p in self._procs if not p.running]

    def _split(self) -> bool:
        """Every partition owned by exactly one process, and every process busy."""
        owned = [p.assigned for p in self._procs]
        if sum(len(o) for o in owned) != self._partitions:
            return False
        if frozenset().union(*owned) != frozenset(range(self._partitions)):
            return False
        return all(owned) or self._count > self._partitions

    async def start(self, timeout: float) -> None:
        for i in range(self._count):
            log_path = self._log_dir / f"{self._label}-p{i + 1}.log"
            proc = _Baseline(self._module, self._env, log_path, self._python)
            self._procs.append(proc)
            REGISTRY.add(id(proc), proc.kill)
        deadline = time.monotonic() + timeout
        while not self._split():
            if self.dead():
                raise RuntimeError(f"baseline exited while starting: {self.dead()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"baseline processes not assigned within {timeout:.0f} s")
            await asyncio.sleep(0.25)

    async def stop(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(p.stop, 20.0) for p in self._procs))
        for proc in self._procs:
            REGISTRY.discard(id(proc))
