"""The container healthcheck: is the worker alive, and restart it when it is stalled.

``/health/live`` answers 503 ``stalled`` once a worker has not become ready for
``CONNECTOR_RECOVERY_STALL_S`` (a stalled table recovery). Kubernetes restarts such a
pod from its liveness probe, but Docker only marks a container unhealthy and never
restarts it for that, so this check, run by Docker's ``healthcheck``, also sends
SIGTERM to the worker (PID 1 in its container): the worker stops cleanly and the
``restart: unless-stopped`` policy starts it again, which restarts recovery.

``python -m connector.healthcheck [--restart-stalled]``: exit 0 when alive, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from connector.settings import get_settings

__all__ = ["check", "main"]

logger = logging.getLogger(__name__)


def check(url: str, *, restart_pid: int | None, timeout_s: float = 5.0) -> int:
    """0 when ``url`` says alive; on ``stalled``, SIGTERM ``restart_pid`` (if given)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:
        try:
            status = json.loads(exc.read() or b"{}").get("status")
        except ValueError:
            status = None
        print(f"healthcheck: {url} answered {exc.code} ({status})", file=sys.stderr)
        if status == "stalled" and restart_pid is not None:
            print(f"healthcheck: stalled, sending SIGTERM to {restart_pid}", file=sys.stderr)
            os.kill(restart_pid, signal.SIGTERM)
        return 1
    except (OSError, urllib.error.URLError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m connector.healthcheck")
    parser.add_argument(
        "--restart-stalled",
        action="store_true",
        help="SIGTERM the worker (--pid) when it reports itself stalled",
    )
    parser.add_argument("--pid", type=int, default=1, help="the worker's pid (default 1)")
    args = parser.parse_args(argv)
    settings = get_settings()
    url = f"http://127.0.0.1:{settings.web_port}/health/live"
    return check(url, restart_pid=args.pid if args.restart_stalled else None)


if __name__ == "__main__":
    sys.exit(main())
