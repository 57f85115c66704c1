"""Kombo sandbox: the two assessment endpoints the connector calls, served under ``/v1``.

A client's base URL is ``http://127.0.0.1:PORT/v1``. Contract: the seeds
``kombo-put-assessment-order-result.md`` and ``kombo-put-assessment-packages.md``.

Contract readings (decided by the lead, implemented as listed):

- ``PUT /v1/assessment/orders/{assessment_order_id}/result`` and
  ``PUT /v1/assessment/packages``.
- ``GET /v1/check-api-key`` (Kombo's documented key check, not in the seeds; used by
  ``connector check``): 200 ``{"status": "success", "data": {"environment_id",
  "customer_id"}}`` for the configured key, else the 401 below. No state, no faults.
- ``Authorization: Bearer <key>`` must equal the configured key, else 401
  ``PLATFORM.AUTHENTICATION_INVALID``. ``X-Integration-Id`` is required (missing ->
  400 ``PLATFORM.INPUT_INVALID``). Any integration id is known unless the control
  API marks it ``unknown`` (404 ``PLATFORM.INTEGRATION_NOT_FOUND``) or ``inactive``
  (403 ``INTEGRATION.INACTIVE``).
- Error body, always: ``{"status": "error", "error": {"code", "title", "message",
  "log_url"}}``. Success: 200 ``{"status": "success", "data": {}, "warnings": [...]}``
  with the per-integration warnings set through the control API.
- Order result body (400 ``PLATFORM.INPUT_INVALID``, message ``"<field path>: <rule>"``):
  a JSON object; unknown top-level fields rejected; ``status`` required, one of
  OPEN/COMPLETED/CANCELLED; ``result_url`` required, an absolute http(s) URI;
  ``completed_at`` matches ``^\\d{4}-\\d{2}-\\d{2}(T\\d{2}:\\d{2}:\\d{2}(\\.\\d+)?)?Z?$``
  and is required when status is COMPLETED or CANCELLED; ``score``/``max_score``
  finite numbers (not bool); ``attributes`` items are TEXT ``{type, label, value}``
  or SUB_RESULT ``{type, id, label, score: {value, max >= 1}, status:
  COMPLETED|CANCELLED}``, all fields required; ``attachments`` at most 5, each
  ``{name (required), content_type, data_url, data}`` with exactly one of ``data``
  / ``data_url`` (both missing and both present are rejected), ``content_type``
  required with ``data``, matching ``^[\\w.-]+\\/[\\w.-]+$`` and not generic
  (``application/octet-stream``, ``binary/octet-stream``), ``data`` strict standard
  base64; ``remote_fields`` only the documented smartrecruiters / recruitee /
  workday objects (``Assessment_Status_ID`` required inside its parent).
- Per order (key: integration id + order id) the status starts OPEN. A status that
  differs from a non-OPEN current status -> 400 ``PLATFORM.INPUT_INVALID``
  ("Order <id> is COMPLETED; its status can only change while OPEN"); the same
  final status again is a content update and is accepted. The last accepted body
  is kept.
- Packages body ``{"packages": [{id, type, name, description}]}``, all four
  required, ``type`` one of BEHAVIORAL / VIDEO_INTERVIEW / SKILLS_TEST /
  BACKGROUND_CHECK / REFERENCE_CHECK, unknown fields rejected. It replaces the
  integration's list; ids submitted before and missing now are recorded as deleted.

Readings added here (beyond the lead's list):

- Unknown fields are rejected at every level (attribute, score, attachment and the
  objects inside ``remote_fields``), not only at the top level: a misspelt field is
  a connector bug either way.
- ``null`` is not accepted for an optional field: the schema types have no null.
- ``completed_at`` must also be a real calendar date and time (no month 13).
- ``data_url`` must be an absolute http(s) URI (Kombo downloads it).
- The body must be sent as ``Content-Type: application/json`` (the only request
  content type in the contract), else 400 ``PLATFORM.INPUT_INVALID``.
- Duplicate package ids in one request are rejected (the id is "a unique
  identifier").
- Other paths answer 404 and other methods 405, in the error shape with code null.
- ``log_url`` points at the control API's copy of the request
  (``/_sandbox/requests/{index}``), like Kombo's log page.
- Faults default to codes by status: 429 ``PLATFORM.RATE_LIMIT_EXCEEDED``, 503
  ``REMOTE.SERVICE_UNAVAILABLE``, 500 ``PLATFORM.UNKNOWN_ERROR``, 504
  ``PLATFORM.TASK_TIMED_OUT``, others null.
- A body over the size limit (default 32 MiB) answers 413 ``PLATFORM.INPUT_INVALID``.

Record keys: ``"<integration id>/<order id>"`` for an order result, the integration
id for packages, None when the integration header is missing.
"""

