"""The vendor registry: key forms, registration rules, and mypy's check of exhaustive
branches on the event type (the runtime side: tests/vendors/test_mapping.py and
tests/core/test_lifecycle.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from connector.errors import UnknownVendorError
from connector.vendors import kombo, registry
from connector.vendors.registry import KeyForm, Vendor

ROOT = Path(__file__).resolve().parents[2]


def test_the_built_in_vendors_are_registered_with_their_key_forms() -> None:
    assert registry.names()[:2] == ("kombo", "comeet")
    assert registry.limit_key_of("kombo|w:1|o|with|bars") == "kombo|w:1"
    assert registry.limit_key_of("kombo-packages|w:1") == "kombo|w:1"
    assert registry.limit_key_of("comeet|a|b") == "comeet"
    assert registry.limit_key_of("other|x") == "other"
    assert registry.split_key("kombo|w:1|o|x") == ("kombo", "w:1", "o|x")
    assert registry.split_key("comeet|a|b") is None  # an evaluation id may hold "|"
    assert registry.vendor_of("kombo-packages|w:1") == "kombo"


def test_get_names_the_unknown_vendor() -> None:
    with pytest.raises(UnknownVendorError, match="zeta"):
        registry.get("zeta")


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

            from connector.domain.events import (
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
