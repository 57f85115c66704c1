"""Operator control without a broker: target names, what workers apply, what the list shows."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from connector.cli import main
from connector.ops import control
from connector.ops.control import TargetControl, follow_control, read_control, target_problem
from connector.settings import Settings


@pytest.mark.parametrize("name", ["comeet", "kombo|workday:ACME1", "kombo|greenhouse:HW~x"])
def test_the_keys_breakers_and_rate_limits_use_are_targets(name: str) -> None:
    assert target_problem(name) is None


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("kombo", "per integration"),
        ("nonsense", ""),
        ("Comeet", ""),
        ("kombo|", ""),
        ("kombo|workday:ACME1|ord-42", "order key"),
        ("comeet|c-1", "Comeet is one target"),
        ("kombo|work day", ""),
    ],
)
def test_anything_else_is_refused_with_the_valid_forms(name: str, hint: str) -> None:
    problem = target_problem(name)
    assert problem is not None
    assert hint in problem
    assert "kombo|<integration_id>, comeet" in problem


@pytest.mark.parametrize("name", ["kombo", "nonsense"])
def test_pausing_a_bogus_target_exits_2_before_reaching_kafka(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # No broker configured: the name is refused before one would be needed.
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("CONNECTOR_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    assert main(["target", "pause", name]) == 2
    err = capsys.readouterr().err
    assert f"'{name}' is not a target" in err
    assert "kombo|<integration_id>" in err


def _message(key: bytes, value: bytes | None) -> Any:
    return SimpleNamespace(key=key, value=value)


class _FakeReader:
    """The control topic's one partition, read once; the follower is cancelled after."""

    def __init__(self, messages: list[Any]) -> None:
        self.messages = messages
        self.served = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def assign(self, tps: list[Any]) -> None:
        self.tp = tps[0]

    async def seek_to_beginning(self, tp: Any) -> None:
        pass

    async def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: len(self.messages) for tp in tps}

    async def position(self, tp: Any) -> int:
        return len(self.messages) if self.served else 0

    async def getmany(self, timeout_ms: int = 0) -> dict[Any, list[Any]]:
        if self.served:
            raise asyncio.CancelledError
        self.served = True
        return {self.tp: self.messages}


PAUSED = TargetControl("x", True, "cli@host", "maintenance", "2026-12-02T12:00:00+00:00")
RECORDS = [
    _message(b"kombo", PAUSED.to_json()),  # written by a CLI before names were checked
    _message(b"nonsense", PAUSED.to_json()),
    _message(b"kombo|workday:ACME1", PAUSED.to_json()),
    _message(b"comeet", PAUSED.to_json()),
    _message(b"comeet", None),  # forgotten
    _message(b"nonsense", None),
]


async def test_workers_apply_only_real_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "_reader", lambda settings: _FakeReader(RECORDS))
    applied: list[tuple[str, bool]] = []
    with pytest.raises(asyncio.CancelledError):
        await follow_control(Settings(), lambda c: applied.append((c.target, c.paused)))
    # "kombo" and "nonsense" would each get a paused breaker (an open circuit in the
    # metrics, an alert) for a target no vendor call uses.
    assert applied == [("kombo|workday:ACME1", True), ("comeet", True), ("comeet", False)]


async def test_a_forgotten_target_leaves_the_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "_reader", lambda settings: _FakeReader(RECORDS))
    state = await read_control(Settings())
    assert sorted(state) == ["kombo", "kombo|workday:ACME1"]
    assert state["kombo|workday:ACME1"].paused
