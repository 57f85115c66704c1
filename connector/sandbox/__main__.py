"""Process entry: run both sandbox servers until SIGTERM / SIGINT.

``python -m connector.sandbox --kombo-port 0 --comeet-port 0 --kombo-key KEY
--comeet-token TOKEN [--latency-ms 0] [--host 127.0.0.1]`` prints one line of JSON,
``{"kombo_url": "http://127.0.0.1:P/v1", "comeet_url": "http://127.0.0.1:Q"}``, once
both listen. Logs go to stderr so stdout carries only that line.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys
from pathlib import Path

from connector.sandbox import Sandboxes

__all__ = ["main", "parse_args", "serve"]

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m connector.sandbox", description="Sandbox Kombo and Comeet servers."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--kombo-port", type=int, default=0, help="0 = a free port")
    parser.add_argument("--comeet-port", type=int, default=0, help="0 = a free port")
    kombo = parser.add_mutually_exclusive_group(required=True)
    kombo.add_argument("--kombo-key")
    kombo.add_argument("--kombo-key-file", type=Path)
    comeet = parser.add_mutually_exclusive_group(required=True)
    comeet.add_argument("--comeet-token")
    comeet.add_argument("--comeet-token-file", type=Path)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every request")
    parser.add_argument("--max-recorded", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=None, help="seed for probabilistic faults")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument(
        "--exit-on-stdin-close",
        action="store_true",
        help="stop when stdin reaches EOF (the parent process went away)",
    )
    return parser.parse_args(argv)


def _secret(value: str | None, path: Path | None) -> str:
    if value is not None:
        return value
    assert path is not None
    return path.read_text(encoding="utf-8").strip()


class _StdinWatcher(asyncio.Protocol):
    """Sets ``stop`` when stdin closes: the parent died or closed our pipe."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop

    def eof_received(self) -> bool | None:
        self._stop.set()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop.set()


def _tune_gc() -> None:
    """Make the cyclic GC cheap for a request-per-few-microseconds server.

    Every request allocates many short-lived containers and the request log keeps
    growing, so default thresholds run young collections constantly and full ones
    rescan every imported module's objects. Freezing what startup built and raising
    the young threshold cut the sandbox's CPU per request by about a quarter in the
    benchmark's setup. Only done here: an in-process user owns its interpreter's GC.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sandboxes = Sandboxes(
        kombo_key=_secret(args.kombo_key, args.kombo_key_file),
        comeet_token=_secret(args.comeet_token, args.comeet_token_file),
        host=args.host,
        kombo_port=args.kombo_port,
        comeet_port=args.comeet_port,
        latency_ms=args.latency_ms,
        max_recorded=args.max_recorded,
        seed=args.seed,
    )
    async with sandboxes:
        _tune_gc()
        stdin: asyncio.BaseTransport | None = None
        if args.exit_on_stdin_close:
            stdin, _ = await loop.connect_read_pipe(lambda: _StdinWatcher(stop), sys.stdin)
        sys.stdout.write(
            json.dumps({"kombo_url": sandboxes.kombo_url, "comeet_url": sandboxes.comeet_url})
            + "\n"
        )
        sys.stdout.flush()
        try:
            await stop.wait()
        finally:
            if stdin is not None:
                stdin.close()
        logger.info("sandbox stopping")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
