"""The quix contender applies the connector's forward-only rule to its per-order state.

quixstreams lives in the contenders' environment (bench/contenders), not in the
connector's, so the check runs there, in a child interpreter; this test reads its verdicts.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench.contenders_env import contenders_python
from connector.settings import child_environment

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]

# One Comeet order, record by record as quix hands them to the stateful step (the state
# a dict standing in for quix's key-scoped State): which ones become a vendor call.
_SCRIPT = r"""
import json
from quixstreams.context import set_message_context
from quixstreams.models import MessageContext

from bench.baselines.common import BaselineConfig
from bench.baselines.quix_app import _decide
from bench.workload import event_value, make_orders


class State:
    def __init__(self):
        self.values = {}

    def get_bytes(self, key, default=None):
        return self.values.get(key, default)

    def set_bytes(self, key, value):
        self.values[key] = value


config = BaselineConfig(
    bootstrap="-", topic="events", group="g", partitions=1,
    kombo_url="http://kombo", kombo_key="k", comeet_url="http://comeet",
    comeet_token="t", data_dir="-",
)
order = make_orders("t", 2)[1]
assert order.vendor == "comeet"


def variant(base, **changes):
    doc = json.loads(event_value(order, base, 1_700_000_000.0 + len(records)))
    doc.update(changes)
    return json.dumps(doc).encode()


records = []
records.append(("opened", variant("opened")))
records.append(("completed", variant("completed")))
records.append(("completed again", records[-1][1]))
records.append(("reopened", variant("opened", event_id=order.order_id + "-reopen")))
records.append(("progress after completion", variant("progress")))
records.append(("cancelled after completion", variant(
    "opened", event_id=order.order_id + "-cancel", type="order.cancelled",
    kind="cancelled", reason="withdrawn")))
state = State()
verdicts = {}
for offset, (name, value) in enumerate(records):
    set_message_context(MessageContext("events", 0, offset, len(value)))
    verdicts[name] = _decide(config, value, order.key, state) is not None
print(json.dumps(verdicts))
"""


def test_a_final_order_never_reopens_or_flips() -> None:
    result = subprocess.run(
        [contenders_python(), "-c", _SCRIPT],
        cwd=ROOT,
        env=child_environment({}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    verdicts = json.loads(result.stdout.strip().splitlines()[-1])
    assert verdicts == {
        "opened": True,
        "completed": True,
        "completed again": False,  # a duplicate
        "reopened": False,
        "progress after completion": False,
        "cancelled after completion": False,  # a final order never flips
    }
