"""Comeet: ``POST /evaluation/status?evaluation_id=...`` with a bearer token.

Request model rules from the seed contract: ``status`` at most 40 characters;
``outcome`` passed/review/failed, required when ``status`` is ``completed``;
scores real numbers from 1 to 5; ``summary`` at most 2000 characters; criteria
with a title, ``notes`` at most 500 and ``group`` at most 200 characters.

Readings where the seed is ambiguous (the sandbox enforces the same):

* ``outcome`` "applies when status is set to completed": interim statuses
  carry no outcome at all.
* A cancelled or expired order completes the step with outcome ``review`` and
  a summary that explains, as the seed's edge-case section asks.
* A score on any scale ``0..max`` becomes ``1 + 4 * value / max`` (2 decimals).
* Attachments have no Comeet field and are not sent; text attributes become
  criteria without a score (group "Details").
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal, assert_never

import httpx
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, StringConstraints, model_validator

from connector.domain.events import (
    ComeetTarget,
    Event,
    OrderCancelled,
    OrderCompleted,
    OrderOpened,
    OrderProgress,
    PackagesSet,
    Score,
)
from connector.errors import MappingError, PermanentDeliveryError
from connector.settings import ComeetSettings, Settings
from connector.vendors.accounts import comeet_router
from connector.vendors.base import (
    CallResult,
    VendorRequest,
    build_model,
    error_for_status,
    send_http,
)
from connector.vendors.checks import Check, is_local_url, url_problem
from connector.vendors.registry import KeyForm, Vendor, register

__all__ = [
    "COMPLETED",
    "OPENED_STATUS",
    "VENDOR",
    "ComeetClient",
    "ComeetStatus",
    "config_problems",
    "map_event",
    "probe",
    "secrets",
    "to_comeet_score",
]

logger = logging.getLogger(__name__)

COMPLETED = "completed"
OPENED_STATUS = "Assessment sent"
CANCELLED_OUTCOME = "review"

Rating = Annotated[float, Field(ge=1, le=5, allow_inf_nan=False)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Criterion(_Body):
    title: Annotated[str, StringConstraints(min_length=1)]
    notes: str | None = Field(default=None, max_length=500)
    score: Rating | None = None
    group: str | None = Field(default=None, max_length=200)


class ComeetStatus(_Body):
    status: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    outcome: Literal["passed", "review", "failed"] | None = None
    score: Rating | None = None
    summary: str | None = Field(default=None, max_length=2000)
    criteria: list[Criterion] | None = None
    url_for_users: HttpUrl | None = None
    url_for_non_users: HttpUrl | None = None

    @model_validator(mode="after")
    def _outcome_only_when_completed(self) -> ComeetStatus:
        if self.status == COMPLETED and self.outcome is None:
            raise ValueError("outcome is required when status is completed")
        if self.status != COMPLETED and self.outcome is not None:
            raise ValueError("outcome applies only when status is completed")
        return self


def to_comeet_score(score: Score) -> float:
    """Linear map of ``0..max`` onto Comeet's ``1..5``."""
    return round(min(5.0, max(1.0, 1 + 4 * score.value / score.max)), 2)


def _completed_body(event: OrderCompleted) -> dict[str, Any]:
    criteria: list[dict[str, Any]] = [
        {
            "title": sub.label,
            "notes": sub.notes,
            "score": to_comeet_score(sub.score) if sub.score else None,
            "group": sub.group,
        }
        for sub in event.sub_results
    ]
    criteria.extend(
        {"title": a.label, "notes": a.value, "group": "Details"} for a in event.attributes
    )
    return {
        "status": COMPLETED,
        "outcome": event.outcome.value,
        "score": to_comeet_score(event.score) if event.score else None,
        "summary": event.summary,
        "criteria": criteria or None,
        "url_for_users": str(event.result_url),
        "url_for_non_users": str(event.public_result_url) if event.public_result_url else None,
    }