from __future__ import annotations

import binascii
import datetime as dt
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    "INPUT_INVALID",
    "IntegrationConfig",
    "IntegrationState",
    "KomboSandbox",
    "OrderState",
    "PackageState",
    "order_key",
    "validate_order_result",
    "validate_packages",
]

logger = logging.getLogger(__name__)

INPUT_INVALID: Final = "PLATFORM.INPUT_INVALID"
IntegrationState = Literal["active", "unknown", "inactive"]

_TITLES: Final[Mapping[str | None, str]] = {
    "PLATFORM.INPUT_INVALID": "The input is invalid.",
    "PLATFORM.AUTHENTICATION_INVALID": "The API key is invalid.",
    "PLATFORM.INTEGRATION_NOT_FOUND": "The integration was not found.",
    "INTEGRATION.INACTIVE": "The integration is inactive.",
    "PLATFORM.RATE_LIMIT_EXCEEDED": "The rate limit was exceeded.",
    "REMOTE.SERVICE_UNAVAILABLE": "The remote system is unavailable.",
    "PLATFORM.UNKNOWN_ERROR": "An unknown error occurred.",
    "PLATFORM.TASK_TIMED_OUT": "The task timed out.",
}
_FAULT_CODES: Final[Mapping[int, str]] = {
    429: "PLATFORM.RATE_LIMIT_EXCEEDED",
    500: "PLATFORM.UNKNOWN_ERROR",
    503: "REMOTE.SERVICE_UNAVAILABLE",
    504: "PLATFORM.TASK_TIMED_OUT",
}


def order_key(integration_id: str, order_id: str) -> str:
    """The record / state key of one order."""
    return f"{integration_id}/{order_id}"


# -- validation -------------------------------------------------------------------------

_ORDER_FIELDS: Final = frozenset(
    {
        "status",
        "result_url",
        "completed_at",
        "score",
        "max_score",
        "attributes",
        "attachments",
        "remote_fields",
    }
)
_ORDER_STATUSES: Final = frozenset({"OPEN", "COMPLETED", "CANCELLED"})
_SUB_RESULT_STATUSES: Final = frozenset({"COMPLETED", "CANCELLED"})
_TEXT_FIELDS: Final = frozenset({"type", "label", "value"})
_SUB_RESULT_FIELDS: Final = frozenset({"type", "id", "label", "score", "status"})
_SCORE_FIELDS: Final = frozenset({"value", "max"})
_ATTACHMENT_FIELDS: Final = frozenset({"name", "content_type", "data_url", "data"})
_MAX_ATTACHMENTS: Final = 5
# re.ASCII: the contract's patterns are JavaScript regexes, where \d and \w are ASCII.
_COMPLETED_AT_PATTERN: Final = r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?)?Z?$"
_COMPLETED_AT_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?)?Z?", re.ASCII)
_CONTENT_TYPE_PATTERN: Final = r"^[\w.-]+\/[\w.-]+$"
_CONTENT_TYPE_RE: Final = re.compile(r"[\w.-]+/[\w.-]+", re.ASCII)
_GENERIC_CONTENT_TYPES: Final = frozenset({"application/octet-stream", "binary/octet-stream"})
_PACKAGE_FIELDS: Final = frozenset({"id", "type", "name", "description"})
_PACKAGE_TYPES: Final = frozenset(
    {"BEHAVIORAL", "VIDEO_INTERVIEW", "SKILLS_TEST", "BACKGROUND_CHECK", "REFERENCE_CHECK"}
)

