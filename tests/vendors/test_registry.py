"""The vendor registry's dispatch, and exhaustive handling of event types.

An event type the code does not know must never be treated as OPEN, and an event whose
vendor no module registered must never go to another vendor (it used to go to Kombo).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from connector import vendors
from connector.errors import InvalidEventError, UnknownVendorError
from connector.events import ComeetTarget, KomboTarget
from connector.lifecycle import status_after
from connector.vendors import comeet, kombo, registry
from connector.vendors.registry import KeyForm, Vendor

ROOT = Path(__file__).resolve().parents[2]

KOMBO = KomboTarget(vendor="kombo", integration_id="workday:ACME1", assessment_order_id="o-1")
COMEET = ComeetTarget(vendor="comeet", evaluation_id="e-1")


def unknown_type(target: Any) -> Any:
    """An event of a type this code does not know (as a newer schema might bring)."""
    return SimpleNamespace(
        type="order.reopened",
        event_id="evt-1",
        target=target,
        result_url="https://vendor.example/tests/1",
    )


def test_an_unknown_event_type_never_becomes_open() -> None:
    with pytest.raises(AssertionError):
        status_after(unknown_type(KOMBO))


@pytest.mark.parametrize(
    ("map_event", "target"),
    [(kombo.map_event, KOMBO), (comeet.map_event, COMEET), (vendors.map_event, KOMBO)],
    ids=["kombo", "comeet", "dispatch"],
)
def test_an_unknown_event_type_is_never_mapped_as_an_open_update(map_event, target) -> None:
    with pytest.raises(AssertionError):
        map_event(unknown_type(target))


def test_an_unknown_vendor_is_a_typed_permanent_error_never_kombo() -> None:
    # Kombo's fields, another vendor's name: it once fell through to Kombo's mapping.
    target = SimpleNamespace(vendor="zeta", integration_id="w:1", assessment_order_id="o-1")
    event = SimpleNamespace(type="order.opened", target=target, result_url="https://x.example/")
    with pytest.raises(UnknownVendorError) as raised:
        vendors.map_event(event)  # type: ignore[arg-type]
    assert isinstance(raised.value, InvalidEventError)  # dead-lettered, never retried
    assert raised.value.code == "unknown_vendor"
    with pytest.raises(UnknownVendorError):
        registry.get("zeta")


def test_the_built_in_vendors_are_registered_with_their_key_forms() -> None:
    assert registry.names()[:2] == ("kombo", "comeet")
    assert registry.limit_key_of("kombo|w:1|o|with|bars") == "kombo|w:1"
    assert registry.limit_key_of("kombo-packages|w:1") == "kombo|w:1"
    assert registry.limit_key_of("comeet|a|b") == "comeet"
    assert registry.limit_key_of("other|x") == "other"
    assert registry.split_key("kombo|w:1|o|x") == ("kombo", "w:1", "o|x")
    assert registry.split_key("comeet|a|b") is None  # an evaluation id may hold "|"
    assert registry.vendor_of("kombo-packages|w:1") == "kombo"


def test_a_vendor_name_or_key_head_is_registered_once() -> None:
    def entry(name: str, head: str) -> Vendor:
        return Vendor(
            name=name,
            map_event=kombo.map_event,
            client=kombo.VENDOR.client,
            keys=(KeyForm(head, ("id",), limit=name),),
            target_noun=name,
        )

    with pytest.raises(ValueError, match="already registered"):
        registry.register(entry("kombo", "kombo-x"))
    with pytest.raises(ValueError, match="already belongs to 'comeet'"):
        registry.register(entry("zeta", "comeet"))
    assert "zeta" not in registry.names()


@pytest.mark.slow
def test_mypy_flags_a_branch_on_the_event_type_that_misses_a_case(tmp_path: Path) -> None:
    snippet = tmp_path / "missing_case.py"
    snippet.write_text(
        textwrap.dedent(
            """
            from typing import assert_never

            from connector.events import (
                Event, OrderCancelled, OrderCompleted, OrderOpened, PackagesSet,
            )

            def status(event: Event) -> str:
                match event:
                    case OrderOpened() | OrderCompleted() | OrderCancelled() | PackagesSet():
                        return "known"
                    case _:
                        assert_never(event)
            """
        )
    )
    found = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), str(snippet)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert found.returncode == 1, found.stdout + found.stderr
    assert '"assert_never" has incompatible type "OrderProgress"' in found.stdout
