"""Factories for events as producers would publish them (plain dicts -> record bytes)."""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from typing import Any

from connector.domain.events import event_adapter

_counter = itertools.count()

PDF_B64 = base64.b64encode(b"%PDF-1.4 sandbox report").decode()


def target(vendor: str = "kombo", order: str | None = None, integration: str = "workday:ACME1"):
    order = order or f"ord-{uuid.uuid4().hex[:10]}"
    if vendor == "kombo":
        return {"vendor": "kombo", "integration_id": integration, "assessment_order_id": order}
    return {"vendor": "comeet", "evaluation_id": order}


def make_event(kind: str, tgt: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """A valid event of ``kind`` (opened, progress, completed, cancelled, packages)."""
    tgt = tgt or target()
    base: dict[str, Any] = {
        "event_id": f"evt-{next(_counter)}-{uuid.uuid4().hex[:8]}",
        "occurred_at": "2026-11-23T10:00:00.123Z",
        "target": tgt,
    }
    if kind == "opened":
        base |= {"type": "order.opened", "result_url": "https://vendor.example/tests/1"}
    elif kind == "progress":
        base |= {
            "type": "order.progress",
            "status_text": "Test started",
            "result_url": "https://vendor.example/tests/1",
        }
    elif kind == "completed":
        base |= {
            "type": "order.completed",
            "outcome": "passed",
            "completed_at": "2026-11-23T11:00:00.456Z",
            "result_url": "https://vendor.example/results/1",
            "public_result_url": "https://vendor.example/results/1?token=abc",
            "score": {"value": 90, "max": 100},
            "summary": "Performed well.",
            "sub_results": [
                {
                    "id": "algo",
                    "label": "Algorithms",
                    "score": {"value": 8, "max": 10},
                    "notes": "Solid.",
                    "group": "Exercise 1",
                },
                {"id": "style", "label": "Code style", "notes": "Readable."},
            ],
            "attributes": [{"label": "Role fit", "value": "Excellent"}],
            "attachments": [
                {"name": "Report.pdf", "content_type": "application/pdf", "data": PDF_B64}
            ],
        }
    elif kind == "cancelled":
        base |= {
            "type": "order.cancelled",
            "kind": "expired",
            "reason": "The candidate did not complete the test within 7 days.",
            "result_url": "https://vendor.example/tests/1",
        }
    elif kind == "packages":
        base |= {
            "type": "packages.set",
            "target": {"vendor": "kombo", "integration_id": tgt.get("integration_id", "x:1")},
            "packages": [
                {
                    "id": "1001",
                    "type": "SKILLS_TEST",
                    "name": "TypeScript",
                    "description": "TypeScript coding skills assessments",
                },
            ],
        }
    else:
        raise ValueError(kind)
    base.update(overrides)
    return base


def key_of(event: dict[str, Any]) -> bytes:
    return event_adapter.validate_python(event).key.encode()


def record(event: dict[str, Any]) -> tuple[bytes, bytes]:
    return key_of(event), json.dumps(event).encode()
