"""The connector's worker, with Faust losing some records on their way to the agent.

Run by ``tests/e2e/test_offsets.py`` as a worker process (``python
tests/e2e/skipping_worker.py``), configured like any worker by the environment.
``SKIP_OFFSETS`` (comma-separated) names offsets of the events topic whose first
``SKIP_TIMES`` deliveries (1 unless set), on every partition, never reach the stream --
what Faust does to a record its fetch loop drops mid-batch, or its stream skips
while flow control is briefly off. Faust goes on with the next records of the
partition; the connector must notice the hole, read the record again, and never
commit past it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from faust.transport.consumer import Consumer


def inject(topic: str, offsets: set[int], times: int) -> None:
    init = Consumer.__init__
    seen: dict[tuple[int, int], int] = {}

    def __init__(self: Any, *args: Any, callback: Any, **kwargs: Any) -> None:
        async def lossy(message: Any) -> Any:
            spot = (message.partition, message.offset)
            if message.topic == topic and message.offset in offsets and seen.get(spot, 0) < times:
                seen[spot] = seen.get(spot, 0) + 1
                print(f"skipping-worker: dropped {topic}[{spot[0]}]@{spot[1]}", flush=True)
                return None
            return await callback(message)

        init(self, *args, callback=lossy, **kwargs)

    Consumer.__init__ = __init__  # type: ignore[method-assign]


def main() -> int:
    offsets = {int(o) for o in os.environ["SKIP_OFFSETS"].split(",") if o}
    inject(os.environ["CONNECTOR_TOPICS__EVENTS"], offsets, int(os.environ.get("SKIP_TIMES", "1")))
    from connector.cli import main as cli

    return cli(["worker"])


if __name__ == "__main__":
    raise SystemExit(main())
