"""Comeet sandbox: ``POST /evaluation/status?evaluation_id=<id>``, no path prefix.

A client's base URL is ``http://127.0.0.1:PORT``. Contract: the seed
``comeet-post-evaluation-status.md``.

Contract readings (decided by the lead, implemented as listed):

- ``Authorization: Bearer <token>`` must equal the configured token, else 401
  ``{"status": 401, "message": "Unauthorized"}``; ``Content-Type`` must be
  ``application/json``, else 415 in the same shape; the ``evaluation_id`` query
  parameter is required (missing -> 400).
- Any evaluation id is known (registered on its first accepted request) unless the
  control API marks it ``not_found`` (404 "Candidate was not found"), ``deleted``
  (404 "Candidate was deleted") or ``unknown`` (404 "Candidate evaluation ID does
  not exist"). Error body, always: ``{"status": <int>, "message": <str>}``.
- Body (400, message ``"<field>: <rule>"``): a JSON object; unknown fields rejected;
  ``status`` required, a non-empty string of at most 40 characters; ``outcome``
  required and one of passed / review / failed when status is ``completed``, and
  absent otherwise ("outcome: only allowed when status is completed"); ``score`` a
  finite number 1..5 (not bool); ``summary`` a string of at most 2000 characters;
  ``criteria`` an array of ``{title (required, non-empty), notes (<= 500), score
  (1..5), group (<= 200)}`` with unknown criterion fields rejected;
  ``url_for_users`` / ``url_for_non_users`` absolute http(s) URLs.
- Once an evaluation is ``completed`` a different status -> 400 "status: evaluation
  is completed and its status cannot change"; ``completed`` again is a content
  update and is accepted. Success: 204, no body.

Readings added here (beyond the lead's list):

- ``null`` is not accepted for an optional field (send the field or leave it out).
- Lengths are counted in characters (code points).
- Other paths answer 404 and other methods 405, in the error shape.
- Check order: auth (401), content type (415), evaluation_id (400), evaluation
  state (404), body (400), state rule (400).
- Fault answers use the same shape; their message defaults to the HTTP reason.
- A body over the size limit (default 32 MiB) answers 413.

Record key: the evaluation id (None when the query parameter is missing).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import MappingProxyType
from typing import Any, Final, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from connector.sandbox.faults import Fault
from connector.sandbox.server import (
    MISSING,
    TOO_LARGE,
    InputInvalid,
    JSONDict,
    UnparsableBody,
    VendorSandbox,
    bearer_matches,
    control_error,
    is_http_uri,
    is_number,
    read_control_json,
    reject_unknown,
    validation_message,
)

__all__ = [
    "COMPLETED",
    "ComeetSandbox",
    "EvaluationMark",
    "EvaluationState",
    "validate_evaluation_status",
]

logger = logging.getLogger(__name__)

COMPLETED: Final = "completed"
EvaluationMark = Literal["active", "not_found", "deleted", "unknown"]

_NOT_FOUND_MESSAGES: Final[Mapping[str, str]] = {
    "not_found": "Candidate was not found",
    "deleted": "Candidate was deleted",
    "unknown": "Candidate evaluation ID does not exist",
}

# -- validation ----------------------------------------------------------------------------

_FIELDS: Final = frozenset(
    {"status", "outcome", "score", "summary", "criteria", "url_for_users", "url_for_non_users"}
)
_OUTCOMES: Final = frozenset({"passed", "review", "failed"})
_CRITERION_FIELDS: Final = frozenset({"title", "notes", "score", "group"})
_STATUS_MAX: Final = 40
_SUMMARY_MAX: Final = 2000
_NOTES_MAX: Final = 500
_GROUP_MAX: Final = 200


def _check_score(value: Any, path: str) -> None:
    if not is_number(value) or not 1 <= value <= 5:
        raise InputInvalid(f"{path}: must be a number between 1 and 5")


def _check_text(value: Any, path: str, limit: int) -> None:
    if type(value) is not str:
        raise InputInvalid(f"{path}: must be a string")
    if len(value) > limit:
        raise InputInvalid(f"{path}: must be at most {limit} characters")


def _check_criterion(criterion: Any, path: str) -> None:
    if type(criterion) is not dict:
        raise InputInvalid(f"{path}: must be an object")
    reject_unknown(criterion, _CRITERION_FIELDS, path)
    title = criterion.get("title", MISSING)
    if title is MISSING:
        raise InputInvalid(f"{path}.title: required")
    if type(title) is not str or not title:
        raise InputInvalid(f"{path}.title: must be a non-empty string")
    if "notes" in criterion:
        _check_text(criterion["notes"], f"{path}.notes", _NOTES_MAX)
    if "score" in criterion:
        _check_score(criterion["score"], f"{path}.score")
    if "group" in criterion:
        _check_text(criterion["group"], f"{path}.group", _GROUP_MAX)


def validate_evaluation_status(body: Any) -> None:
    """Raise :class:`InputInvalid` for the first rule ``body`` breaks."""
    if type(body) is not dict:
        raise InputInvalid("body: must be a JSON object")
    reject_unknown(body, _FIELDS)
    status = body.get("status", MISSING)
    if status is MISSING:
        raise InputInvalid("status: required")
    if type(status) is not str or not status:
        raise InputInvalid("status: must be a non-empty string")
    if len(status) > _STATUS_MAX:
        raise InputInvalid(f"status: must be at most {_STATUS_MAX} characters")
    outcome = body.get("outcome", MISSING)
    if status == COMPLETED:
        if outcome is MISSING:
            raise InputInvalid("outcome: required when status is completed")
        if type(outcome) is not str or outcome not in _OUTCOMES:
            raise InputInvalid("outcome: must be one of passed, review, failed")
    elif outcome is not MISSING:
        raise InputInvalid("outcome: only allowed when status is completed")
    if "score" in body:
        _check_score(body["score"], "score")
    if "summary" in body:
        _check_text(body["summary"], "summary", _SUMMARY_MAX)
    criteria = body.get("criteria", MISSING)
    if criteria is not MISSING:
        if type(criteria) is not list:
            raise InputInvalid("criteria: must be an array")
        for i, criterion in enumerate(criteria):
            _check_criterion(criterion, f"criteria[{i}]")
    for name in ("url_for_users", "url_for_non_users"):
        if name in body and not is_http_uri(body[name]):
            raise InputInvalid(f"{name}: must be an absolute http(s) URL")


# -- state ---------------------------------------------------------------------------------


@dataclass(slots=True)
class EvaluationState:
    """One evaluation: its control-API mark, last accepted status and body."""

    evaluation_id: str
    mark: EvaluationMark = "active"
    status: str | None = None
    body: JSONDict | None = None
    updates: int = 0
    statuses: list[str] = field(default_factory=list)
    updated_at: float | None = None

    def to_json(self) -> JSONDict:
        return {
            "evaluation_id": self.evaluation_id,
            "state": self.mark,
            "status": self.status,
            "body": self.body,
            "updates": self.updates,
            "statuses": list(self.statuses),
            "updated_at": self.updated_at,
        }


class _EvaluationBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: EvaluationMark


def _error_body(status: int, message: str) -> bytes:
    return json.dumps({"status": status, "message": message}).encode()


_NO_CONTENT: Final = 204


# -- server --------------------------------------------------------------------------------


class ComeetSandbox(VendorSandbox):
    """The Comeet sandbox server. ``url`` is the base URL a Comeet client uses."""

    vendor = "comeet"
    prefix = ""

    def __init__(
        self,
        *,
        token: str,
        latency_ms: float = 0.0,
        max_recorded: int = 1_000_000,
        seed: int | None = None,
        max_body_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        if not token:
            raise ValueError("token must not be empty")
        self._expected_auth = f"Bearer {token}".encode()
        self._evaluations: dict[str, EvaluationState] = {}
        super().__init__(
            latency_ms=latency_ms,
            max_recorded=max_recorded,
            seed=seed,
            max_body_bytes=max_body_bytes,
        )

    # -- Python control API ------------------------------------------------------------------

    def evaluation(self, evaluation_id: str) -> EvaluationState | None:
        return self._evaluations.get(evaluation_id)

    @property
    def evaluations(self) -> Mapping[str, EvaluationState]:
        return MappingProxyType(self._evaluations)

    def set_evaluation(self, evaluation_id: str, state: EvaluationMark) -> EvaluationState:
        """Mark an evaluation id not_found / deleted / unknown, or active again."""
        if state not in ("active", "not_found", "deleted", "unknown"):
            raise ValueError(f"state must be active, not_found, deleted or unknown, got {state!r}")
        evaluation = self._evaluations.get(evaluation_id)
        if evaluation is None:
            evaluation = self._evaluations[evaluation_id] = EvaluationState(evaluation_id)
        evaluation.mark = state
        return evaluation

    def state(self) -> JSONDict:
        return {"evaluations": {key: ev.to_json() for key, ev in self._evaluations.items()}}

    def _reset_state(self) -> None:
        self._evaluations.clear()

    # -- answers -----------------------------------------------------------------------------

    def _error_response(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        entry: JSONDict | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        # Comeet's error shape has no code or log link: both are ignored here.
        return web.Response(
            body=_error_body(status, message),
            status=status,
            content_type="application/json",
            headers=headers,
        )

    def _fault_response(self, fault: Fault, target: str | None, entry: JSONDict) -> web.Response:
        status = fault.status or 503
        message = fault.message
        if message is None:
            try:
                message = HTTPStatus(status).phrase
            except ValueError:
                message = f"HTTP {status}"
        headers = None
        if fault.retry_after_s is not None:
            headers = {"Retry-After": str(fault.retry_after_s)}
        return self._error_response(status, message, headers=headers)

    def _invalid(self, message: str) -> web.Response:
        return self._error_response(400, message)

    # -- routes ------------------------------------------------------------------------------

    def _add_vendor_routes(self, router: web.UrlDispatcher) -> None:
        # Any method: a wrong one gets the vendor's 405 shape and is recorded.
        router.add_route("*", "/evaluation/status", self._evaluation_status)

    def _add_vendor_control_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/_sandbox/evaluations/{evaluation_id}", self._ctl_evaluation)

    async def _evaluation_status(self, request: web.Request) -> web.Response:
        body = await self._read_body(request)
        evaluation_id = request.query.get("evaluation_id") or None
        entry = self._record(request, body, evaluation_id)
        if body is TOO_LARGE:
            return self._too_large(entry)

        def process() -> web.Response:
            if request.method != "POST":
                return self._error_response(405, "Method Not Allowed")
            if not bearer_matches(request.headers.get("Authorization"), self._expected_auth):
                return self._error_response(401, "Unauthorized")
            if request.content_type != "application/json":
                return self._error_response(415, "Content-Type must be application/json")
            if evaluation_id is None:
                return self._invalid("evaluation_id: required query parameter")
            evaluation = self._evaluations.get(evaluation_id)
            if evaluation is not None and evaluation.mark != "active":
                return self._error_response(404, _NOT_FOUND_MESSAGES[evaluation.mark])
            if body is None:
                return self._invalid("body: required")
            if type(body) is UnparsableBody:
                return self._invalid("body: must be valid JSON")
            try:
                validate_evaluation_status(body)
            except InputInvalid as exc:
                return self._invalid(str(exc))
            status: str = body["status"]
            if evaluation is None:
                evaluation = self._evaluations[evaluation_id] = EvaluationState(evaluation_id)
            elif evaluation.status == COMPLETED and status != COMPLETED:
                return self._invalid("status: evaluation is completed and its status cannot change")
            if status != evaluation.status:
                evaluation.statuses.append(status)
            evaluation.status = status
            evaluation.body = body
            evaluation.updates += 1
            evaluation.updated_at = time.time()
            return web.Response(status=_NO_CONTENT)

        return await self._respond(request, entry, evaluation_id, process)

    async def _ctl_evaluation(self, request: web.Request) -> web.Response:
        evaluation_id = request.match_info["evaluation_id"]
        try:
            body = _EvaluationBody.model_validate(await read_control_json(request))
        except ValidationError as exc:
            return control_error(400, validation_message(exc))
        evaluation = self.set_evaluation(evaluation_id, body.state)
        logger.info("comeet sandbox: evaluation %s marked %s", evaluation_id, body.state)
        return web.json_response(evaluation.to_json())
