"""The checked-in contract files under ``topics/``, generated from the models.

``connector topics generate`` rewrites them; ``tests/test_schemas.py`` fails
when a checked-in file differs from what the models generate now.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from connector.domain.audit import AuditRecord, DeadLetter, ReplayMarker
from connector.domain.events import event_json_schema
from connector.infra.topics import definitions
from connector.settings import Settings

__all__ = ["dead_letter_topic_schema", "generated_files", "write"]

logger = logging.getLogger(__name__)


def dead_letter_topic_schema() -> dict[str, Any]:
    """The dead-letter topic holds letters and the replay markers ``connector dlq replay``
    writes next to them; ``kind`` tells them apart (a letter without one is a letter)."""
    document = TypeAdapter(DeadLetter | ReplayMarker).json_schema()
    return {
        "title": "Dead-letter topic record",
        "description": (
            "A dead letter (kind dead_letter, or no kind: written before markers existed) "
            "or a replay marker (kind replayed) naming the letter it resolves."
        ),
        **document,
    }


def _dump(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def generated_files() -> dict[str, str]:
    """Relative path under ``topics/`` -> file content."""
    # Defaults only: the checked-in file documents the shipped configuration.
    settings = Settings.model_construct()  # no environment read, no validation
    return {
        "topics.json": _dump([d.to_dict() for d in definitions(settings)]),
        "schemas/event.schema.json": _dump(event_json_schema()),
        "schemas/audit.schema.json": _dump(AuditRecord.model_json_schema()),
        "schemas/dead-letter.schema.json": _dump(dead_letter_topic_schema()),
    }


def write(root: Path) -> list[Path]:
    written = []
    for relative, content in generated_files().items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written
