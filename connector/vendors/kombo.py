"""Kombo: ``PUT /assessment/orders/{id}/result`` and ``PUT /assessment/packages``.

Request models carry the seed contract's rules: the status enum, ``result_url``
required on every update, ``completed_at`` (``YYYY-MM-DDTHH:mm:ss.sssZ``)
required on COMPLETED and CANCELLED, at most 5 attachments with a
``type/subtype`` content type, SUB_RESULT scores with ``max >= 1``, and the
documented ``remote_fields`` only.

Mapping (see the README table): progress becomes an OPEN update with a
``Status`` text attribute; the outcome and summary of a result become text
attributes (Kombo has no field for them); sub-results with a score become
SUB_RESULT attributes, without one a text attribute; a cancellation or
expiry becomes CANCELLED with a ``Cancellation reason`` attribute.

Error codes decide retries, not HTTP statuses (Kombo's advice): the codes in
:data:`RETRYABLE_CODES` are transient, every other code is permanent, and a
response without a code falls back to the HTTP status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, assert_never

import httpx
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, StringConstraints, model_validator

from connector.domain.events import (
    CONTENT_TYPE_PATTERN,
    GENERIC_CONTENT_TYPES,
    Event,
    KomboTarget,
    OrderCancelled,
    OrderCompleted,
    OrderOpened,
    OrderProgress,
    PackagesSet,
)
from connector.errors import (
    MappingError,
    PermanentDeliveryError,
    RateLimitedError,
    RetryableDeliveryError,
)
from connector.settings import KomboSettings, Settings
from connector.vendors.accounts import kombo_router
from connector.vendors.base import (
    CallResult,
    VendorRequest,
    build_model,
    error_for_status,
    parse_retry_after,
    path_segment,
    send_http,
)
from connector.vendors.checks import Check, is_local_url, url_problem
from connector.vendors.registry import KeyForm, Vendor, register

__all__ = [
    "RATE_LIMIT_CODES",
    "RETRYABLE_CODES",
    "VENDOR",
    "KomboClient",
    "KomboOrderResult",
    "KomboPackages",
    "config_problems",
    "format_completed_at",
    "map_event",
    "probe",
    "secrets",
]

logger = logging.getLogger(__name__)

COMPLETED_AT_PATTERN = r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?)?Z?$"

RATE_LIMIT_CODES = frozenset(
    {
        "PLATFORM.RATE_LIMIT_EXCEEDED",
        "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED",
        "REMOTE.RATE_LIMIT_EXCEEDED",
    }
)
RETRYABLE_CODES = RATE_LIMIT_CODES | {
    "PLATFORM.TASK_TIMED_OUT",
    "PLATFORM.UNKNOWN_ERROR",
    "REMOTE.SERVICE_UNAVAILABLE",
    "REMOTE.UNKNOWN_HTTP_ERROR",
    # The integration's first sync is still running; it ends by itself.
    "INTEGRATION.SETUP_SYNC_PENDING",
}

NonEmpty = Annotated[str, StringConstraints(min_length=1)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextAttr(_Body):
    type: Literal["TEXT"] = "TEXT"
    label: str
    value: str


class SubResultScore(_Body):
    value: Finite
    max: Finite = Field(ge=1)


class SubResultAttr(_Body):
    type: Literal["SUB_RESULT"] = "SUB_RESULT"
    id: str
    label: str
    score: SubResultScore
    status: Literal["COMPLETED", "CANCELLED"]


class AttachmentBody(_Body):
    name: str
    content_type: str | None = Field(default=None, pattern=CONTENT_TYPE_PATTERN)
    data_url: HttpUrl | None = None
    data: str | None = None

    @model_validator(mode="after")
    def _rules(self) -> AttachmentBody:
        if (self.data is None) == (self.data_url is None):
            raise ValueError("exactly one of data or data_url")
        if self.data is not None and self.content_type is None:
            raise ValueError("content_type is required with data")
        if self.content_type and self.content_type.lower() in GENERIC_CONTENT_TYPES:
            raise ValueError("content_type must not be generic")
        return self


class _SmartRecruiters(_Body):
    scoreLabel: str | None = None


class _Recruitee(_Body):
    subtitle: str | None = None


class _StatusRef(_Body):
    Assessment_Status_ID: str


class _TestResultData(_Body):
    Assessment_Test_Status_Reference: _StatusRef | None = None


class _CandidateAssessmentData(_Body):
    Assess_Candidate_Test_Result_Data: _TestResultData | None = None


class _AssessCandidateData(_Body):
    Candidate_Assessment_Data: _CandidateAssessmentData | None = None


class _Workday(_Body):
    Assess_Candidate_Data: _AssessCandidateData | None = None


class RemoteFields(_Body):
    smartrecruiters: _SmartRecruiters | None = None
    recruitee: _Recruitee | None = None
    workday: _Workday | None = None


class KomboOrderResult(_Body):
    status: Literal["OPEN", "COMPLETED", "CANCELLED"]
    result_url: HttpUrl
    completed_at: str | None = Field(default=None, pattern=COMPLETED_AT_PATTERN)
    score: Finite | None = None
    max_score: Finite | None = None
    attributes: list[Annotated[TextAttr | SubResultAttr, Field(discriminator="type")]] = []
    attachments: list[AttachmentBody] = Field(default=[], max_length=5)
    remote_fields: RemoteFields | None = None

    @model_validator(mode="after")
    def _completed_at_on_final(self) -> KomboOrderResult:
        if self.status != "OPEN" and self.completed_at is None:
            raise ValueError(f"completed_at is required when status is {self.status}")
        return self


class PackageBody(_Body):
    id: NonEmpty
    type: Literal[
        "BEHAVIORAL", "VIDEO_INTERVIEW", "SKILLS_TEST", "BACKGROUND_CHECK", "REFERENCE_CHECK"
    ]
    name: NonEmpty
    description: str


class KomboPackages(_Body):
    packages: list[PackageBody]


def format_completed_at(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:mm:ss.sssZ`` in UTC, as JavaScript's toISOString prints it."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _text(label: str, value: str) -> dict[str, str]:
    return {"type": "TEXT", "label": label, "value": value}


def _result_url(event: OrderOpened | OrderProgress | OrderCancelled) -> str:
    if event.result_url is None:
        raise MappingError("kombo contract: result_url is required on every order update")
    return str(event.result_url)


def _completed_body(event: OrderCompleted) -> dict[str, Any]:
    attributes: list[dict[str, Any]] = [
        {"type": "TEXT", "label": "Outcome", "value": event.outcome.value}
    ]
    if event.summary:
        attributes.append({"type": "TEXT", "label": "Summary", "value": event.summary})
    for sub in event.sub_results:
        if sub.score is not None:
            attributes.append(
                {
                    "type": "SUB_RESULT",
                    "id": sub.id,
                    "label": sub.label,
                    "score": {"value": sub.score.value, "max": sub.score.max},
                    "status": sub.status.upper(),
                }
            )
        else:
            text = sub.status if not sub.notes else f"{sub.status}: {sub.notes}"
            attributes.append({"type": "TEXT", "label": sub.label, "value": text})
    attributes.extend(
        {"type": "TEXT", "label": a.label, "value": a.value} for a in event.attributes
    )
    body: dict[str, Any] = {
        "status": "COMPLETED",
        "result_url": str(event.result_url),
        "completed_at": format_completed_at(event.completed_at),
        "attributes": attributes,
    }
    if event.score is not None:
        body["score"] = event.score.value
        body["max_score"] = event.score.max
    if event.attachments:
        body["attachments"] = [
            a.model_dump(mode="json", exclude_none=True) for a in event.attachments
        ]
    if event.kombo_remote_fields is not None:
        body["remote_fields"] = event.kombo_remote_fields
    return body


def map_event(event: Event) -> VendorRequest:
    """The Kombo call for one event. Pure; raises MappingError on a contract breach."""
    match event:
        case PackagesSet():
            return _packages_request(event)
        case OrderOpened() | OrderProgress() | OrderCompleted() | OrderCancelled():
            return _order_request(event)
        case _:
            assert_never(event)


def _packages_request(event: PackagesSet) -> VendorRequest:
    integration_id = event.target.integration_id
    packages = build_model(
        KomboPackages,
        "kombo",
        packages=[p.model_dump(mode="json") for p in event.packages],
    )
    return VendorRequest(
        vendor="kombo",
        action="kombo.packages",
        method="PUT",
        path="/assessment/packages",
        body=packages.model_dump(mode="json", exclude_none=True),
        headers={"X-Integration-Id": integration_id},
        limit_key=f"kombo|{integration_id}",
    )


def _order_request(
    event: OrderOpened | OrderProgress | OrderCompleted | OrderCancelled,
) -> VendorRequest:
    target = event.target
    if not isinstance(target, KomboTarget):
        raise MappingError(f"event targets {target.vendor}, not kombo")
    data: dict[str, Any]
    match event:
        case OrderCompleted():
            data = _completed_body(event)
        case OrderCancelled():
            label = "Expired" if event.kind == "expired" else "Cancelled"
            data = {
                "status": "CANCELLED",
                "result_url": _result_url(event),
                "completed_at": format_completed_at(event.ended_at),
                "attributes": [
                    {
                        "type": "TEXT",
                        "label": "Cancellation reason",
                        "value": f"{label}: {event.reason}",
                    }
                ],
            }
        case OrderProgress():
            data = {
                "status": "OPEN",
                "result_url": _result_url(event),
                "attributes": [{"type": "TEXT", "label": "Status", "value": event.status_text}],
            }
        case OrderOpened():
            data = {"status": "OPEN", "result_url": _result_url(event)}
        case _:
            assert_never(event)
    model = build_model(KomboOrderResult, "kombo", **data)
    return VendorRequest(
        vendor="kombo",
        action="kombo.order_result",
        method="PUT",
        # Order ids may hold "/", "?", "#", "%", ".." or non-ASCII: one encoded segment.
        path=f"/assessment/orders/{path_segment(target.assessment_order_id)}/result",
        body=model.model_dump(mode="json", exclude_none=True, exclude_unset=True),
        headers={"X-Integration-Id": target.integration_id},
        limit_key=f"kombo|{target.integration_id}",
    )


def _error_from_response(response: httpx.Response) -> Exception:
    code: str | None = None
    message = f"HTTP {response.status_code}"
    try:
        error = response.json().get("error") or {}
        code = error.get("code")
        message = str(error.get("message") or message)[:500]
    except (ValueError, AttributeError):
        pass
    text = f"{code or 'no code'}: {message}"
    if code in RATE_LIMIT_CODES:
        return RateLimitedError(
            text,
            http_status=response.status_code,
            vendor_code=code,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    if code in RETRYABLE_CODES:
        return RetryableDeliveryError(text, http_status=response.status_code, vendor_code=code)
    if code is not None:
        return PermanentDeliveryError(text, http_status=response.status_code, vendor_code=code)
    return error_for_status(response, text)


class KomboClient:
    """Sends Kombo requests on a shared ``httpx.AsyncClient``.

    Hand-written rather than through the official SDK, for a measured reason
    (BENCHMARKS.md): on the same shared client the SDK costs ~4.4 ms of CPU per
    call against ~0.45 ms, because it builds pydantic model classes
    (``create_model``) on every call; its two thread-pool hops for hooks turned
    out not to matter. The request bodies are built and validated by the models
    above, which carry the same contract.
    """

    vendor = "kombo"

    def __init__(self, http: httpx.AsyncClient, settings: KomboSettings) -> None:
        self._http = http
        # The account (region or environment) serving each integration: base URL and
        # key, built once; the key never leaves the Authorization header.
        self._accounts = kombo_router(settings)

    async def send(self, request: VendorRequest) -> CallResult:
        started = time.perf_counter()
        account = self._accounts.select(request.headers.get("X-Integration-Id", ""))
        response = await send_http(
            self._http,
            request.method,
            account.base_url + request.path,
            body=request.body,
            headers={**account.headers, **request.headers},
        )
        logger.debug(
            "kombo %s -> %s in %.3fs",
            request.path,
            response.status_code,
            time.perf_counter() - started,
        )
        if response.status_code != 200:
            raise _error_from_response(response)
        warnings: tuple[str, ...] = ()
        try:
            payload = response.json()
            warnings = tuple(str(w.get("message", "")) for w in payload.get("warnings") or [])
        except (ValueError, AttributeError):
            logger.warning("kombo answered 200 with a body that is not the documented JSON")
        return CallResult(http_status=response.status_code, warnings=warnings)


# -- connector check --------------------------------------------------------------------------


def config_problems(settings: Settings) -> tuple[list[str], list[str]]:
    """(errors, warnings) about the Kombo settings, found without the network."""
    errors: list[str] = []
    warnings: list[str] = []
    kombo = settings.kombo
    if kombo.base_url and (problem := url_problem("CONNECTOR_KOMBO__BASE_URL", kombo.base_url)):
        errors.append(problem)
    # An empty credential against a real vendor dead-letters every event as a 401.
    if not kombo.api_key.get_secret_value() and not is_local_url(kombo.url):
        where = (
            "CONNECTOR_KOMBO__BASE_URL"
            if kombo.base_url
            else f"CONNECTOR_KOMBO__REGION={kombo.region}"
        )
        line = (
            f"CONNECTOR_KOMBO__API_KEY: empty while Kombo calls go to {kombo.url} ({where}); "
            "fix: set CONNECTOR_KOMBO__API_KEY or CONNECTOR_KOMBO__API_KEY_FILE"
        )
        # With named accounts the default key only serves integrations none of them lists.
        (warnings if kombo.accounts else errors).append(line)
    return errors, warnings


async def _check_key(
    http: httpx.AsyncClient, name: str, variable: str, url: str, key: str
) -> Check:
    if not key:
        return Check(name, "skip", f"{variable} is empty")
    try:
        response = await http.get(
            f"{url}/check-api-key", headers={"Authorization": f"Bearer {key}"}
        )
    except httpx.HTTPError as exc:
        where = variable.replace("API_KEY", "BASE_URL")
        return Check(
            name, "FAIL", f"{url} did not answer ({type(exc).__name__}); fix: check {where}"
        )
    if response.status_code == 200:
        return Check(name, "ok", f"{variable} accepted by {url}/check-api-key")
    if response.status_code in (401, 403):
        return Check(
            name,
            "FAIL",
            f"{variable}: rejected by {url} (HTTP {response.status_code}); "
            f"fix: set the key from Kombo's dashboard (Secrets) for this region or environment",
        )
    return Check(name, "warn", f"{url}/check-api-key answered HTTP {response.status_code}")


async def probe(http: httpx.AsyncClient, settings: Settings) -> list[Check]:
    """Kombo's ``GET /check-api-key`` (documented, read-only) for every key."""
    kombo = settings.kombo
    jobs = [
        _check_key(
            http, "kombo", "CONNECTOR_KOMBO__API_KEY", kombo.url, kombo.api_key.get_secret_value()
        )
    ]
    for name, account in sorted(kombo.accounts.items()):
        variable = f"CONNECTOR_KOMBO__ACCOUNTS__{name.upper()}__API_KEY"
        jobs.append(
            _check_key(
                http, f"kombo:{name}", variable, account.url, account.api_key.get_secret_value()
            )
        )
    return list(await asyncio.gather(*jobs))


def secrets(settings: Settings) -> list[str]:
    kombo = settings.kombo
    return [kombo.api_key.get_secret_value()] + [
        a.api_key.get_secret_value() for a in kombo.accounts.values()
    ]


VENDOR = register(
    Vendor(
        name="kombo",
        map_event=map_event,
        client=lambda http, settings: KomboClient(http, settings.kombo),
        keys=(
            KeyForm("kombo", ("integration_id", "order_id"), limit="kombo|{integration_id}"),
            KeyForm("kombo-packages", ("integration_id",), limit="kombo|{integration_id}"),
        ),
        target_noun="a Kombo integration",
        order_target=KomboTarget,
        config_problems=config_problems,
        probe=probe,
        secrets=secrets,
    )
)
