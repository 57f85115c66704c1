"""The compose file's worker command and healthcheck, run for real (without Docker).

``python -m connector.slots connector worker`` claims ``worker-0`` in the state directory,
the worker becomes ready under that id, ``python -m connector.healthcheck`` reports it
alive, and SIGTERM stops it cleanly well within ``Settings.shutdown_grace_s``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from connector.local.worker import free_port
from connector.settings import Settings, child_environment
from tests.e2e.harness import Deployment

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(150)]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def _ready(port: int, process: subprocess.Popen[bytes], log: Path) -> dict[str, object]:
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as r:
                answer: dict[str, object] = json.loads(r.read())
                return answer
        except OSError:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the worker never became ready"
            time.sleep(0.3)


def test_compose_worker_command_and_healthcheck(deployment: Deployment, tmp_path: Path) -> None:
    worker = COMPOSE["services"]["worker"]
    command = [sys.executable if part == "python" else part for part in worker["command"]]
    assert command[1:3] == ["-m", "connector.slots"]
    # The console script, from this environment (the image has it on PATH).
    command[3:4] = [sys.executable, "-m", "connector.cli"]
    port = free_port()
    env = child_environment(
        {
            **deployment.env,
            "CONNECTOR_WEB_PORT": str(port),
            "CONNECTOR_DATA_DIR": str(tmp_path / "state"),
        }
    )
    env.pop("CONNECTOR_WORKER_ID", None)  # as in the compose file: the slot decides
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        answer = _ready(port, process, log)
        assert answer["worker_id"] == "worker-0"
        assert (tmp_path / "state/worker-0").is_dir()
        health = worker["healthcheck"]["test"][1:]
        check = subprocess.run(
            [sys.executable if part == "python" else part for part in health]
            + ["--pid", str(process.pid)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert check.returncode == 0, check.stderr
        assert process.poll() is None, "an alive worker is left alone"
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0, log.read_text()[-3000:]
        settings = Settings.model_validate({})
        assert time.monotonic() - started < settings.shutdown_grace_s
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