# remote_fields: {name: (sub-schema or "string", required)}; walked generically because
# it is rare and deeply nested.
_Schema = Mapping[str, tuple[Any, bool]]
_REMOTE_FIELDS_SCHEMA: Final[_Schema] = {
    "smartrecruiters": ({"scoreLabel": ("string", False)}, False),
    "recruitee": ({"subtitle": ("string", False)}, False),
    "workday": (
        {
            "Assess_Candidate_Data": (
                {
                    "Candidate_Assessment_Data": (
                        {
                            "Assess_Candidate_Test_Result_Data": (
                                {
                                    "Assessment_Test_Status_Reference": (
                                        {"Assessment_Status_ID": ("string", True)},
                                        False,
                                    )
                                },
                                False,
                            )
                        },
                        False,
                    )
                },
                False,
            )
        },
        False,
    ),
}


def _require_str(obj: Mapping[str, Any], name: str, path: str) -> str:
    value = obj.get(name, MISSING)
    if value is MISSING:
        raise InputInvalid(f"{path}.{name}: required")
    if type(value) is not str:
        raise InputInvalid(f"{path}.{name}: must be a string")
    return value


def _check_completed_at(value: Any) -> None:
    if type(value) is not str:
        raise InputInvalid("completed_at: must be a string")
    if not _COMPLETED_AT_RE.fullmatch(value):
        raise InputInvalid(f"completed_at: must match {_COMPLETED_AT_PATTERN}")
    try:
        dt.date(int(value[0:4]), int(value[5:7]), int(value[8:10]))
        if len(value) > 10 and value[10] == "T":
            dt.time(int(value[11:13]), int(value[14:16]), int(value[17:19]))
    except ValueError:
        raise InputInvalid("completed_at: must be a valid calendar date and time") from None


def _check_attribute(attr: Any, path: str) -> None:
    if type(attr) is not dict:
        raise InputInvalid(f"{path}: must be an object")
    kind = attr.get("type", MISSING)
    if kind is MISSING:
        raise InputInvalid(f"{path}.type: required")
    if kind == "TEXT":
        reject_unknown(attr, _TEXT_FIELDS, path)
        _require_str(attr, "label", path)
        _require_str(attr, "value", path)
        return
    if kind != "SUB_RESULT":
        raise InputInvalid(f"{path}.type: must be one of TEXT, SUB_RESULT")
    reject_unknown(attr, _SUB_RESULT_FIELDS, path)
    _require_str(attr, "id", path)
    _require_str(attr, "label", path)
    score = attr.get("score", MISSING)
    if score is MISSING:
        raise InputInvalid(f"{path}.score: required")
    if type(score) is not dict:
        raise InputInvalid(f"{path}.score: must be an object")
    reject_unknown(score, _SCORE_FIELDS, f"{path}.score")
    for name in ("value", "max"):
        number = score.get(name, MISSING)
        if number is MISSING:
            raise InputInvalid(f"{path}.score.{name}: required")
        if not is_number(number):
            raise InputInvalid(f"{path}.score.{name}: must be a finite number")
    if score["max"] < 1:
        raise InputInvalid(f"{path}.score.max: must be >= 1")
    status = attr.get("status", MISSING)
    if status is MISSING:
        raise InputInvalid(f"{path}.status: required")
    if type(status) is not str or status not in _SUB_RESULT_STATUSES:
        raise InputInvalid(f"{path}.status: must be one of COMPLETED, CANCELLED")


