"""The checked-in files under topics/ are what the models generate, and examples are valid."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from connector.events import event_adapter
from connector.schemas import generated_files

TOPICS = Path(__file__).resolve().parent.parent / "topics"


@pytest.mark.parametrize("relative", sorted(generated_files()))
def test_checked_in_file_matches_models(relative: str) -> None:
    path = TOPICS / relative
    assert path.exists(), f"{relative} missing: run `connector topics generate`"
    assert path.read_text(encoding="utf-8") == generated_files()[relative], (
        f"topics/{relative} drifted from the models: run `connector topics generate`"
    )


EXAMPLES = sorted((TOPICS / "examples").glob("*.json"))


def test_there_is_an_example_per_event_type_and_vendor() -> None:
    names = {p.name for p in EXAMPLES}
    for kind in ("opened", "progress", "completed", "cancelled"):
        for vendor in ("kombo", "comeet"):
            assert f"order.{kind}.{vendor}.json" in names
    assert "packages.set.kombo.json" in names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid(path: Path) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    schema = json.loads((TOPICS / "schemas/event.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(document, schema)
    event = event_adapter.validate_python(document)
    assert path.name.startswith(str(event.type))
