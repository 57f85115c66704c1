"""Comeet sandbox: contract validation, auth, evaluation marks and the completed rule."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from connector.sandbox import REDACTED, AsyncSandboxControl, Sandboxes
from tests.sandbox.conftest import COMEET_TOKEN, client, comeet_error
from tests.sandbox.seed_examples import COMEET_EDGE_CASE_EXAMPLE, COMEET_EXAMPLE, fresh

STATUS = "/evaluation/status"
STARTED = {"status": "Test started"}


async def post(
    comeet: httpx.AsyncClient, evaluation_id: str | None, body: Any, **kwargs: Any
) -> httpx.Response:
    params = {} if evaluation_id is None else {"evaluation_id": evaluation_id}
    return await comeet.post(STATUS, params=params, json=body, **kwargs)


# -- the seed's examples and other valid bodies ---------------------------------------------------


@pytest.mark.parametrize("body", [COMEET_EXAMPLE, COMEET_EDGE_CASE_EXAMPLE])
async def test_seed_examples_are_accepted_and_stored(
    comeet: httpx.AsyncClient, sandboxes: Sandboxes, body: dict[str, Any]
) -> None:
    response = await post(comeet, "000", body)

    assert response.status_code == 204
    assert response.content == b""
    evaluation = sandboxes.comeet.evaluation("000")
    assert evaluation is not None
    assert (evaluation.status, evaluation.body, evaluation.updates) == ("completed", body, 1)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(STARTED, id="interim"),
        pytest.param({"status": "x" * 40}, id="status-40-chars"),
        pytest.param({"status": "Réussi 🎉"}, id="unicode-status"),
        pytest.param(fresh(COMEET_EXAMPLE, score=1), id="score-1"),
        pytest.param(fresh(COMEET_EXAMPLE, score=5.0), id="score-5"),
        pytest.param(fresh(COMEET_EXAMPLE, summary="s" * 2000), id="summary-2000"),
        pytest.param(
            fresh(
                COMEET_EXAMPLE, criteria=[{"title": "t", "notes": "n" * 500, "group": "g" * 200}]
            ),
            id="criterion-limits",
        ),
        pytest.param(fresh(COMEET_EXAMPLE, criteria=[]), id="no-criteria"),
        pytest.param({"status": "completed", "outcome": "failed"}, id="completed-minimal"),
    ],
)
async def test_valid_bodies_are_accepted(comeet: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await post(comeet, "e-valid", body)

    assert response.status_code == 204, response.text


# -- validation -----------------------------------------------------------------------------------

BAD_BODIES = [
    ([], "body: must be a JSON object"),
    ("completed", "body: must be a JSON object"),
    (fresh(COMEET_EXAMPLE, foo=1), "foo: unknown field"),
    (fresh(COMEET_EXAMPLE, status=...), "status: required"),
    ({"status": ""}, "status: must be a non-empty string"),
    ({"status": 5}, "status: must be a non-empty string"),
    ({"status": None}, "status: must be a non-empty string"),
    ({"status": "x" * 41}, "status: must be at most 40 characters"),
    (fresh(COMEET_EXAMPLE, outcome=...), "outcome: required when status is completed"),
    (fresh(COMEET_EXAMPLE, outcome="PASSED"), "outcome: must be one of passed, review, failed"),
    (fresh(COMEET_EXAMPLE, outcome=None), "outcome: must be one of passed, review, failed"),
    (
        {"status": "Test started", "outcome": "passed"},
        "outcome: only allowed when status is completed",
    ),
    (
        {"status": "Completed", "outcome": "passed"},
        "outcome: only allowed when status is completed",
    ),
    (fresh(COMEET_EXAMPLE, score=0.5), "score: must be a number between 1 and 5"),
    (fresh(COMEET_EXAMPLE, score=5.01), "score: must be a number between 1 and 5"),
    (fresh(COMEET_EXAMPLE, score=True), "score: must be a number between 1 and 5"),
    (fresh(COMEET_EXAMPLE, score="4"), "score: must be a number between 1 and 5"),
    (fresh(COMEET_EXAMPLE, score=None), "score: must be a number between 1 and 5"),
    (fresh(COMEET_EXAMPLE, summary="s" * 2001), "summary: must be at most 2000 characters"),
    (fresh(COMEET_EXAMPLE, summary=5), "summary: must be a string"),
    (fresh(COMEET_EXAMPLE, criteria={}), "criteria: must be an array"),
    (fresh(COMEET_EXAMPLE, criteria=["x"]), "criteria[0]: must be an object"),
    (fresh(COMEET_EXAMPLE, criteria=[{"notes": "n"}]), "criteria[0].title: required"),
    (
        fresh(COMEET_EXAMPLE, criteria=[{"title": ""}]),
        "criteria[0].title: must be a non-empty string",
    ),
    (
        fresh(COMEET_EXAMPLE, criteria=[{"title": 3}]),
        "criteria[0].title: must be a non-empty string",
    ),
    (
        fresh(COMEET_EXAMPLE, criteria=[{"title": "t", "notes": "n" * 501}]),
        "criteria[0].notes: must be at most 500 characters",
    ),
    (
        fresh(COMEET_EXAMPLE, criteria=[{"title": "t"}, {"title": "t", "score": 6}]),
        "criteria[1].score: must be a number between 1 and 5",
    ),
    (
        fresh(COMEET_EXAMPLE, criteria=[{"title": "t", "score": 0}]),
        "criteria[0].score: must be a number between 1 and 5",
    ),
    (
        fresh(COMEET_EXAMPLE, criteria=[{"title": "t", "group": "g" * 201}]),
        "criteria[0].group: must be at most 200 characters",
    ),
    (
        fresh(COMEET_EXAMPLE, criteria=[{"title": "t", "group": None}]),
        "criteria[0].group: must be a string",
    ),
    (
        fresh(COMEET_EXAMPLE, criteria=[{"title": "t", "weight": 2}]),
        "criteria[0].weight: unknown field",
    ),
    (
        fresh(COMEET_EXAMPLE, url_for_users="www.evaluation-partner.com/e/1"),
        "url_for_users: must be an absolute http(s) URL",
    ),
    (
        fresh(COMEET_EXAMPLE, url_for_non_users="javascript:alert(1)"),
        "url_for_non_users: must be an absolute http(s) URL",
    ),
    (
        fresh(COMEET_EXAMPLE, url_for_non_users=None),
        "url_for_non_users: must be an absolute http(s) URL",
    ),
]


@pytest.mark.parametrize(
    ("body", "message"),
    BAD_BODIES,
    ids=[message.split(":")[0] + f"-{i}" for i, (_, message) in enumerate(BAD_BODIES)],
)
async def test_invalid_body_is_rejected_with_field_message(
    comeet: httpx.AsyncClient, sandboxes: Sandboxes, body: Any, message: str
) -> None:
    response = await post(comeet, "e-bad", body)

    assert comeet_error(response, 400) == message
    assert sandboxes.comeet.evaluation("e-bad") is None
    [entry] = sandboxes.comeet.recorded(key="e-bad")
    assert (entry["status_code"], entry["body"]) == (400, body)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"status": "completed", "outcome": "passed", "score": NaN}', "body: must be valid JSON"),
        (b'{"status": ', "body: must be valid JSON"),
        (b"", "body: required"),
    ],
)
async def test_unparsable_json_is_rejected(
    comeet: httpx.AsyncClient, content: bytes, message: str
) -> None:
    response = await comeet.post(
        STATUS,
        params={"evaluation_id": "e-raw"},
        content=content,
        headers={"Content-Type": "application/json"},
    )

    assert comeet_error(response, 400) == message


async def test_missing_evaluation_id_is_rejected(
    comeet: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    response = await post(comeet, None, STARTED)
    empty = await post(comeet, "", STARTED)

    assert comeet_error(response, 400) == "evaluation_id: required query parameter"
    assert comeet_error(empty, 400) == "evaluation_id: required query parameter"
    assert sandboxes.comeet.state() == {"evaluations": {}}


# -- auth and content type ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer nope", f"Token {COMEET_TOKEN}", COMEET_TOKEN, f"bearer{COMEET_TOKEN}"],
)
async def test_bad_credentials_answer_401(sandboxes: Sandboxes, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with client(sandboxes.comeet_url, headers=headers) as http:
        response = await post(http, "e-1", STARTED)

    assert response.json() == {"status": 401, "message": "Unauthorized"}
    assert response.status_code == 401
    assert sandboxes.comeet.evaluation("e-1") is None


async def test_wrong_content_type_answers_415(
    comeet: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    response = await comeet.post(
        STATUS,
        params={"evaluation_id": "e-1"},
        content=json.dumps(STARTED),
        headers={"Content-Type": "text/plain"},
    )
    with_charset = await comeet.post(
        STATUS,
        params={"evaluation_id": "e-1"},
        content=json.dumps(STARTED),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )

    assert comeet_error(response, 415) == "Content-Type must be application/json"
    assert with_charset.status_code == 204


# -- evaluation marks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mark", "message"),
    [
        ("not_found", "Candidate was not found"),
        ("deleted", "Candidate was deleted"),
        ("unknown", "Candidate evaluation ID does not exist"),
    ],
)
async def test_marked_evaluations_answer_404(
    comeet: httpx.AsyncClient, sandboxes: Sandboxes, mark: str, message: str
) -> None:
    sandboxes.comeet.set_evaluation("e-404", mark)  # type: ignore[arg-type]

    response = await post(comeet, "e-404", COMEET_EXAMPLE)
    other = await post(comeet, "e-ok", COMEET_EXAMPLE)

    assert response.json() == {"status": 404, "message": message}
    assert response.status_code == 404
    assert other.status_code == 204
    evaluation = sandboxes.comeet.evaluation("e-404")
    assert evaluation is not None and evaluation.status is None


async def test_marked_evaluation_can_become_active_again(
    comeet: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    sandboxes.comeet.set_evaluation("e-1", "deleted")
    assert (await post(comeet, "e-1", STARTED)).status_code == 404
    sandboxes.comeet.set_evaluation("e-1", "active")

    assert (await post(comeet, "e-1", STARTED)).status_code == 204


async def test_wrong_method_and_unknown_path_use_the_error_shape(
    comeet: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    wrong_method = await comeet.put(STATUS, params={"evaluation_id": "e-1"}, json=STARTED)
    unknown_path = await comeet.post("/evaluations/status", json=STARTED)

    comeet_error(wrong_method, 405)
    comeet_error(unknown_path, 404)
    assert [e["status_code"] for e in sandboxes.comeet.recorded()] == [405, 404]


# -- the completed rule ---------------------------------------------------------------------------


async def test_completed_status_cannot_change(
    comeet: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    started = await post(comeet, "e-1", STARTED)
    completed = await post(comeet, "e-1", COMEET_EXAMPLE)
    restarted = await post(comeet, "e-1", STARTED)

    assert (started.status_code, completed.status_code) == (204, 204)
    assert comeet_error(restarted, 400) == (
        "status: evaluation is completed and its status cannot change"
    )
    evaluation = sandboxes.comeet.evaluation("e-1")
    assert evaluation is not None
    assert (evaluation.status, evaluation.body) == ("completed", COMEET_EXAMPLE)
    assert evaluation.statuses == ["Test started", "completed"]


async def test_completed_again_is_a_content_update(
    comeet: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    first = await post(comeet, "e-1", COMEET_EXAMPLE)
    update = fresh(COMEET_EXAMPLE, outcome="review", summary="Re-scored.")
    second = await post(comeet, "e-1", update)

    assert (first.status_code, second.status_code) == (204, 204)
    evaluation = sandboxes.comeet.evaluation("e-1")
    assert evaluation is not None
    assert (evaluation.status, evaluation.body, evaluation.updates) == ("completed", update, 2)


async def test_interim_statuses_may_change_freely(
    comeet: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    codes = [
        (await post(comeet, "e-1", {"status": status})).status_code
        for status in ("Assessment sent", "Test started", "Assessment sent")
    ]

    assert codes == [204, 204, 204]
    evaluation = sandboxes.comeet.evaluation("e-1")
    assert evaluation is not None
    assert evaluation.statuses == ["Assessment sent", "Test started", "Assessment sent"]
    assert sandboxes.comeet.state()["evaluations"]["e-1"]["status"] == "Assessment sent"


# -- recording ------------------------------------------------------------------------------------


async def test_recorded_requests_never_hold_the_token(
    comeet: httpx.AsyncClient, sandboxes: Sandboxes
) -> None:
    await post(comeet, "e-1", COMEET_EXAMPLE)
    await post(comeet, "e-1", {"status": ""})
    await post(comeet, "e-1", STARTED, headers={"Authorization": "Bearer other-secret-456"})

    entries = sandboxes.comeet.recorded()
    assert [e["status_code"] for e in entries] == [204, 400, 401]
    assert all(e["headers"]["Authorization"] == REDACTED for e in entries)
    assert all(e["key"] == "e-1" and e["query"] == {"evaluation_id": "e-1"} for e in entries)
    dumped = json.dumps(entries)
    assert COMEET_TOKEN not in dumped
    assert "other-secret-456" not in dumped


@pytest.mark.parametrize(
    ("query", "evaluation_id"),
    [
        ("a%26b%3Dc%23d%2Be%2520f", "a&b=c#d+e%20f"),
        ("a%2Fb%3F", "a/b?"),
        ("%C3%BC+%E6%97%A5", "ü 日"),  # "+" is a space in a query string
        ("..", ".."),
        ("%7C", "|"),
    ],
)
async def test_percent_encoded_evaluation_ids_are_decoded_once(
    comeet: httpx.AsyncClient, sandboxes: Sandboxes, query: str, evaluation_id: str
) -> None:
    response = await comeet.post(f"{STATUS}?evaluation_id={query}", json=STARTED)
    assert response.status_code == 204, response.text
    assert list(sandboxes.comeet.evaluations) == [evaluation_id]
    [entry] = sandboxes.comeet.recorded()
    assert entry["key"] == evaluation_id
    assert entry["query"] == {"evaluation_id": evaluation_id}


@pytest.mark.parametrize("evaluation_id", ["a/b", ".", "..", "%2F", "x?y#z", "ü 日本"])
async def test_control_api_marks_evaluation_ids_with_reserved_characters(
    comeet: httpx.AsyncClient, sandboxes: Sandboxes, evaluation_id: str
) -> None:
    async with AsyncSandboxControl(sandboxes.comeet_url) as control:
        answer = await control.set_evaluation(evaluation_id, "deleted")
    assert answer["evaluation_id"] == evaluation_id
    assert comeet_error(await post(comeet, evaluation_id, STARTED), 404) == "Candidate was deleted"