def _check_attachment(att: Any, path: str) -> None:
    if type(att) is not dict:
        raise InputInvalid(f"{path}: must be an object")
    reject_unknown(att, _ATTACHMENT_FIELDS, path)
    _require_str(att, "name", path)
    has_data = "data" in att
    has_url = "data_url" in att
    if has_data == has_url:
        got = "both" if has_data else "neither"
        raise InputInvalid(f"{path}: exactly one of data or data_url is required (got {got})")
    content_type = att.get("content_type", MISSING)
    if content_type is MISSING:
        if has_data:
            raise InputInvalid(f"{path}.content_type: required when data is given")
    else:
        if type(content_type) is not str:
            raise InputInvalid(f"{path}.content_type: must be a string")
        if not _CONTENT_TYPE_RE.fullmatch(content_type):
            raise InputInvalid(f"{path}.content_type: must match {_CONTENT_TYPE_PATTERN}")
        if content_type.lower() in _GENERIC_CONTENT_TYPES:
            raise InputInvalid(
                f"{path}.content_type: must be a meaningful type, not {content_type}"
            )
    if has_data:
        data = att["data"]
        if type(data) is not str:
            raise InputInvalid(f"{path}.data: must be a base64 string")
        try:
            binascii.a2b_base64(data.encode("ascii"), strict_mode=True)
        except (UnicodeEncodeError, binascii.Error):
            raise InputInvalid(f"{path}.data: must be valid standard base64") from None
    elif not is_http_uri(att["data_url"]):
        raise InputInvalid(f"{path}.data_url: must be an absolute http(s) URI")


def _check_schema(value: Any, schema: _Schema, path: str) -> None:
    if type(value) is not dict:
        raise InputInvalid(f"{path}: must be an object")
    for key in value:
        if key not in schema:
            raise InputInvalid(f"{path}.{key}: unknown field")
    for name, (sub, required) in schema.items():
        child = value.get(name, MISSING)
        child_path = f"{path}.{name}"
        if child is MISSING:
            if required:
                raise InputInvalid(f"{child_path}: required")
        elif sub == "string":
            if type(child) is not str:
                raise InputInvalid(f"{child_path}: must be a string")
        else:
            _check_schema(child, sub, child_path)


def validate_order_result(body: Any) -> None:
    """Raise :class:`InputInvalid` for the first rule ``body`` breaks."""
    if type(body) is not dict:
        raise InputInvalid("body: must be a JSON object")
    reject_unknown(body, _ORDER_FIELDS)
    status = body.get("status", MISSING)
    if status is MISSING:
        raise InputInvalid("status: required")
    if type(status) is not str or status not in _ORDER_STATUSES:
        raise InputInvalid("status: must be one of OPEN, COMPLETED, CANCELLED")
    result_url = body.get("result_url", MISSING)
    if result_url is MISSING:
        raise InputInvalid("result_url: required")
    if not is_http_uri(result_url):
        raise InputInvalid("result_url: must be an absolute http(s) URI")
    completed_at = body.get("completed_at", MISSING)
    if completed_at is MISSING:
        if status != "OPEN":
            raise InputInvalid(f"completed_at: required when status is {status}")
    else:
        _check_completed_at(completed_at)
    for name in ("score", "max_score"):
        number = body.get(name, MISSING)
        if number is not MISSING and not is_number(number):
            raise InputInvalid(f"{name}: must be a finite number")
    attributes = body.get("attributes", MISSING)
    if attributes is not MISSING:
        if type(attributes) is not list:
            raise InputInvalid("attributes: must be an array")
        for i, attr in enumerate(attributes):
            _check_attribute(attr, f"attributes[{i}]")
    attachments = body.get("attachments", MISSING)
    if attachments is not MISSING:
        if type(attachments) is not list:
            raise InputInvalid("attachments: must be an array")
        if len(attachments) > _MAX_ATTACHMENTS:
            raise InputInvalid(f"attachments: must contain at most {_MAX_ATTACHMENTS} items")
        for i, att in enumerate(attachments):
            _check_attachment(att, f"attachments[{i}]")
    remote_fields = body.get("remote_fields", MISSING)
    if remote_fields is not MISSING:
        _check_schema(remote_fields, _REMOTE_FIELDS_SCHEMA, "remote_fields")


