"""``scripts/stack``: the README's operator walkthrough runs against the local stack.

The commands come from the README's walkthrough block itself, so the two cannot drift:
``scripts/stack up`` (the broker given by ``KAFKA_BOOTSTRAP_SERVERS`` when set, else its
own), then each ``connector`` command with the variables of ``.stack/env``, then ``status``
and ``down``, after which no process the stack started may be left.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connector.local.kafka import find_local_brokers
from connector.local.stack import StackRecord
from tests.conftest import NameFactory, use_external_kafka

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def walkthrough() -> list[str]:
    section = README.split("## Operator walkthrough", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    return [line.split("  #", 1)[0].strip() for line in block[1].splitlines() if line.strip()]


def env_file(path: Path) -> dict[str, str]:
    """What ``source .stack/env`` exports, as bash sees it (quoting, ``$PATH``)."""
    shown = subprocess.run(
        ["bash", "-c", 'source "$1" && env -0', "bash", str(path)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        check=True,
    ).stdout.decode()
    env = dict(item.split("=", 1) for item in shown.split("\0") if "=" in item)
    # The venv's `connector` comes first on the PATH it exports.
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent), env["PATH"]
    return {k: v for k, v in env.items() if k.startswith(("KAFKA_", "CONNECTOR_", "PATH"))}


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        argv,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_the_readme_walkthrough_runs_against_the_stack(
    tmp_path: Path, unique_name: NameFactory
) -> None:
    commands = walkthrough()
    assert commands[0] == "scripts/stack up" and commands[-1] == "scripts/stack down"
    assert commands[1] == "source .stack/env"
    directory = tmp_path / "stack"
    stack = [sys.executable, "-m", "connector.local.stack"]
    up = [*stack, "up", "--dir", str(directory), "--workers", "2"]
    external = use_external_kafka()
    if external:  # the shared broker: this run's own app id and topics
        up += ["--bootstrap", external, "--name", unique_name("stack")]
    # The operator's shell may have a broker set: the stack does not read it.
    clean = {"KAFKA_BOOTSTRAP_SERVERS": ""}
    started = run(up, clean, timeout=300)
    record = StackRecord.load(directory / "stack.json")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert record is not None
        workers = [p for p in record.procs if p.role == "worker"]
        assert len(workers) == 2 and all(p.alive() for p in record.procs)
        # The addresses and what to try next.
        out = started.stdout
        assert record.bootstrap in out and record.kombo_url in out and record.comeet_url in out
        for worker in workers:
            assert f"http://127.0.0.1:{worker.port}" in out
        assert f"source {directory / 'env'}" in out
        assert (directory / "env").stat().st_mode & 0o777 == 0o600
        for name in ("kafka.log", "sandbox.log", "worker-1.log", "worker-2.log"):
            assert (directory / "logs" / name).exists() or (name == "kafka.log" and external)

        env = env_file(directory / "env")
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == record.bootstrap
        outputs: dict[str, str] = {}
        for command in commands[2:-2]:
            argv = shlex.split(command)
            assert argv[0] == "connector", command
            argv = [sys.executable, "-m", "connector.cli", *argv[1:]]
            deadline = time.monotonic() + 60
            while True:  # the audit trail and the state arrive a moment after the publish
                result = run(argv, env)
                waits = argv[3] in ("audit", "order") and "delivered" not in result.stdout
                if not waits or time.monotonic() > deadline:
                    break
                time.sleep(1)
            assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
            outputs[argv[3]] = result.stdout
        check = outputs["check"].splitlines()
        assert check and all(line[12:].split()[0] in ("ok", "skip") for line in check), check
        assert "delivered" in outputs["audit"]
        assert "COMPLETED" in outputs["order"]

        status = run(["scripts/stack", "status", "--dir", str(directory)])
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count(" ready ") == 2, status.stdout
    finally:
        down = run(["scripts/stack", "down", "--dir", str(directory)], timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    assert record is not None
    assert not [p.name for p in record.procs if p.alive()]
    for launcher in (p for p in record.procs if p.role == "kafka"):
        assert not find_local_brokers(owner_pid=launcher.pid)
    assert not [p.port for p in record.procs if p.port and p.role == "worker" and port_open(p.port)]
    assert not (directory / "stack.json").exists()
    assert "no stack" in run(["scripts/stack", "status", "--dir", str(directory)]).stdout
