"""A new app id's first start: the decision table (issue 21, trap 7)."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import GroupCoordinatorNotAvailableError
from aiokafka.structs import OffsetAndMetadata

from connector.ops.first_start import StartState, _has_offsets, check_status, decide


def state(**overrides: object) -> StartState:
    values: dict[str, object] = {
        "app_id": "assesment-connector",
        "events_topic": "assessment.events",
        "changelog": "assesment-connector-orders-changelog",
        "committed": False,
        "state_records": 0,
        "events_records": 120,
        "other_groups": ("assessment-connector",),
    }
    values.update(overrides)
    return StartState(**values)  # type: ignore[arg-type]


def test_a_misspelt_app_id_on_a_served_topic_is_refused() -> None:
    action, why = decide(state(), "")
    assert action == "refuse"
    assert "assesment-connector" in why and "assessment-connector" in why
    assert "--new-deployment --from latest" in why and "CONNECTOR_NEW_DEPLOYMENT" in why
    status, detail = check_status(state(), "")
    assert status == "FAIL" and "refuse" in detail


@pytest.mark.parametrize(("start_from", "action"), [("earliest", "start"), ("latest", "latest")])
def test_the_operator_says_it_is_new_and_where_to_start(start_from: str, action: str) -> None:
    assert decide(state(), start_from)[0] == action  # type: ignore[arg-type]
    assert check_status(state(), start_from)[0] in ("ok", "warn")  # type: ignore[arg-type]


def test_a_first_deployment_on_a_topic_nobody_reads_starts_at_the_beginning() -> None:
    """The black-box case: a fresh app id on a topic just filled, no other reader."""
    first = state(other_groups=())
    action, why = decide(first, "")
    assert action == "start" and "120" in why
    assert check_status(first, "")[0] == "warn"  # said, not failed


def test_an_empty_topic_starts_without_a_word() -> None:
    empty = state(events_records=0)
    assert decide(empty, "")[0] == "start"
    assert check_status(empty, "")[0] == "ok"


@pytest.mark.parametrize(
    "known", [{"committed": True}, {"state_records": 3}, {"committed": True, "state_records": 3}]
)
def test_a_known_app_id_starts_and_ignores_the_flag(known: dict[str, object]) -> None:
    for start_from in ("", "earliest", "latest"):
        assert decide(state(**known), start_from)[0] == "start"
    assert check_status(state(committed=True), "")[0] == "ok"
    # Offsets expired after a long stop, state kept: a warning, not a failure.
    assert check_status(state(state_records=3), "")[0] == "warn"


class _NewBroker:
    """An admin client whose group coordinator appears after two lookups."""

    def __init__(self) -> None:
        self.calls = 0

    async def list_consumer_group_offsets(
        self, group: str, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        self.calls += 1
        if self.calls <= 2:
            raise GroupCoordinatorNotAvailableError("Unable to get coordinator id")
        return {tp: OffsetAndMetadata(-1, "") for tp in partitions}


async def test_a_new_brokers_missing_coordinator_is_waited_for() -> None:
    """A fresh broker has no offsets topic until the first lookup: the worker must not
    exit with GroupCoordinatorNotAvailableError (seen with `scripts/stack up`)."""
    admin = _NewBroker()
    tps = [TopicPartition("events", 0)]
    assert await _has_offsets(admin, "app", tps) is False
    assert admin.calls == 3
