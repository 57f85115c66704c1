"""``scripts/stack up|down|status``: the connector on this machine, in the background.

``up`` starts a local Kafka broker (``python -m connector.local.kafka``; or uses the one
``--bootstrap`` names), the sandbox Kombo and Comeet servers (``python -m
connector.sandbox``) and ``--workers`` workers (:class:`~connector.local.worker.WorkerProcess`,
as the demo runs them), each detached from the terminal with its log in
``<dir>/logs/``; creates the topics; writes ``<dir>/env`` (the variables the ``connector``
commands need, sandbox keys included, mode 0600) and ``<dir>/stack.json`` (what it started:
pid, process start time, port); prints the addresses and what to try next, and returns.

``down`` stops exactly what ``stack.json`` records (a pid whose start time no longer
matches is another process now and is left alone): the workers first (SIGTERM, they drain),
then the sandbox and the broker. ``status`` shows what runs and whether each worker is ready.

The environment the workers get is the demo's (:func:`deployment_env`): sandbox vendors,
never real ones.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from connector.settings import Settings, TopicSettings, child_environment

__all__ = [
    "Proc",
    "StackRecord",
    "deployment_env",
    "deployment_settings",
    "down",
    "main",
    "status",
    "up",
]

logger = logging.getLogger(__name__)

DEFAULT_DIR = Path(".stack")
DEFAULT_APP_ID = Settings.model_fields["app_id"].default
KAFKA_PORT = 9092  # what the README's examples and most Kafka tools assume
FIRST_WEB_PORT = 6066
_STOP_WAIT_S = 60.0


def deployment_env(
    *,
    bootstrap: str,
    kombo_url: str,
    kombo_key: str,
    comeet_url: str,
    comeet_token: str,
    name: str | None = None,
) -> dict[str, str]:
    """A local deployment's variables: the sandboxes as vendors; ``name`` prefixes the app id
    and topics (none: the defaults, ``assessment.events`` ...)."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CONNECTOR_KOMBO__BASE_URL": kombo_url,
        "CONNECTOR_KOMBO__API_KEY": kombo_key,
        "CONNECTOR_COMEET__BASE_URL": comeet_url,
        "CONNECTOR_COMEET__TOKEN": comeet_token,
    }
    # Always spelled out: a shell that sourced another stack's env file must not lend
    # its app id or topics to this one's workers.
    defaults = TopicSettings()
    env |= {
        "CONNECTOR_APP_ID": name or DEFAULT_APP_ID,
        "CONNECTOR_TOPICS__EVENTS": f"{name}.events" if name else defaults.events,
        "CONNECTOR_TOPICS__AUDIT": f"{name}.audit" if name else defaults.audit,
        "CONNECTOR_TOPICS__DEAD_LETTER": f"{name}.dlq" if name else defaults.dead_letter,
    }
    return env


def deployment_settings(env: dict[str, str]) -> Settings:
    """The settings those variables give, without reading this process's environment."""
    topics: dict[str, object] = {
        "events": env["CONNECTOR_TOPICS__EVENTS"],
        "audit": env["CONNECTOR_TOPICS__AUDIT"],
        "dead_letter": env["CONNECTOR_TOPICS__DEAD_LETTER"],
    }
    if "CONNECTOR_TOPICS__PARTITIONS" in env:
        topics["partitions"] = int(env["CONNECTOR_TOPICS__PARTITIONS"])
    return Settings(
        app_id=env["CONNECTOR_APP_ID"],
        kafka={"bootstrap_servers": env["KAFKA_BOOTSTRAP_SERVERS"]},
        topics=topics,
    )


# -- processes we started, and only those ---------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat``), or None
    when it is gone or a zombie: with the pid it names one process, not a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


@dataclass
class Proc:
    role: str  # kafka | sandbox | worker
    name: str
    pid: int
    started: str
    port: int | None = None
    log: str = ""

    def alive(self) -> bool:
        return _start_time(self.pid) == self.started

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            # Each was started in its own session: its group holds its children (the JVM).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)


@dataclass
class StackRecord:
    bootstrap: str
    kombo_url: str
    comeet_url: str
    env_file: str
    procs: list[Proc] = field(default_factory=list)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> StackRecord | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        procs = [Proc(**p) for p in data.pop("procs")]
        return cls(**data, procs=procs)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _port(preferred: int, taken: set[int]) -> int:
    from connector.local.worker import free_port

    port = preferred if preferred not in taken and _port_free(preferred) else free_port()
    taken.add(port)
    return port


def _spawn(argv: list[str], log: Path, *, stdout: Path | None = None) -> subprocess.Popen[bytes]:
    """A detached child: its own session (no terminal signals), stdin closed."""
    with log.open("ab") as err, (stdout or log).open("ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=child_environment({"PYTHONUNBUFFERED": "1"}),
            start_new_session=True,
        )


def _first_line(proc: subprocess.Popen[bytes], path: Path, timeout: float, what: str) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        if "\n" in text:
            return text.split("\n", 1)[0].strip()
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}) before it was ready")
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready in {timeout:.0f} s")


