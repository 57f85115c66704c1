"""The compose stack really running, under podman: ``scripts/containers test`` builds the images
from Debian's packages, starts the broker, the sandbox and two workers (healthchecks green, the
secret files readable by the image's user), restarts a worker, publishes an event from the host
and reads its audit record from the host, then tears everything down.

Marked ``containers`` and left out of the default run (``-m 'not containers'`` in pyproject):
it needs root and podman, takes about 40 s with the images cached and 3 minutes on a first
build. Run it with ``.venv/bin/pytest -m containers tests/test_containers.py``.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from connector.settings import child_environment

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "containers"
CANNOT_RUN = 3  # scripts/containers: podman cannot run on this machine


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.containers
@pytest.mark.timeout(900)
def test_the_compose_stack_runs_under_podman(tmp_path: Path) -> None:
    kafka, kombo, comeet = _free_ports(3)
    env = child_environment(
        {
            # Its own project and ports: a stack someone runs by hand is left alone.
            "CONTAINERS_PROJECT": f"connector-test-{os.getpid()}",
            "CONTAINERS_KAFKA_PORT": str(kafka),
            "CONTAINERS_KOMBO_PORT": str(kombo),
            "CONTAINERS_COMEET_PORT": str(comeet),
        }
    )
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # the script points the host CLI at its broker
    log = tmp_path / "containers.log"
    with log.open("wb") as out:
        run = subprocess.run(
            [str(SCRIPT), "test"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    output = log.read_text(encoding="utf-8", errors="replace")
    if run.returncode == CANNOT_RUN:
        pytest.skip(output.strip().splitlines()[-1])
    assert run.returncode == 0, output[-4000:]
    assert "/run/secrets/kombo_api_key readable" in output
    assert '"outcome": "delivered"' in output
    assert "containers test passed" in output
