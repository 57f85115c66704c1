"""Kombo sandbox: contract validation, auth, integrations, order state and packages."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from connector.sandbox import REDACTED, AsyncSandboxControl, Sandboxes
from tests.sandbox.conftest import INTEGRATION, KOMBO_HEADERS, KOMBO_KEY, client, kombo_error
from tests.sandbox.seed_examples import KOMBO_PACKAGES_EXAMPLE, KOMBO_RESULT_EXAMPLE, fresh

INPUT_INVALID = "PLATFORM.INPUT_INVALID"
RESULT = "/assessment/orders/{}/result"
WORKDAY_STATUS = {
    "Assess_Candidate_Data": {
        "Candidate_Assessment_Data": {
            "Assess_Candidate_Test_Result_Data": {
                "Assessment_Test_Status_Reference": {"Assessment_Status_ID": "PASSED"}
            }
        }
    }
}
OPEN = {"status": "OPEN", "result_url": "https://example.com/r/1"}


def _sub_result(**changes: Any) -> dict[str, Any]:
    attr: dict[str, Any] = {
        "type": "SUB_RESULT",
        "id": "t1",
        "label": "Personality test",
        "score": {"value": 97, "max": 100},
        "status": "COMPLETED",
    }
    for key, value in changes.items():
        if value is ...:
            attr.pop(key)
        else:
            attr[key] = value
    return attr


def _attachment(**changes: Any) -> dict[str, Any]:
    att: dict[str, Any] = {"name": "r.pdf", "data": "SGk=", "content_type": "application/pdf"}
    for key, value in changes.items():
        if value is ...:
            att.pop(key)
        else:
            att[key] = value
    return att


# -- the seed's examples and other valid bodies -----------------------------------------------


async def test_seed_result_example_is_accepted_and_stored(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    response = await kombo.put(RESULT.format("GRKdd9dibYKKCrmGRSMJf3wu"), json=KOMBO_RESULT_EXAMPLE)

    assert response.status_code == 200
    assert response.json() == {"status": "success", "data": {}, "warnings": []}
    order = sandboxes.kombo.order(INTEGRATION, "GRKdd9dibYKKCrmGRSMJf3wu")
    assert order is not None
    assert order.status == "COMPLETED"
    assert order.body == KOMBO_RESULT_EXAMPLE


async def test_seed_packages_example_is_accepted(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    response = await kombo.put("/assessment/packages", json=KOMBO_PACKAGES_EXAMPLE)

    assert response.status_code == 200
    assert response.json() == {"status": "success", "data": {}, "warnings": []}
    state = sandboxes.kombo.packages[INTEGRATION]
    assert state.active == KOMBO_PACKAGES_EXAMPLE["packages"]
    assert state.deleted_ids == []


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(OPEN, id="open-minimal"),
        pytest.param({**OPEN, "completed_at": "2023-04-04"}, id="date-only"),
        pytest.param({**OPEN, "completed_at": "2023-04-04T10:11:12"}, id="no-zone"),
        pytest.param(
            fresh(KOMBO_RESULT_EXAMPLE, status="CANCELLED", attachments=[], attributes=[]),
            id="cancelled-empty-lists",
        ),
        pytest.param(
            {
                **OPEN,
                "attachments": [
                    {"name": "r.pdf", "data_url": "https://files.example.com/r.pdf?sig=a%2Fb"}
                ],
            },
            id="data-url-without-content-type",
        ),
        pytest.param(
            {
                **OPEN,
                "remote_fields": {
                    "smartrecruiters": {"scoreLabel": "Great"},
                    "recruitee": {"subtitle": "Sub"},
                    "workday": WORKDAY_STATUS,
                },
            },
            id="remote-fields",
        ),
        pytest.param({**OPEN, "score": -1.5, "max_score": 0}, id="any-finite-scores"),
        pytest.param(
            {**OPEN, "attachments": [_attachment() for _ in range(5)]}, id="five-attachments"
        ),
    ],
)
async def test_valid_result_bodies_are_accepted(
    kombo: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await kombo.put(RESULT.format("o-valid"), json=body)

    assert response.status_code == 200, response.text


# -- validation: every rule rejects with a field-specific message ----------------------------

BAD_RESULT_BODIES = [
    ([], "body: must be a JSON object"),
    (fresh(KOMBO_RESULT_EXAMPLE, foo=1), "foo: unknown field"),
    (fresh(KOMBO_RESULT_EXAMPLE, status=...), "status: required"),
    (
        fresh(KOMBO_RESULT_EXAMPLE, status="DONE"),
        "status: must be one of OPEN, COMPLETED, CANCELLED",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, status="completed"),
        "status: must be one of OPEN, COMPLETED, CANCELLED",
    ),
    (fresh(KOMBO_RESULT_EXAMPLE, status=None), "status: must be one of OPEN, COMPLETED, CANCELLED"),
    (fresh(KOMBO_RESULT_EXAMPLE, result_url=...), "result_url: required"),
    (
        fresh(KOMBO_RESULT_EXAMPLE, result_url="example.com"),
        "result_url: must be an absolute http(s) URI",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, result_url="ftp://example.com/x"),
        "result_url: must be an absolute http(s) URI",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, result_url="https://exa mple.com"),
        "result_url: must be an absolute http(s) URI",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, result_url="https://"),
        "result_url: must be an absolute http(s) URI",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, completed_at=...),
        "completed_at: required when status is COMPLETED",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, status="CANCELLED", completed_at=...),
        "completed_at: required when status is CANCELLED",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, completed_at="04/04/2023"),
        r"completed_at: must match ^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?)?Z?$",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, completed_at="2023-04-04T00:00:00+02:00"),
        r"completed_at: must match ^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?)?Z?$",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, completed_at="2023-04-04T00:00Z"),
        r"completed_at: must match ^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?)?Z?$",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, completed_at="2023-04-04T00:00:00Z\n"),
        r"completed_at: must match ^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?)?Z?$",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, completed_at="2023-13-04T00:00:00Z"),
        "completed_at: must be a valid calendar date and time",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, completed_at="2023-04-04T24:00:00Z"),
        "completed_at: must be a valid calendar date and time",
    ),
    (fresh(KOMBO_RESULT_EXAMPLE, completed_at=1680566400), "completed_at: must be a string"),
    (fresh(KOMBO_RESULT_EXAMPLE, score="90"), "score: must be a finite number"),
    (fresh(KOMBO_RESULT_EXAMPLE, score=True), "score: must be a finite number"),
    (fresh(KOMBO_RESULT_EXAMPLE, score=None), "score: must be a finite number"),
    (fresh(KOMBO_RESULT_EXAMPLE, max_score=[100]), "max_score: must be a finite number"),
    (fresh(KOMBO_RESULT_EXAMPLE, attributes={}), "attributes: must be an array"),
    (fresh(KOMBO_RESULT_EXAMPLE, attributes=["x"]), "attributes[0]: must be an object"),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attributes=[{"label": "a", "value": "b"}]),
        "attributes[0].type: required",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attributes=[{"type": "NUMBER", "label": "a", "value": "b"}]),
        "attributes[0].type: must be one of TEXT, SUB_RESULT",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attributes=[{"type": "TEXT", "label": "a"}]),
        "attributes[0].value: required",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attributes=[{"type": "TEXT", "label": 1, "value": "b"}]),
        "attributes[0].label: must be a string",
    ),
    (
        fresh(
            KOMBO_RESULT_EXAMPLE,
            attributes=[{"type": "TEXT", "label": "a", "value": "b", "id": "x"}],
        ),
        "attributes[0].id: unknown field",
    ),
    (fresh(KOMBO_RESULT_EXAMPLE, attributes=[_sub_result(id=...)]), "attributes[0].id: required"),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attributes=[_sub_result(label=...)]),
        "attributes[0].label: required",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attributes=[_sub_result(score=...)]),
        "attributes[0].score: required",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attributes=[_sub_result(score=5)]),
        "attributes[0].score: must be an object",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attributes=[_sub_result(status=...)]),
        "attributes[0].status: required",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attributes=[_sub_result(score={"value": 1, "max": 0.5})]),
        "attributes[0].score.max: must be >= 1",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attributes=[_sub_result(score={"value": 1})]),
        "attributes[0].score.max: required",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attributes=[_sub_result(score={"value": "97", "max": 100})]),
        "attributes[0].score.value: must be a finite number",
    ),
    (
        fresh(
            KOMBO_RESULT_EXAMPLE, attributes=[_sub_result(score={"value": 1, "max": 5, "min": 0})]
        ),
        "attributes[0].score.min: unknown field",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attributes=[_sub_result(status="OPEN")]),
        "attributes[0].status: must be one of COMPLETED, CANCELLED",
    ),
    (fresh(KOMBO_RESULT_EXAMPLE, attachments={}), "attachments: must be an array"),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attachments=[_attachment() for _ in range(6)]),
        "attachments: must contain at most 5 items",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attachments=[_attachment(name=...)]),
        "attachments[0].name: required",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attachments=[_attachment(name=3)]),
        "attachments[0].name: must be a string",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attachments=[_attachment(data=...)]),
        "attachments[0]: exactly one of data or data_url is required (got neither)",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attachments=[_attachment(data_url="https://x.io/r.pdf")]),
        "attachments[0]: exactly one of data or data_url is required (got both)",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attachments=[_attachment(content_type=...)]),
        "attachments[0].content_type: required when data is given",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attachments=[_attachment(content_type="pdf")]),
        r"attachments[0].content_type: must match ^[\w.-]+\/[\w.-]+$",
    ),
    (
        fresh(
            KOMBO_RESULT_EXAMPLE,
            attachments=[_attachment(content_type="application/pdf; charset=x")],
        ),
        r"attachments[0].content_type: must match ^[\w.-]+\/[\w.-]+$",
    ),
    (
        fresh(
            KOMBO_RESULT_EXAMPLE, attachments=[_attachment(content_type="application/octet-stream")]
        ),
        "attachments[0].content_type: must be a meaningful type, not application/octet-stream",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attachments=[_attachment(content_type="Binary/Octet-Stream")]),
        "attachments[0].content_type: must be a meaningful type, not Binary/Octet-Stream",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attachments=[_attachment(data="not base64!")]),
        "attachments[0].data: must be valid standard base64",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attachments=[_attachment(data="SGk")]),
        "attachments[0].data: must be valid standard base64",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attachments=[_attachment(data="-_-_")]),
        "attachments[0].data: must be valid standard base64",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attachments=[_attachment(data="SGk=\n")]),
        "attachments[0].data: must be valid standard base64",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attachments=[_attachment(data=None)]),
        "attachments[0].data: must be a base64 string",
    ),
    (
        fresh(
            KOMBO_RESULT_EXAMPLE,
            attachments=[_attachment(), _attachment(data=..., data_url="s3://bucket/r.pdf")],
        ),
        "attachments[1].data_url: must be an absolute http(s) URI",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, attachments=[_attachment(size=3)]),
        "attachments[0].size: unknown field",
    ),
    (fresh(KOMBO_RESULT_EXAMPLE, remote_fields=[]), "remote_fields: must be an object"),
    (
        fresh(KOMBO_RESULT_EXAMPLE, remote_fields={"greenhouse": {}}),
        "remote_fields.greenhouse: unknown field",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, remote_fields={"smartrecruiters": {"scoreLabel": 5}}),
        "remote_fields.smartrecruiters.scoreLabel: must be a string",
    ),
    (
        fresh(KOMBO_RESULT_EXAMPLE, remote_fields={"recruitee": {"title": "x"}}),
        "remote_fields.recruitee.title: unknown field",
    ),
    (
        fresh(
            KOMBO_RESULT_EXAMPLE,
            remote_fields={
                "workday": {
                    "Assess_Candidate_Data": {
                        "Candidate_Assessment_Data": {
                            "Assess_Candidate_Test_Result_Data": {
                                "Assessment_Test_Status_Reference": {}
                            }
                        }
                    }
                }
            },
        ),
        "remote_fields.workday.Assess_Candidate_Data.Candidate_Assessment_Data."
        "Assess_Candidate_Test_Result_Data.Assessment_Test_Status_Reference."
        "Assessment_Status_ID: required",
    ),
]


@pytest.mark.parametrize(
    ("body", "message"),
    BAD_RESULT_BODIES,
    ids=[message.split(":")[0] + f"-{i}" for i, (_, message) in enumerate(BAD_RESULT_BODIES)],
)
async def test_invalid_result_body_is_rejected_with_field_message(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes, body: Any, message: str
) -> None:
    response = await kombo.put(RESULT.format("o-bad"), json=body)

    assert kombo_error(response, 400, INPUT_INVALID) == message
    assert sandboxes.kombo.order(INTEGRATION, "o-bad") is None
    [entry] = sandboxes.kombo.recorded(key=f"{INTEGRATION}/o-bad")
    assert entry["status_code"] == 400
    assert entry["body"] == body


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'{"status":"OPEN","result_url":"https://x.io","score":1e400}',
            "score: must be a finite number",
        ),
        (b'{"status":"OPEN","result_url":"https://x.io","score":NaN}', "body: must be valid JSON"),
        (b'{"status":"OPEN",', "body: must be valid JSON"),
        (b"\xff\xfe{}", "body: must be valid JSON"),
        (b"", "body: required"),
    ],
)
async def test_unparsable_or_non_finite_json_is_rejected(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes, content: bytes, message: str
) -> None:
    response = await kombo.put(
        RESULT.format("o-raw"), content=content, headers={"Content-Type": "application/json"}
    )

    assert kombo_error(response, 400, INPUT_INVALID) == message
    assert sandboxes.kombo.order(INTEGRATION, "o-raw") is None


async def test_body_must_be_sent_as_json(kombo: httpx.AsyncClient) -> None:
    response = await kombo.put(
        RESULT.format("o-ct"), content=json.dumps(OPEN), headers={"Content-Type": "text/plain"}
    )

    assert kombo_error(response, 400, INPUT_INVALID) == "Content-Type: must be application/json"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "packages: required"),
        ([], "body: must be a JSON object"),
        ({"packages": {}}, "packages: must be an array"),
        ({"packages": ["1001"]}, "packages[0]: must be an object"),
        (fresh(KOMBO_PACKAGES_EXAMPLE, extra=1), "extra: unknown field"),
        (
            {"packages": [{"id": "1", "type": "BEHAVIORAL", "name": "n"}]},
            "packages[0].description: required",
        ),
        (
            {"packages": [{"type": "BEHAVIORAL", "name": "n", "description": "d"}]},
            "packages[0].id: required",
        ),
        (
            {"packages": [{"id": 1001, "type": "BEHAVIORAL", "name": "n", "description": "d"}]},
            "packages[0].id: must be a string",
        ),
        (
            {"packages": [{"id": "1", "type": "CODING", "name": "n", "description": "d"}]},
            "packages[0].type: must be one of BEHAVIORAL, VIDEO_INTERVIEW, SKILLS_TEST, "
            "BACKGROUND_CHECK, REFERENCE_CHECK",
        ),
        (
            {"packages": [{"id": "1", "type": "BEHAVIORAL", "name": None, "description": "d"}]},
            "packages[0].name: must be a string",
        ),
        (
            {
                "packages": [
                    {"id": "1", "type": "BEHAVIORAL", "name": "n", "description": "d", "price": 3}
                ]
            },
            "packages[0].price: unknown field",
        ),
        (
            {
                "packages": [
                    *KOMBO_PACKAGES_EXAMPLE["packages"],
                    KOMBO_PACKAGES_EXAMPLE["packages"][0],
                ]
            },
            "packages[2].id: duplicate id '1001'",
        ),
    ],
)
async def test_invalid_packages_body_is_rejected(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes, body: Any, message: str
) -> None:
    response = await kombo.put("/assessment/packages", json=body)

    assert kombo_error(response, 400, INPUT_INVALID) == message
    assert INTEGRATION not in sandboxes.kombo.packages


# -- auth and integrations ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-key", f"Basic {KOMBO_KEY}", KOMBO_KEY, f"Bearer {KOMBO_KEY}x", "Bearer"],
)
async def test_bad_credentials_answer_401(sandboxes: Sandboxes, authorization: str | None) -> None:
    headers = {"X-Integration-Id": INTEGRATION}
    if authorization is not None:
        headers["Authorization"] = authorization
    async with client(sandboxes.kombo_url, headers=headers) as http:
        response = await http.put(RESULT.format("o-auth"), json=OPEN)

    kombo_error(response, 401, "PLATFORM.AUTHENTICATION_INVALID")
    assert sandboxes.kombo.order(INTEGRATION, "o-auth") is None


async def test_missing_integration_header_is_input_invalid(sandboxes: Sandboxes) -> None:
    headers = {"Authorization": f"Bearer {KOMBO_KEY}"}
    async with client(sandboxes.kombo_url, headers=headers) as http:
        response = await http.put(RESULT.format("o-1"), json=OPEN)
        packages = await http.put("/assessment/packages", json=KOMBO_PACKAGES_EXAMPLE)

    assert kombo_error(response, 400, INPUT_INVALID) == "X-Integration-Id: required header"
    assert kombo_error(packages, 400, INPUT_INVALID) == "X-Integration-Id: required header"
    assert sandboxes.kombo.state()["orders"] == {}


async def test_unknown_and_inactive_integrations(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    sandboxes.kombo.set_integration(INTEGRATION, state="unknown")
    unknown = await kombo.put(RESULT.format("o-1"), json=OPEN)
    sandboxes.kombo.set_integration(INTEGRATION, state="inactive")
    inactive = await kombo.put("/assessment/packages", json=KOMBO_PACKAGES_EXAMPLE)
    sandboxes.kombo.set_integration(INTEGRATION, state="active")
    active = await kombo.put(RESULT.format("o-1"), json=OPEN)

    assert INTEGRATION in kombo_error(unknown, 404, "PLATFORM.INTEGRATION_NOT_FOUND")
    assert INTEGRATION in kombo_error(inactive, 403, "INTEGRATION.INACTIVE")
    assert active.status_code == 200
    assert [e["status_code"] for e in sandboxes.kombo.recorded()] == [404, 403, 200]


async def test_other_integrations_stay_known(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    sandboxes.kombo.set_integration(INTEGRATION, state="unknown")

    response = await kombo.put(
        RESULT.format("o-1"), json=OPEN, headers={"X-Integration-Id": "greenhouse:other"}
    )

    assert response.status_code == 200
    assert sandboxes.kombo.order("greenhouse:other", "o-1") is not None


async def test_configured_warnings_are_returned_on_success(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    sandboxes.kombo.set_integration(
        INTEGRATION, warnings=["Attachment was converted", {"message": "Score was rounded"}]
    )

    result = await kombo.put(RESULT.format("o-1"), json=OPEN)
    packages = await kombo.put("/assessment/packages", json=KOMBO_PACKAGES_EXAMPLE)

    expected = [{"message": "Attachment was converted"}, {"message": "Score was rounded"}]
    assert result.json() == {"status": "success", "data": {}, "warnings": expected}
    assert packages.json()["warnings"] == expected


async def test_error_log_url_shows_the_recorded_request(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    response = await kombo.put(RESULT.format("o-1"), json={"status": "OPEN"})
    log_url = response.json()["error"]["log_url"]

    async with client() as http:
        logged = (await http.get(log_url)).json()

    assert logged["key"] == f"{INTEGRATION}/o-1"
    assert logged["body"] == {"status": "OPEN"}
    assert logged["status_code"] == 400


async def test_wrong_method_and_unknown_path_use_the_error_shape(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    wrong_method = await kombo.post(RESULT.format("o-1"), json=OPEN)
    unknown_path = await kombo.put("/assessment/orders/o-1", json=OPEN)

    kombo_error(wrong_method, 405, None)
    kombo_error(unknown_path, 404, None)
    assert [e["status_code"] for e in sandboxes.kombo.recorded()] == [405, 404]


# -- order state --------------------------------------------------------------------------------


async def test_final_status_cannot_change(kombo: httpx.AsyncClient, sandboxes: Sandboxes) -> None:
    completed = await kombo.put(RESULT.format("o-1"), json=KOMBO_RESULT_EXAMPLE)
    cancelled = await kombo.put(
        RESULT.format("o-1"), json=fresh(KOMBO_RESULT_EXAMPLE, status="CANCELLED")
    )
    reopened = await kombo.put(RESULT.format("o-1"), json=OPEN)

    assert completed.status_code == 200
    expected = "Order o-1 is COMPLETED; its status can only change while OPEN"
    assert kombo_error(cancelled, 400, INPUT_INVALID) == expected
    assert kombo_error(reopened, 400, INPUT_INVALID) == expected
    order = sandboxes.kombo.order(INTEGRATION, "o-1")
    assert order is not None
    assert (order.status, order.body, order.updates) == ("COMPLETED", KOMBO_RESULT_EXAMPLE, 1)


async def test_same_final_status_again_is_a_content_update(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    first = await kombo.put(RESULT.format("o-1"), json=KOMBO_RESULT_EXAMPLE)
    update = fresh(KOMBO_RESULT_EXAMPLE, score=95, result_url="https://example.com/v2")
    second = await kombo.put(RESULT.format("o-1"), json=update)

    assert (first.status_code, second.status_code) == (200, 200)
    order = sandboxes.kombo.order(INTEGRATION, "o-1")
    assert order is not None
    assert (order.status, order.body, order.updates) == ("COMPLETED", update, 2)
    assert order.statuses == ["COMPLETED"]


async def test_open_order_moves_to_any_status(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    statuses = []
    for body in (OPEN, OPEN, fresh(KOMBO_RESULT_EXAMPLE, status="CANCELLED")):
        statuses.append((await kombo.put(RESULT.format("o-1"), json=body)).status_code)

    assert statuses == [200, 200, 200]
    order = sandboxes.kombo.order(INTEGRATION, "o-1")
    assert order is not None
    assert order.statuses == ["OPEN", "CANCELLED"]
    assert order.updates == 3


async def test_orders_are_per_integration(kombo: httpx.AsyncClient, sandboxes: Sandboxes) -> None:
    await kombo.put(RESULT.format("o-1"), json=KOMBO_RESULT_EXAMPLE)
    other = await kombo.put(
        RESULT.format("o-1"),
        json=fresh(KOMBO_RESULT_EXAMPLE, status="CANCELLED"),
        headers={"X-Integration-Id": "lever:other"},
    )

    assert other.status_code == 200
    assert set(sandboxes.kombo.state()["orders"]) == {f"{INTEGRATION}/o-1", "lever:other/o-1"}


# -- packages -----------------------------------------------------------------------------------


def _package(package_id: str) -> dict[str, str]:
    return {"id": package_id, "type": "BEHAVIORAL", "name": f"P{package_id}", "description": "d"}


async def test_packages_replace_the_list_and_record_deleted_ids(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    async def put(*ids: str) -> None:
        response = await kombo.put(
            "/assessment/packages", json={"packages": [_package(i) for i in ids]}
        )
        assert response.status_code == 200

    await put("1", "2", "3")
    await put("2", "4")
    state = sandboxes.kombo.packages[INTEGRATION]
    assert [p["id"] for p in state.active] == ["2", "4"]
    assert state.deleted_ids == ["1", "3"]

    await put("1")
    state = sandboxes.kombo.packages[INTEGRATION]
    assert [p["id"] for p in state.active] == ["1"]
    assert state.deleted_ids == ["3", "2", "4"]

    await put()
    assert sandboxes.kombo.state()["packages"][INTEGRATION] == {
        "active": [],
        "deleted_ids": ["3", "2", "4", "1"],
    }


async def test_packages_are_per_integration(kombo: httpx.AsyncClient, sandboxes: Sandboxes) -> None:
    await kombo.put("/assessment/packages", json={"packages": [_package("1")]})
    await kombo.put(
        "/assessment/packages",
        json={"packages": [_package("2")]},
        headers={"X-Integration-Id": "ashby:other"},
    )

    assert sandboxes.kombo.packages[INTEGRATION].deleted_ids == []
    assert [p["id"] for p in sandboxes.kombo.packages[INTEGRATION].active] == ["1"]
    assert [p["id"] for p in sandboxes.kombo.packages["ashby:other"].active] == ["2"]


# -- recording ----------------------------------------------------------------------------------


async def test_recorded_requests_never_hold_the_key(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    await kombo.put(RESULT.format("o-1"), json=KOMBO_RESULT_EXAMPLE)
    await kombo.put(RESULT.format("o-1"), json={"status": "nope"})
    await kombo.put(
        RESULT.format("o-1"), json=OPEN, headers={"Authorization": "Bearer wrong-secret-123"}
    )
    await kombo.put("/assessment/packages", json=KOMBO_PACKAGES_EXAMPLE)

    entries = sandboxes.kombo.recorded()
    assert [e["status_code"] for e in entries] == [200, 400, 401, 200]
    for entry in entries:
        assert entry["headers"]["Authorization"] == REDACTED
        assert entry["headers"]["X-Integration-Id"] == INTEGRATION
        assert entry["vendor"] == "kombo"
        assert entry["method"] == "PUT"
    dumped = json.dumps(entries)
    assert KOMBO_KEY not in dumped
    assert "wrong-secret-123" not in dumped
    async with client(sandboxes.kombo.root_url) as http:
        over_http = (await http.get("/_sandbox/requests")).text
    assert KOMBO_KEY not in over_http
    assert '"REDACTED"' in over_http


async def test_recorded_entry_fields(kombo: httpx.AsyncClient, sandboxes: Sandboxes) -> None:
    await kombo.put(RESULT.format("o 1"), json=OPEN, params={"trace": "x"})
    await kombo.put("/assessment/packages", json=KOMBO_PACKAGES_EXAMPLE)

    result, packages = sandboxes.kombo.recorded()
    assert result["path"] == "/v1/assessment/orders/o 1/result"
    assert result["raw_path"] == "/v1/assessment/orders/o%201/result"
    assert result["query"] == {"trace": "x"}
    assert result["key"] == f"{INTEGRATION}/o 1"
    assert result["body"] == OPEN
    assert isinstance(result["received_at"], float)
    assert packages["key"] == INTEGRATION
    assert (result["index"], packages["index"]) == (0, 1)
    assert set(result) == {
        "index",
        "vendor",
        "method",
        "path",
        "raw_path",
        "query",
        "headers",
        "body",
        "status_code",
        "received_at",
        "key",
    }
    assert KOMBO_HEADERS["X-Integration-Id"] == result["headers"]["X-Integration-Id"]


@pytest.mark.parametrize(
    ("segment", "order_id"),
    [
        ("a%2Fb%3Fc%23d%252F..", "a/b?c#d%2F.."),
        ("%2E", "."),
        ("%2E%2E", ".."),
        ("%2e%2E%2F%2E%2E", "../.."),
        ("%252E%252E", "%2E%2E"),
        ("%C3%BC-%C3%B1%20%E6%97%A5%E6%9C%AC", "ü-ñ 日本"),
        ("a%7Cb", "a|b"),
        ("%25", "%"),
    ],
)
async def test_percent_encoded_order_ids_are_decoded_once(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes, segment: str, order_id: str
) -> None:
    response = await kombo.put(RESULT.format(segment), json=OPEN)
    assert response.status_code == 200, response.text
    assert list(sandboxes.kombo.orders) == [f"{INTEGRATION}/{order_id}"]
    order = sandboxes.kombo.order(INTEGRATION, order_id)
    assert order is not None and order.order_id == order_id
    [entry] = sandboxes.kombo.recorded()
    assert entry["raw_path"] == f"/v1/assessment/orders/{segment}/result"
    assert entry["key"] == f"{INTEGRATION}/{order_id}"


async def test_orders_differing_only_in_encoding_stay_apart(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    for segment in ("a%2Fb", "a%252Fb", "a", "%2E%2E"):
        assert (await kombo.put(RESULT.format(segment), json=OPEN)).status_code == 200
    assert sorted(sandboxes.kombo.orders) == sorted(
        f"{INTEGRATION}/{o}" for o in ("a/b", "a%2Fb", "a", "..")
    )


async def test_an_unencoded_slash_is_another_path(
    kombo: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    response = await kombo.put(RESULT.format("a/b"), json=OPEN)
    kombo_error(response, 404, None)
    assert sandboxes.kombo.orders == {}


async def test_control_api_takes_integration_ids_with_reserved_characters(
    sandboxes: Sandboxes,
) -> None:
    async with AsyncSandboxControl(sandboxes.kombo_url) as control:
        for integration_id in ("a/b", "..", "%2F", "x?y#z"):
            answer = await control.set_integration(integration_id, state="inactive")
            assert answer["integration_id"] == integration_id
            assert sandboxes.kombo.integration(integration_id).state == "inactive"