def _proc(
    role: str, name: str, popen: subprocess.Popen[bytes], log: Path, port: int | None
) -> Proc:
    started = _start_time(popen.pid)
    if started is None:
        raise RuntimeError(f"{name} exited at once; log: {log}")
    return Proc(role, name, popen.pid, started, port, str(log))


# -- up / down / status -------------------------------------------------------------------


def up(
    directory: Path,
    *,
    workers: int = 2,
    bootstrap: str | None = None,
    name: str | None = None,
    kafka_port: int = KAFKA_PORT,
) -> StackRecord:
    from connector.infra.kafka_clients import ensure_topics
    from connector.local.worker import WorkerProcess

    record_path = directory / "stack.json"
    existing = StackRecord.load(record_path)
    if existing is not None and any(p.alive() for p in existing.procs):
        raise RuntimeError(f"a stack already runs from {directory}: `scripts/stack status`")
    logs = directory / "logs"
    for stale in (logs, directory / "kafka", directory / "state", directory / "run"):
        shutil.rmtree(stale, ignore_errors=True)
    logs.mkdir(parents=True)
    run = directory / "run"
    run.mkdir()
    taken: set[int] = set()
    record = StackRecord("", "", "", str(directory / "env"))
    try:
        if bootstrap is None:
            port = _port(kafka_port, taken)
            print(f"starting a local Kafka broker on 127.0.0.1:{port} ...", flush=True)
            launcher = _spawn(
                [
                    sys.executable,
                    "-m",
                    "connector.local.kafka",
                    "--port",
                    str(port),
                    "--data-dir",
                    str((directory / "kafka").resolve()),
                    "--log-file",
                    str((logs / "kafka.log").resolve()),
                    "--timeout",
                    "120",
                ],
                logs / "kafka-launcher.log",
                stdout=run / "kafka.out",
            )
            record.procs.append(_proc("kafka", "kafka", launcher, logs / "kafka.log", port))
            record.save(record_path)
            bootstrap = _first_line(launcher, run / "kafka.out", 180, "the Kafka broker")
        record.bootstrap = bootstrap

        kombo_key, comeet_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        for file, secret in ((run / "kombo-key", kombo_key), (run / "comeet-token", comeet_token)):
            file.touch(mode=0o600)
            file.write_text(secret, encoding="utf-8")
        sandbox = _spawn(
            [
                sys.executable,
                "-m",
                "connector.sandbox",
                "--kombo-key-file",
                str(run / "kombo-key"),
                "--comeet-token-file",
                str(run / "comeet-token"),
            ],
            logs / "sandbox.log",
            stdout=run / "sandbox.out",
        )
        record.procs.append(_proc("sandbox", "sandbox", sandbox, logs / "sandbox.log", None))
        record.save(record_path)
        urls = json.loads(_first_line(sandbox, run / "sandbox.out", 30, "the sandbox"))
        record.kombo_url, record.comeet_url = urls["kombo_url"], urls["comeet_url"]

        env = deployment_env(
            bootstrap=bootstrap,
            kombo_url=record.kombo_url,
            kombo_key=kombo_key,
            comeet_url=record.comeet_url,
            comeet_token=comeet_token,
            name=name,
        )
        _write_env(Path(record.env_file), env)
        asyncio.run(ensure_topics(deployment_settings(env)))
        worker_env = {
            **env,
            "CONNECTOR_DATA_DIR": str((directory / "state").resolve()),
            "CONNECTOR_LOG_JSON": "false",
        }
        started: list[WorkerProcess] = []
        for i in range(1, workers + 1):
            worker = WorkerProcess(
                worker_env,
                worker_id=f"worker-{i}",
                log_path=logs / f"worker-{i}.log",
                web_port=_port(FIRST_WEB_PORT + i - 1, taken),
            )
            print(f"starting worker-{i} on port {worker.web_port} ...", flush=True)
            worker.start(wait_ready=None)
            assert worker.pid is not None
            started_at = _start_time(worker.pid)
            if started_at is None:
                raise RuntimeError(f"worker-{i} exited at once; log: {worker.log_path}")
            record.procs.append(
                Proc(
                    "worker",
                    f"worker-{i}",
                    worker.pid,
                    started_at,
                    worker.web_port,
                    str(worker.log_path),
                )
            )
            record.save(record_path)
            started.append(worker)
        for worker in started:  # they join the group together: one rebalance, not N
            worker.wait_ready(180)
    except BaseException:
        print("start failed; stopping what was started", file=sys.stderr, flush=True)
        _stop(record.procs)
        record_path.unlink(missing_ok=True)
        raise
    record.save(record_path)
    return record


