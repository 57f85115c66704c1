"""Table recovery survives a stalled round (issue 11, item 2; see ``connector/recovery.py``).

A single Faust worker (``tests/e2e/recovery_worker.py``) starts on a changelog that
already holds ``RECORDS`` records, so its first assignment runs an active recovery round,
and that round meets one injected fault:

* ``slow-step``: one recovery step outlasts ``broker_request_timeout``. faust-streaming
  0.15.3 then ends its recovery loop for good (``Recovery._wait`` raises
  ``ServiceStopped`` on a timeout): the worker logs "No event received for active tp ...
  since recovery start" forever and never becomes ready.
* ``lost-resume``: the active changelog partition is left paused, so no record arrives;
  faust only logs the same warning, forever.

With :class:`connector.kafka.recovery.ConnectorTableManager` the worker recovers every record and
becomes ready. ``RECOVERY_FIX=0`` runs the same test without the fix (it then fails, which
is the reproduction).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from connector.local.worker import free_port

pytestmark = [pytest.mark.kafka]

RECORDS = 400
WORKER = Path(__file__).with_name("recovery_worker.py")
FIX = os.environ.get("RECOVERY_FIX", "1") != "0"
READY_WITHIN_S = 40.0


async def fill(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        for i in range(RECORDS):
            await producer.send(topic, key=f"order-{i}".encode(), value=b"state", partition=0)
        await producer.flush()
    finally:
        await producer.stop()


async def state(client: httpx.AsyncClient, port: int) -> dict[str, Any] | None:
    with contextlib.suppress(httpx.HTTPError, ValueError):
        response = await client.get(f"http://127.0.0.1:{port}/state")
        result: dict[str, Any] = response.json()
        return result
    return None


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fault", ["slow-step", "lost-resume"])
async def test_recovery_completes_despite_a_stalled_round(
    kafka_bootstrap: str, unique_name: Any, create_topic: Any, tmp_path: Path, fault: str
) -> None:
    app_id = unique_name("recovery")
    events = await create_topic(unique_name("events"), 1)
    changelog = await create_topic(
        f"{app_id}-orders-changelog", 1, config={"cleanup.policy": "compact"}
    )
    await fill(kafka_bootstrap, changelog)

    port = free_port()
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            kafka_bootstrap,
            app_id,
            events,
            str(port),
            fault,
            "1" if FIX else "0",
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        last = None
        deadline = time.monotonic() + READY_WITHIN_S
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline and proc.returncode is None:
                last = await state(client, port)
                if last and last["ready"]:
                    break
                await asyncio.sleep(0.25)
        text = log_path.read_text(errors="replace")
        assert f"{fault}:" in text, "the fault was not injected"
        stall_lines = [line for line in text.splitlines() if "No event received" in line]
        assert last is not None and last["ready"], (
            f"worker not ready {READY_WITHIN_S:.0f} s after start ({fault}): {last}; "
            f"{len(stall_lines)} stall warnings, last: {stall_lines[-1:]}"
        )
        assert last["keys"] == RECORDS, last
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