def validate_packages(body: Any) -> None:
    """Raise :class:`InputInvalid` for the first rule ``body`` breaks."""
    if type(body) is not dict:
        raise InputInvalid("body: must be a JSON object")
    reject_unknown(body, frozenset({"packages"}))
    packages = body.get("packages", MISSING)
    if packages is MISSING:
        raise InputInvalid("packages: required")
    if type(packages) is not list:
        raise InputInvalid("packages: must be an array")
    seen: set[str] = set()
    for i, package in enumerate(packages):
        path = f"packages[{i}]"
        if type(package) is not dict:
            raise InputInvalid(f"{path}: must be an object")
        reject_unknown(package, _PACKAGE_FIELDS, path)
        package_id = _require_str(package, "id", path)
        kind = package.get("type", MISSING)
        if kind is MISSING:
            raise InputInvalid(f"{path}.type: required")
        if type(kind) is not str or kind not in _PACKAGE_TYPES:
            raise InputInvalid(
                f"{path}.type: must be one of BEHAVIORAL, VIDEO_INTERVIEW, SKILLS_TEST, "
                "BACKGROUND_CHECK, REFERENCE_CHECK"
            )
        _require_str(package, "name", path)
        _require_str(package, "description", path)
        if package_id in seen:
            raise InputInvalid(f"{path}.id: duplicate id {package_id!r}")
        seen.add(package_id)


# -- state ---------------------------------------------------------------------------------


@dataclass(slots=True)
class OrderState:
    """One order as the sandbox sees it; ``body`` is the last accepted request body."""

    integration_id: str
    order_id: str
    status: str
    body: JSONDict
    updates: int = 1
    statuses: list[str] = field(default_factory=list)
    updated_at: float = 0.0

    def to_json(self) -> JSONDict:
        return {
            "integration_id": self.integration_id,
            "order_id": self.order_id,
            "status": self.status,
            "body": self.body,
            "updates": self.updates,
            "statuses": list(self.statuses),
            "updated_at": self.updated_at,
        }


@dataclass(slots=True)
class PackageState:
    """An integration's package list: the live packages and the ids deleted since."""

    active: list[JSONDict] = field(default_factory=list)
    deleted_ids: list[str] = field(default_factory=list)

    def to_json(self) -> JSONDict:
        return {"active": list(self.active), "deleted_ids": list(self.deleted_ids)}


@dataclass(slots=True)
class IntegrationConfig:
    """What the control API set for one integration id."""

    state: IntegrationState = "active"
    warnings: list[JSONDict] = field(default_factory=list)
    success_body: bytes = b""

    def to_json(self) -> JSONDict:
        return {"state": self.state, "warnings": list(self.warnings)}


def _success_body(warnings: list[JSONDict]) -> bytes:
    return json.dumps({"status": "success", "data": {}, "warnings": warnings}).encode()


_SUCCESS: Final = _success_body([])
_ACTIVE: Final = IntegrationConfig(success_body=_SUCCESS)


class _IntegrationBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: IntegrationState | None = None
    warnings: list[str | dict[str, str]] | None = None


def _normalise_warnings(warnings: list[str | dict[str, str]]) -> list[JSONDict]:
    out: list[JSONDict] = []
    for warning in warnings:
        if isinstance(warning, str):
            out.append({"message": warning})
        elif isinstance(warning.get("message"), str):
            out.append(dict(warning))
        else:
            raise ValueError(f"a warning needs a string message: {warning!r}")
    return out


# -- server --------------------------------------------------------------------------------


