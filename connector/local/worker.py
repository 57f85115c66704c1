"""Run ``connector worker`` as a child process: for the demo, the tests and the benchmark.

The child is a real worker (its own process, event loop and consumer-group
member). :meth:`WorkerProcess.kill` sends SIGKILL, for crash tests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

from connector.settings import child_environment

__all__ = ["WorkerProcess", "free_port"]

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class WorkerProcess:
    """One worker. ``env`` holds ``CONNECTOR_*`` / ``KAFKA_*`` settings for it."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        worker_id: str,
        log_path: Path,
        web_port: int | None = None,
        argv: list[str] | None = None,
    ) -> None:
        self.worker_id = worker_id
        # The command that runs the worker (tests run wrappers that inject faults).
        self._argv = argv or [sys.executable, "-m", "connector.cli", "worker"]
        self.web_port = web_port or free_port()
        self.log_path = log_path
        self._env = {
            **env,
            "CONNECTOR_WORKER_ID": worker_id,
            "CONNECTOR_WEB_PORT": str(self.web_port),
            "PYTHONUNBUFFERED": "1",
        }
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._terminated = False  # SIGTERM sent to the current process

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, *, wait_ready: float | None = 60.0) -> None:
        self._log = self.log_path.open("ab")
        self._terminated = False
        self._proc = subprocess.Popen(
            self._argv,
            env=child_environment(self._env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait_ready:
            self.wait_ready(wait_ready)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.web_port}/health/ready"
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"worker {self.worker_id} exited; log: {self.log_path}")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"worker {self.worker_id} not ready in {timeout}s; log: {self.log_path}")

    def terminate(self) -> None:
        """Ask for a graceful stop (SIGTERM, once) without waiting: :meth:`stop` waits."""
        if self._proc is not None and self._proc.poll() is None and not self._terminated:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)
            self._terminated = True

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM: in-flight work drains), then SIGKILL."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("worker %s did not stop in %ss; killing", self.worker_id, timeout)
                self.kill()
        self._close()

    def kill(self) -> None:
        """SIGKILL: a crash, nothing drains."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(10)
        self._close()

    def _close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