def _write_env(path: Path, env: dict[str, str]) -> None:
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)  # the sandbox keys: local and random, still not for everyone
    lines = [f"export {key}={shlex.quote(value)}" for key, value in env.items()]
    # The `connector` command of the environment that started the stack (its venv), so
    # that `source <dir>/env` is all a new shell needs.
    bin_dir = Path(sys.executable).parent
    lines.append(f'export PATH={shlex.quote(str(bin_dir))}:"$PATH"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _stop(procs: Sequence[Proc]) -> list[Proc]:
    """Workers first (they drain), then the sandbox, then the broker; returns survivors."""
    survivors: list[Proc] = []
    for role in ("worker", "sandbox", "kafka"):
        group = [p for p in procs if p.role == role and p.alive()]
        for proc in group:
            proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_WAIT_S
        while any(p.alive() for p in group) and time.monotonic() < deadline:
            time.sleep(0.2)
        for proc in group:
            if proc.alive():
                logger.warning("%s (pid %d) ignored SIGTERM; killing it", proc.name, proc.pid)
                proc.signal(signal.SIGKILL)
        if role == "kafka":
            survivors += _orphaned_brokers(group)
        time.sleep(0.2)
        survivors += [p for p in group if p.alive()]
    return survivors


def _orphaned_brokers(launchers: Sequence[Proc]) -> list[Proc]:
    """A broker JVM whose launcher died without stopping it (found by its owner property)."""
    from connector.local.kafka import find_local_brokers

    left = []
    for launcher in launchers:
        for pid in find_local_brokers(owner_pid=launcher.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            left.append(Proc("kafka", "kafka-jvm", pid, _start_time(pid) or ""))
    time.sleep(0.5 if left else 0)
    return [p for p in left if p.started and p.alive()]


def down(directory: Path) -> int:
    record_path = directory / "stack.json"
    record = StackRecord.load(record_path)
    if record is None:
        print(f"no stack recorded in {directory}: nothing to stop")
        return 0
    for proc in record.procs:
        state = "stopping" if proc.alive() else "already gone"
        print(f"{proc.name:<10} pid {proc.pid:<8} {state}", flush=True)
    survivors = _stop(record.procs)
    if survivors:
        for proc in survivors:
            print(f"{proc.name} (pid {proc.pid}) is still running", file=sys.stderr)
        return 1
    record_path.unlink()
    print(f"stopped; logs kept in {directory / 'logs'}")
    return 0


def status(directory: Path) -> int:
    record = StackRecord.load(directory / "stack.json")
    if record is None:
        print(f"no stack recorded in {directory}: `scripts/stack up` starts one")
        return 3
    running = 0
    for proc in record.procs:
        state = "running" if proc.alive() else "stopped"
        running += state == "running"
        if proc.role == "worker" and state == "running":
            state = _health(proc.port)
        port = f"port {proc.port}" if proc.port else ""
        print(f"{proc.name:<10} pid {proc.pid:<8} {state:<9} {port:<10} log {proc.log}")
    print(f"bootstrap  {record.bootstrap}")
    print(f"kombo url  {record.kombo_url}\ncomeet url {record.comeet_url}")
    return 0 if running == len(record.procs) else 1


def _health(port: int | None) -> str:
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2.0)
    except httpx.HTTPError:
        return "starting"
    return "ready" if answer.status_code == 200 else "not-ready"


def next_steps(record: StackRecord, directory: Path) -> str:
    workers = [p for p in record.procs if p.role == "worker"]
    web = "\n".join(
        f"  {p.name}  http://127.0.0.1:{p.port}  (/health/ready, /metrics, /orders/KEY)"
        for p in workers
    )
    key = "kombo|greenhouse:HWUTwvyx2wLoSUHphiWVrp28|order-1001"
    metrics = f"http://127.0.0.1:{workers[0].port if workers else FIRST_WEB_PORT}/metrics"
    return f"""
stack up: logs in {directory / "logs"}
  Kafka           {record.bootstrap}
  sandbox Kombo   {record.kombo_url}
  sandbox Comeet  {record.comeet_url}
{web}

Try it (README "Operator walkthrough"):
  source {record.env_file}      # KAFKA_BOOTSTRAP_SERVERS, topics, sandbox URLs and keys, PATH
  connector check
  connector publish topics/examples/order.completed.kombo.json
  connector audit tail --last 20
  connector order show '{key}'
  connector dlq list
  connector target list
  curl -s {metrics} | grep connector_events_total
  scripts/stack status
  scripts/stack down
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/stack", description="The connector locally, in the background."
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state, logs and record")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--kafka-port", type=int, default=KAFKA_PORT, help="if free")
    parser.add_argument(
        "--name", help="app id and topic prefix (default: the connector's default names)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    directory: Path = args.dir
    if args.action == "down":
        return down(directory)
    if args.action == "status":
        return status(directory)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    directory.mkdir(parents=True, exist_ok=True)
    try:
        record = up(
            directory,
            workers=args.workers,
            bootstrap=args.bootstrap,
            name=args.name,
            kafka_port=args.kafka_port,
        )
    except (RuntimeError, TimeoutError) as exc:
        print(f"scripts/stack: {exc}", file=sys.stderr)
        return 1
    print(next_steps(record, directory))
    return 0


if __name__ == "__main__":
    sys.exit(main())
