"""Several Kombo accounts and per-customer Comeet tokens (issue 14, item 6).

Configured from the environment and secret files, chosen per target, sent only in the
Authorization header, and masked in logs. The single-key settings keep working.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from connector.cli import _secrets
from connector.domain.events import event_adapter
from connector.errors import PermanentDeliveryError
from connector.infra.logs import RedactingFilter
from connector.kafka.http import build_http_client
from connector.sandbox import Sandboxes
from connector.settings import (
    KOMBO_REGIONS,
    ComeetSettings,
    DeliverySettings,
    KomboSettings,
    Settings,
)
from connector.vendors import comeet, kombo
from connector.vendors.accounts import comeet_router, kombo_router, secret_values
from connector.vendors.base import VendorRequest
from connector.vendors.comeet import ComeetClient
from connector.vendors.kombo import KomboClient
from tests.factories import make_event, target

DEFAULT_KEY = "default-kombo-key-0001"
US_KEY = "us-kombo-key-from-file"
STAGING_KEY = "staging-kombo-key-0003"
DEFAULT_TOKEN = "default-comeet-token-01"
ACME_TOKEN = "acme-comeet-token-from-file"


@pytest.fixture
def multi_account_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    us_key = tmp_path / "kombo_us"
    us_key.write_text(US_KEY + "\n")
    acme = tmp_path / "comeet_acme"
    acme.write_text(ACME_TOKEN)
    for name, value in {
        "CONNECTOR_KOMBO__API_KEY": DEFAULT_KEY,
        "CONNECTOR_KOMBO__ACCOUNTS__US__REGION": "us",
        "CONNECTOR_KOMBO__ACCOUNTS__US__API_KEY_FILE": str(us_key),
        "CONNECTOR_KOMBO__ACCOUNTS__US__INTEGRATIONS": '["us-*", "workday:ACME1"]',
        "CONNECTOR_KOMBO__ACCOUNTS__STAGING__BASE_URL": "http://staging.test/v1",
        "CONNECTOR_KOMBO__ACCOUNTS__STAGING__API_KEY": STAGING_KEY,
        "CONNECTOR_KOMBO__ACCOUNTS__STAGING__INTEGRATIONS": '["us-test-*"]',
        "CONNECTOR_COMEET__TOKEN": DEFAULT_TOKEN,
        "CONNECTOR_COMEET__CUSTOMERS__ACME__TOKEN_FILE": str(acme),
        "CONNECTOR_COMEET__CUSTOMERS__ACME__EVALUATIONS": '["acme-*"]',
    }.items():
        monkeypatch.setenv(name, value)


def kombo_request(integration: str) -> VendorRequest:
    return VendorRequest(
        vendor="kombo",
        action="kombo.order_result",
        method="PUT",
        path="/assessment/orders/o-1/result",
        body={"status": "OPEN"},
        headers={"X-Integration-Id": integration},
    )


def comeet_request(evaluation: str) -> VendorRequest:
    return VendorRequest(
        vendor="comeet",
        action="comeet.status",
        method="POST",
        path="/evaluation/status",
        body={"status": "Assessment sent"},
        params={"evaluation_id": evaluation},
    )


@pytest.fixture
async def wire() -> AsyncIterator[tuple[httpx.AsyncClient, list[httpx.Request]]]:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "success", "data": {}, "warnings": []})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        yield client, seen


def test_accounts_come_from_environment_and_files(multi_account_env: None) -> None:
    settings = Settings()
    us = settings.kombo.accounts["us"]
    assert us.api_key.get_secret_value() == US_KEY
    assert us.url == KOMBO_REGIONS["us"]
    assert settings.comeet.customers["acme"].token.get_secret_value() == ACME_TOKEN
    kombo = kombo_router(settings.kombo)
    assert kombo.names == ["default", "staging", "us"]
    assert kombo.select("workday:ACME1").name == "us"  # an exact id
    assert kombo.select("us-7").name == "us"
    assert kombo.select("us-test-7").name == "staging"  # the longer pattern wins
    assert kombo.select("workday:OTHER").name == "default"
    assert kombo.select("workday:OTHER").base_url == KOMBO_REGIONS["eu"]
    comeet = comeet_router(settings.comeet)
    assert comeet.select("acme-123").name == "acme"
    assert comeet.select("acme-123").base_url == "https://api.comeet.co"
    assert comeet.select("globex-1").name == "default"


async def test_each_target_is_sent_with_its_account(
    multi_account_env: None, wire: tuple[httpx.AsyncClient, list[httpx.Request]]
) -> None:
    http, seen = wire
    settings = Settings()
    kombo = KomboClient(http, settings.kombo)
    for integration in ("us-9", "us-test-9", "workday:OTHER"):
        await kombo.send(kombo_request(integration))
    comeet = ComeetClient(http, settings.comeet)
    for evaluation in ("acme-1", "globex-1"):
        await comeet.send(comeet_request(evaluation))
    sent = [(str(r.url), r.headers["authorization"]) for r in seen]
    assert sent == [
        ("https://api.us.kombo.dev/v1/assessment/orders/o-1/result", f"Bearer {US_KEY}"),
        ("http://staging.test/v1/assessment/orders/o-1/result", f"Bearer {STAGING_KEY}"),
        ("https://api.kombo.dev/v1/assessment/orders/o-1/result", f"Bearer {DEFAULT_KEY}"),
        ("https://api.comeet.co/evaluation/status?evaluation_id=acme-1", f"Bearer {ACME_TOKEN}"),
        (
            "https://api.comeet.co/evaluation/status?evaluation_id=globex-1",
            f"Bearer {DEFAULT_TOKEN}",
        ),
    ]


async def test_single_key_settings_work_as_before(
    wire: tuple[httpx.AsyncClient, list[httpx.Request]],
) -> None:
    http, seen = wire
    kombo = KomboClient(http, KomboSettings(api_key=SecretStr("k-1234"), region="us"))
    await kombo.send(kombo_request("anything"))
    comeet = ComeetClient(http, ComeetSettings(token=SecretStr("t-1234"), base_url="http://c.test"))
    await comeet.send(comeet_request("e-1"))
    assert [(str(r.url), r.headers["authorization"]) for r in seen] == [
        ("https://api.us.kombo.dev/v1/assessment/orders/o-1/result", "Bearer k-1234"),
        ("http://c.test/evaluation/status?evaluation_id=e-1", "Bearer t-1234"),
    ]


async def test_unserved_target_without_default_is_a_clear_permanent_error(
    wire: tuple[httpx.AsyncClient, list[httpx.Request]],
) -> None:
    http, seen = wire
    settings = KomboSettings.model_validate(
        {"accounts": {"us": {"region": "us", "api_key": "k-us-1", "integrations": ["us-*"]}}}
    )
    with pytest.raises(PermanentDeliveryError, match="no kombo account serves integration 'eu-1'"):
        await KomboClient(http, settings).send(kombo_request("eu-1"))
    assert seen == []


def test_misconfigured_accounts_are_refused() -> None:
    with pytest.raises(ValidationError, match="needs api_key or api_key_file"):
        KomboSettings.model_validate({"accounts": {"us": {"integrations": ["us-*"]}}})
    with pytest.raises(ValidationError, match="needs token or token_file"):
        ComeetSettings.model_validate({"customers": {"acme": {"evaluations": ["acme-*"]}}})
    with pytest.raises(ValidationError, match="integrations"):
        KomboSettings.model_validate({"accounts": {"us": {"api_key": "k", "integrations": []}}})
    with pytest.raises(ValidationError, match="'x-\\*' is listed by 'a' and 'b'"):
        KomboSettings.model_validate(
            {
                "accounts": {
                    "a": {"api_key": "k1", "integrations": ["x-*"]},
                    "b": {"api_key": "k2", "integrations": ["x-*"]},
                }
            }
        )


def test_every_credential_is_redacted_from_logs(multi_account_env: None) -> None:
    settings = Settings()
    secrets = _secrets(settings)
    assert set(secrets) == set(secret_values(settings))
    assert {US_KEY, STAGING_KEY, ACME_TOKEN, DEFAULT_KEY, DEFAULT_TOKEN} <= set(secrets)
    assert not any(s in repr(settings) for s in (US_KEY, STAGING_KEY, ACME_TOKEN))
    assert not any(s in repr(kombo_router(settings.kombo).select("us-1")) for s in secrets)

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(secrets))
    log = logging.getLogger("test.accounts.redaction")
    log.addHandler(handler)
    try:
        log.warning("headers %s", json.dumps({"Authorization": f"Bearer {ACME_TOKEN}"}))
        log.warning("key %s and %s", US_KEY, STAGING_KEY)
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert ACME_TOKEN not in text and US_KEY not in text and STAGING_KEY not in text
    assert text.count("**********") == 3


async def test_two_regions_and_a_customer_token_over_real_sockets() -> None:
    """EU and US Kombo accounts and a customer's Comeet token: each sandbox accepts only
    its own key, so a request sent with the wrong account would be refused (401)."""
    async with (
        Sandboxes(kombo_key="eu-key-0001", comeet_token="default-token-1", seed=1) as eu,
        Sandboxes(kombo_key="us-key-0002", comeet_token="acme-token-0002", seed=2) as us,
        build_http_client(DeliverySettings(connect_timeout_s=2, read_timeout_s=5)) as http,
    ):
        kombo_settings = KomboSettings.model_validate(
            {
                "api_key": "eu-key-0001",
                "base_url": eu.kombo_url,
                "accounts": {
                    "us": {
                        "api_key": "us-key-0002",
                        "base_url": us.kombo_url,
                        "integrations": ["us-*"],
                    }
                },
            }
        )
        comeet_settings = ComeetSettings.model_validate(
            {
                "token": "default-token-1",
                "base_url": eu.comeet_url,
                "customers": {
                    "acme": {
                        "token": "acme-token-0002",
                        "base_url": us.comeet_url,
                        "evaluations": ["acme-*"],
                    }
                },
            }
        )
        kombo_client = KomboClient(http, kombo_settings)
        comeet_client = ComeetClient(http, comeet_settings)
        for integration in ("eu:ONE", "us-TWO"):
            event = event_adapter.validate_python(
                make_event("opened", target("kombo", "o-1", integration))
            )
            assert (await kombo_client.send(kombo.map_event(event))).http_status == 200
        for evaluation in ("globex-1", "acme-1"):
            event = event_adapter.validate_python(
                make_event("opened", target("comeet", evaluation))
            )
            assert (await comeet_client.send(comeet.map_event(event))).http_status in (200, 204)
        assert list(eu.kombo.orders) == ["eu:ONE/o-1"]
        assert list(us.kombo.orders) == ["us-TWO/o-1"]
        assert list(eu.comeet.evaluations) == ["globex-1"]
        assert list(us.comeet.evaluations) == ["acme-1"]


def test_the_readme_example_configures_what_it_says(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Several Kombo accounts", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    for name in list(os.environ):
        if name.startswith("CONNECTOR_"):
            monkeypatch.delenv(name)
    for line in block.splitlines():
        if not line or line.startswith("#"):
            continue
        name, value = line.split("=", 1)
        value = value.strip("'")
        if value.startswith("/run/secrets/"):  # the mounted files, made here
            file = tmp_path / value.removeprefix("/run/secrets/")
            file.write_text(f"secret-of-{file.name}")
            value = str(file)
        monkeypatch.setenv(name, value)
    settings = Settings()
    kombo = kombo_router(settings.kombo)
    assert (kombo.select("eu:ACME").name, kombo.select("eu:ACME").base_url) == (
        "default",
        KOMBO_REGIONS["eu"],
    )
    assert (kombo.select("us-42").name, kombo.select("us-42").base_url) == (
        "us",
        KOMBO_REGIONS["us"],
    )
    assert kombo.select("workday:ACME1").name == "us"
    assert kombo.select("staging-1").base_url == "https://kombo-staging.example/v1"
    assert kombo.select("staging-1").headers == {"Authorization": "Bearer secret-of-kombo_staging"}
    comeet = comeet_router(settings.comeet)
    assert comeet.select("acme-7").headers == {"Authorization": "Bearer secret-of-comeet_acme"}
    # No default Comeet token in the example: another customer's evaluation is refused.
    with pytest.raises(PermanentDeliveryError, match="no comeet account serves evaluation"):
        comeet.select("globex-7")
