"""The sandbox as a process: URL line, serving, SIGTERM and no process left behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from connector.sandbox import SandboxControl, SandboxProcess
from tests.sandbox.conftest import COMEET_TOKEN, INTEGRATION, KOMBO_KEY, TLS

URL_KEYS = {"kombo_url", "comeet_url"}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_sandbox_process_serves_and_stops_on_sigterm() -> None:
    process = SandboxProcess(kombo_key=KOMBO_KEY, comeet_token=COMEET_TOKEN)
    urls = process.start()
    pid = process.pid
    assert pid is not None
    try:
        assert urls.kombo_url.startswith("http://127.0.0.1:") and urls.kombo_url.endswith("/v1")
        assert urls.comeet_url.startswith("http://127.0.0.1:")
        # The keys travel in files, never on the command line.
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert KOMBO_KEY.encode() not in cmdline and COMEET_TOKEN.encode() not in cmdline

        with httpx.Client(verify=TLS, timeout=10) as http:
            kombo = http.put(
                f"{urls.kombo_url}/assessment/orders/o-1/result",
                json={"status": "OPEN", "result_url": "https://example.com"},
                headers={"Authorization": f"Bearer {KOMBO_KEY}", "X-Integration-Id": INTEGRATION},
            )
            comeet = http.post(
                f"{urls.comeet_url}/evaluation/status",
                params={"evaluation_id": "e-1"},
                json={"status": "Test started"},
                headers={"Authorization": f"Bearer {COMEET_TOKEN}"},
            )
        assert (kombo.status_code, comeet.status_code) == (200, 204)

        with SandboxControl(urls.kombo_url) as control:
            control.add_fault("error", status=503, count=1)
            assert control.state()["orders"][f"{INTEGRATION}/o-1"]["status"] == "OPEN"
            [entry] = control.requests()
            assert entry["headers"]["Authorization"] == "REDACTED"
            control.reset()
            assert control.requests() == [] and control.faults() == []
    finally:
        code = process.stop()

    assert code == 0  # a clean exit on SIGTERM
    assert _gone(pid)
    assert process.returncode is None  # forgotten after stop


def test_cli_prints_exactly_one_json_line_and_exits_on_sigterm() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "connector.sandbox",
            "--kombo-port",
            "0",
            "--comeet-port",
            "0",
            "--kombo-key",
            "k",
            "--comeet-token",
            "t",
            "--latency-ms",
            "0",
            "--host",
            "127.0.0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        urls = json.loads(proc.stdout.readline())
        assert set(urls) == URL_KEYS
        with httpx.Client(verify=TLS, timeout=10) as http:
            response = http.get(urls["comeet_url"] + "/_sandbox/state")
        assert response.json() == {"evaluations": {}}
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode == 0
    assert stdout == b""  # nothing after the URL line
    assert b"Traceback" not in stderr


def test_child_exits_when_its_stdin_closes() -> None:
    process = SandboxProcess(kombo_key="k", comeet_token="t")
    process.start()
    child = process._proc
    assert child is not None and child.stdin is not None
    try:
        child.stdin.close()  # what the OS does when the parent dies
        assert child.wait(timeout=10) == 0
    finally:
        process.stop()


def test_startup_failure_is_reported() -> None:
    # A port that is already taken: the child fails before printing its URLs.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = SandboxProcess(
            kombo_key="k",
            comeet_token="t",
            kombo_port=taken.getsockname()[1],
            stderr=subprocess.DEVNULL,
        )
        with pytest.raises(RuntimeError, match="exited"):
            process.start()

    assert process.pid is None