def map_event(event: Event) -> VendorRequest:
    """The Comeet call for one event. Pure; raises MappingError on a contract breach."""
    target = event.target
    if not isinstance(target, ComeetTarget):
        raise MappingError(f"event {event.type} targets {target.vendor}, not comeet")
    data: dict[str, Any]
    match event:
        case OrderCompleted():
            data = _completed_body(event)
        case OrderCancelled():
            prefix = "Test expired" if event.kind == "expired" else "Assessment cancelled"
            data = {
                "status": COMPLETED,
                "outcome": CANCELLED_OUTCOME,
                "summary": f"{prefix}: {event.reason}",
            }
        case OrderProgress():
            data = {"status": event.status_text}
        case OrderOpened():
            data = {"status": OPENED_STATUS}
        case PackagesSet():  # a package list targets a Kombo integration, never Comeet
            raise MappingError(f"event {event.type} has no Comeet call")
        case _:
            assert_never(event)
    result_url = getattr(event, "result_url", None)
    if result_url is not None and "url_for_users" not in data:
        data["url_for_users"] = str(result_url)
    model = build_model(ComeetStatus, "comeet", **{k: v for k, v in data.items() if v is not None})
    return VendorRequest(
        vendor="comeet",
        action="comeet.status",
        method="POST",
        path="/evaluation/status",
        params={"evaluation_id": target.evaluation_id},
        body=model.model_dump(mode="json", exclude_none=True),
        limit_key="comeet",
    )


class ComeetClient:
    """Sends Comeet requests on a shared ``httpx.AsyncClient``."""

    vendor = "comeet"

    def __init__(self, http: httpx.AsyncClient, settings: ComeetSettings) -> None:
        self._http = http
        # Per-customer tokens by evaluation id; the default token serves the rest.
        self._customers = comeet_router(settings)

    async def send(self, request: VendorRequest) -> CallResult:
        customer = self._customers.select(request.params.get("evaluation_id", ""))
        # httpx percent-encodes the evaluation id in the query string ("&", "=", "#",
        # "+", "%", spaces and non-ASCII; tests/vendors/test_clients.py checks the wire).
        response = await send_http(
            self._http,
            request.method,
            customer.base_url + request.path,
            params=request.params,
            body=request.body,
            headers=customer.headers,
        )
        if response.status_code in (200, 204):
            return CallResult(http_status=response.status_code)
        try:
            message = str(response.json().get("message") or "")[:500]
        except (ValueError, AttributeError):
            message = ""
        text = f"HTTP {response.status_code}: {message or response.reason_phrase}"
        if response.status_code == 404:
            # Candidate not found / deleted / unknown evaluation: no retry brings it back.
            raise PermanentDeliveryError(text, http_status=404)
        raise error_for_status(response, text)


# -- connector check --------------------------------------------------------------------------


def config_problems(settings: Settings) -> tuple[list[str], list[str]]:
    """(errors, warnings) about the Comeet settings, found without the network."""
    errors: list[str] = []
    warnings: list[str] = []
    comeet = settings.comeet
    if problem := url_problem("CONNECTOR_COMEET__BASE_URL", comeet.base_url):
        errors.append(problem)
    # An empty credential against a real vendor dead-letters every event as a 401.
    if not comeet.token.get_secret_value() and not is_local_url(comeet.url):
        line = (
            f"CONNECTOR_COMEET__TOKEN: empty while Comeet calls go to {comeet.url} "
            "(CONNECTOR_COMEET__BASE_URL); "
            "fix: set CONNECTOR_COMEET__TOKEN or CONNECTOR_COMEET__TOKEN_FILE"
        )
        (warnings if comeet.customers else errors).append(line)
    return errors, warnings


async def probe(http: httpx.AsyncClient, settings: Settings) -> list[Check]:
    """Comeet documents no read-only call (its one endpoint changes an evaluation)."""
    return [
        Check(
            "comeet",
            "skip",
            "token not checked: Comeet documents no harmless call (its only endpoint "
            "changes an evaluation)",
        )
    ]


def secrets(settings: Settings) -> list[str]:
    comeet = settings.comeet
    return [comeet.token.get_secret_value()] + [
        c.token.get_secret_value() for c in comeet.customers.values()
    ]


VENDOR = register(
    Vendor(
        name="comeet",
        map_event=map_event,
        client=lambda http, settings: ComeetClient(http, settings.comeet),
        keys=(KeyForm("comeet", ("evaluation_id",), limit="comeet"),),
        target_noun="Comeet",
        order_target=ComeetTarget,
        config_problems=config_problems,
        probe=probe,
        secrets=secrets,
    )
)