class KomboSandbox(VendorSandbox):
    """The Kombo sandbox server. ``url`` is the base URL a Kombo client uses."""

    vendor = "kombo"
    prefix = "/v1"

    def __init__(
        self,
        *,
        api_key: str,
        latency_ms: float = 0.0,
        max_recorded: int = 1_000_000,
        seed: int | None = None,
        max_body_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        self._expected_auth = f"Bearer {api_key}".encode()
        self._orders: dict[str, OrderState] = {}
        self._packages: dict[str, PackageState] = {}
        self._integrations: dict[str, IntegrationConfig] = {}
        super().__init__(
            latency_ms=latency_ms,
            max_recorded=max_recorded,
            seed=seed,
            max_body_bytes=max_body_bytes,
        )

    # -- Python control API ------------------------------------------------------------------

    def order(self, integration_id: str, order_id: str) -> OrderState | None:
        return self._orders.get(order_key(integration_id, order_id))

    @property
    def orders(self) -> Mapping[str, OrderState]:
        """Orders by :func:`order_key`."""
        return MappingProxyType(self._orders)

    @property
    def packages(self) -> Mapping[str, PackageState]:
        """Package lists by integration id."""
        return MappingProxyType(self._packages)

    def integration(self, integration_id: str) -> IntegrationConfig:
        """What the control API set for this id (a fresh default if nothing was set)."""
        return self._integrations.get(integration_id) or IntegrationConfig(success_body=_SUCCESS)

    def set_integration(
        self,
        integration_id: str,
        state: IntegrationState | None = None,
        warnings: list[str | dict[str, str]] | None = None,
    ) -> IntegrationConfig:
        """Mark an integration unknown / inactive / active and set its success warnings."""
        current = self._integrations.get(integration_id) or IntegrationConfig(success_body=_SUCCESS)
        if state is not None:
            if state not in ("active", "unknown", "inactive"):
                raise ValueError(f"state must be active, unknown or inactive, got {state!r}")
            current.state = state
        if warnings is not None:
            current.warnings = _normalise_warnings(warnings)
            current.success_body = _success_body(current.warnings)
        self._integrations[integration_id] = current
        return current

    def state(self) -> JSONDict:
        return {
            "orders": {key: order.to_json() for key, order in self._orders.items()},
            "packages": {key: p.to_json() for key, p in self._packages.items()},
            "integrations": {key: c.to_json() for key, c in self._integrations.items()},
        }

    def _reset_state(self) -> None:
        self._orders.clear()
        self._packages.clear()
        self._integrations.clear()

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
        payload = {
            "status": "error",
            "error": {
                "code": code,
                "title": _TITLES.get(code),
                "message": message,
                "log_url": None if entry is None else self.log_url(entry),
            },
        }
        return web.Response(
            body=json.dumps(payload).encode(),
            status=status,
            content_type="application/json",
            headers=headers,
        )

    def _fault_response(self, fault: Fault, target: str | None, entry: JSONDict) -> web.Response:
        status = fault.status or 503
        code = fault.code or _FAULT_CODES.get(status)
        message = fault.message
        if message is None:
            if fault.kind == "outage":
                subject = f"Integration {target}" if target else "The service"
                message = f"{subject} is unavailable (sandbox outage)"
            else:
                message = f"Sandbox fault {fault.rule_id}: HTTP {status}"
        headers = None
        if fault.retry_after_s is not None:
            headers = {"Retry-After": str(fault.retry_after_s)}
        return self._error_response(status, message, code=code, entry=entry, headers=headers)

    def _invalid(self, message: str, entry: JSONDict) -> web.Response:
        return self._error_response(400, message, code=INPUT_INVALID, entry=entry)

    def _gate(
        self, request: web.Request, integration_id: str | None, entry: JSONDict
    ) -> web.Response | IntegrationConfig:
        """Method, auth, integration and content-type checks shared by both endpoints."""
        if request.method != "PUT":
            return self._error_response(
                405, f"Method {request.method} is not allowed; use PUT", entry=entry
            )
        if not bearer_matches(request.headers.get("Authorization"), self._expected_auth):
            return self._error_response(
                401,
                "Missing or invalid API key: send 'Authorization: Bearer <API key>'",
                code="PLATFORM.AUTHENTICATION_INVALID",
                entry=entry,
            )
        if integration_id is None:
            return self._invalid("X-Integration-Id: required header", entry)
        config = self._integrations.get(integration_id, _ACTIVE)
        if config.state == "unknown":
            return self._error_response(
                404,
                f"Integration {integration_id} was not found",
                code="PLATFORM.INTEGRATION_NOT_FOUND",
                entry=entry,
            )
        if config.state == "inactive":
            return self._error_response(
                403,
                f"Integration {integration_id} is inactive",
                code="INTEGRATION.INACTIVE",
                entry=entry,
            )
        if request.content_type != "application/json":
            return self._invalid("Content-Type: must be application/json", entry)
        return config

    @staticmethod
    def _body_problem(body: Any) -> str | None:
        if body is None:
            return "body: required"
        if type(body) is UnparsableBody:
            return "body: must be valid JSON"
        return None

    def _success(self, config: IntegrationConfig) -> web.Response:
        return web.Response(body=config.success_body, content_type="application/json")

    # -- routes ------------------------------------------------------------------------------

    def _add_vendor_routes(self, router: web.UrlDispatcher) -> None:
        # Any method: a wrong one gets the vendor's 405 shape and is recorded.
        router.add_route(
            "*", "/v1/assessment/orders/{assessment_order_id}/result", self._order_result
        )
        router.add_route("*", "/v1/assessment/packages", self._set_packages)
        router.add_get("/v1/check-api-key", self._check_api_key)

    def _add_vendor_control_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/_sandbox/integrations/{integration_id}", self._ctl_integration)

    async def _check_api_key(self, request: web.Request) -> web.Response:
        entry = self._record(request, None, None)
        if bearer_matches(request.headers.get("Authorization"), self._expected_auth):
            data = {"environment_id": "sandbox", "customer_id": "sandbox"}
            response = web.json_response({"status": "success", "data": data})
        else:
            response = self._error_response(
                401,
                "Missing or invalid API key: send 'Authorization: Bearer <API key>'",
                code="PLATFORM.AUTHENTICATION_INVALID",
                entry=entry,
            )
        entry["status_code"] = response.status
        return response

    async def _order_result(self, request: web.Request) -> web.Response:
        body = await self._read_body(request)
        integration_id = request.headers.get("X-Integration-Id") or None
        order_id = request.match_info["assessment_order_id"]
        key = None if integration_id is None else f"{integration_id}/{order_id}"
        entry = self._record(request, body, key)
        if body is TOO_LARGE:
            return self._too_large(entry)

        def process() -> web.Response:
            gate = self._gate(request, integration_id, entry)
            if isinstance(gate, web.Response):
                return gate
            problem = self._body_problem(body)
            if problem is not None:
                return self._invalid(problem, entry)
            try:
                validate_order_result(body)
            except InputInvalid as exc:
                return self._invalid(str(exc), entry)
            assert key is not None and integration_id is not None
            status: str = body["status"]
            order = self._orders.get(key)
            now = time.time()
            if order is None:
                self._orders[key] = OrderState(
                    integration_id, order_id, status, body, 1, [status], now
                )
            else:
                if status != order.status and order.status != "OPEN":
                    return self._invalid(
                        f"Order {order_id} is {order.status}; "
                        "its status can only change while OPEN",
                        entry,
                    )
                if status != order.status:
                    order.statuses.append(status)
                order.status = status
                order.body = body
                order.updates += 1
                order.updated_at = now
            return self._success(gate)

        return await self._respond(request, entry, integration_id, process)

    async def _set_packages(self, request: web.Request) -> web.Response:
        body = await self._read_body(request)
        integration_id = request.headers.get("X-Integration-Id") or None
        entry = self._record(request, body, integration_id)
        if body is TOO_LARGE:
            return self._too_large(entry)

        def process() -> web.Response:
            gate = self._gate(request, integration_id, entry)
            if isinstance(gate, web.Response):
                return gate
            problem = self._body_problem(body)
            if problem is not None:
                return self._invalid(problem, entry)
            try:
                validate_packages(body)
            except InputInvalid as exc:
                return self._invalid(str(exc), entry)
            assert integration_id is not None
            self._replace_packages(integration_id, body["packages"])
            return self._success(gate)

        return await self._respond(request, entry, integration_id, process)

    def _replace_packages(self, integration_id: str, packages: list[JSONDict]) -> None:
        previous = self._packages.get(integration_id)
        new_ids = {p["id"] for p in packages}
        deleted: list[str] = []
        if previous is not None:
            deleted = [d for d in previous.deleted_ids if d not in new_ids]
            known = set(deleted)
            for package in previous.active:
                if package["id"] not in new_ids and package["id"] not in known:
                    deleted.append(package["id"])
                    known.add(package["id"])
        self._packages[integration_id] = PackageState(active=list(packages), deleted_ids=deleted)

    async def _ctl_integration(self, request: web.Request) -> web.Response:
        integration_id = request.match_info["integration_id"]
        try:
            body = _IntegrationBody.model_validate(await read_control_json(request))
            config = self.set_integration(integration_id, body.state, body.warnings)
        except ValidationError as exc:
            return control_error(400, validation_message(exc))
        except ValueError as exc:
            return control_error(400, str(exc))
        logger.info("kombo sandbox: integration %s set to %s", integration_id, config.state)
        return web.json_response({"integration_id": integration_id, **config.to_json()})
