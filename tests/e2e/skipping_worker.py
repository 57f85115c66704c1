"""The connector's worker, with some records lost between the fetch and the processor.

Run by ``tests/e2e/test_offsets.py`` as a worker process (``python
tests/e2e/skipping_worker.py``), configured like any worker by the environment.
``SKIP_OFFSETS`` (comma-separated) names offsets of the events topic whose first
``SKIP_TIMES`` deliveries (1 unless set), on every partition, never reach the
sequencer -- what Faust's fetch loop and stream did to records (they dropped some
mid-batch, or while flow control was briefly off) before the intake took these
topics out of Faust's hands. The intake goes on with the next records of the
partition; the connector must notice the hole, read the record again, and never
commit past it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from connector.kafka.intake import Intake


def inject(topic: str, offsets: set[int], times: int) -> None:
    hand = Intake.hand
    seen: dict[tuple[int, int], int] = {}

    async def lossy(self: Intake, tp: Any, record: Any, generation: int) -> None:
        spot = (record.partition, record.offset)
        if record.topic == topic and record.offset in offsets and seen.get(spot, 0) < times:
            seen[spot] = seen.get(spot, 0) + 1
            print(f"skipping-worker: dropped {topic}[{spot[0]}]@{spot[1]}", flush=True)
            return
        await hand(self, tp, record, generation)

    Intake.hand = lossy  # type: ignore[method-assign]


def main() -> int:
    offsets = {int(o) for o in os.environ["SKIP_OFFSETS"].split(",") if o}
    inject(os.environ["CONNECTOR_TOPICS__EVENTS"], offsets, int(os.environ.get("SKIP_TIMES", "1")))
    from connector.cli import main as cli

    return cli(["worker"])


if __name__ == "__main__":
    raise SystemExit(main())
