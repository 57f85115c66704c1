"""The request examples of the seed contracts, copied verbatim (they must be accepted)."""

from __future__ import annotations

import copy
from typing import Any

__all__ = [
    "COMEET_EDGE_CASE_EXAMPLE",
    "COMEET_EXAMPLE",
    "KOMBO_PACKAGES_EXAMPLE",
    "KOMBO_RESULT_EXAMPLE",
    "fresh",
]

# kombo-put-assessment-order-result.md, "Example Request Body".
KOMBO_RESULT_EXAMPLE: dict[str, Any] = {
    "status": "COMPLETED",
    "score": 90,
    "max_score": 100,
    "result_url": "https://example.com",
    "completed_at": "2023-04-04T00:00:00.000Z",
    "attributes": [
        {"type": "TEXT", "label": "Role fit", "value": "Excellent"},
        {
            "type": "SUB_RESULT",
            "id": "<YOUR_INTERNAL_ID_OF_THE_TEST>",
            "label": "Personality test",
            "score": {"value": 97, "max": 100},
            "status": "COMPLETED",
        },
    ],
    "attachments": [
        {
            "name": "Assessment Report.pdf",
            "data": (
                "SGkgdGhlcmUsIEtvbWJvIGlzIGN1cnJlbnRseSBoaXJpbmcgZW5naW5lZXJzIHRoYXQgbG92ZSB0"
                "byB3b3JrIG9uIGRldmVsb3BlciBwcm9kdWN0cy4="
            ),
            "content_type": "application/pdf",
        }
    ],
}

# kombo-put-assessment-packages.md, "Example Request Body".
KOMBO_PACKAGES_EXAMPLE: dict[str, Any] = {
    "packages": [
        {
            "id": "1001",
            "type": "SKILLS_TEST",
            "name": "TypeScript",
            "description": "TypeScript coding skills assessments",
        },
        {
            "id": "1002",
            "type": "VIDEO_INTERVIEW",
            "name": "Video Interview",
            "description": "Video interview to assess communication skills",
        },
    ]
}

# comeet-post-evaluation-status.md, "Request example".
COMEET_EXAMPLE: dict[str, Any] = {
    "status": "completed",
    "outcome": "passed",
    "score": 4.5,
    "summary": "Performed well.",
    "criteria": [
        {
            "title": "Riding a Nimbus 2000",
            "notes": "Quidditch World Cup potential.",
            "score": 5,
        },
        {"title": "Riding a Firebolt", "notes": "Impressive maneuvers.", "score": 4},
    ],
    "url_for_users": "https://www.evaluation-partner.com/evaluation/1111",
    "url_for_non_users": "https://www.evaluation-partner.com/evaluation/1111?token=hgsadkf3kas56jdgfsdsakjpgdhqfjakansmgdhfrkj56as8h0gdu",
}

# comeet-post-evaluation-status.md, "Handling edge cases".
COMEET_EDGE_CASE_EXAMPLE: dict[str, Any] = {
    "status": "completed",
    "outcome": "review",
    "summary": "Test expired: The candidate did not complete the test within 7 days.",
}


def fresh(example: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``example`` with top-level ``changes`` (value ``...`` deletes the key)."""
    body = copy.deepcopy(example)
    for key, value in changes.items():
        if value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    return body
