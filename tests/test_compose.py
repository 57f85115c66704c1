"""docker-compose.yml cannot run here (no Docker engine), so check that it agrees with the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from connector.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]


def setting_exists(variable: str) -> bool:
    """Does ``CONNECTOR_A__B`` name a field of the settings module?"""
    if variable == "KAFKA_BOOTSTRAP_SERVERS":
        return True
    path = variable.removeprefix("CONNECTOR_").lower().split("__")
    model: type[BaseModel] = Settings
    for i, part in enumerate(path):
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        if i < len(path) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True


def test_services() -> None:
    assert {"kafka", "sandbox", "worker"} <= set(SERVICES)


@pytest.mark.parametrize("variable", sorted(SERVICES["worker"]["environment"]))
def test_worker_environment_names_real_settings(variable: str) -> None:
    assert variable.startswith(("CONNECTOR_", "KAFKA_"))
    assert setting_exists(variable), f"{variable} is not a setting in connector/settings.py"


def test_setting_check_can_fail() -> None:
    assert not setting_exists("CONNECTOR_KOMBO__API_KEYS")
    assert not setting_exists("CONNECTOR_NOPE")


def test_worker_reaches_kafka_and_sandboxes_on_their_ports() -> None:
    env = SERVICES["worker"]["environment"]
    kafka_env = SERVICES["kafka"]["environment"]
    assert (
        f"PLAINTEXT://{env['KAFKA_BOOTSTRAP_SERVERS']}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    )
    sandbox_args = " ".join(SERVICES["sandbox"]["command"])
    kombo_port = re.search(r"--kombo-port=(\d+)", sandbox_args)
    comeet_port = re.search(r"--comeet-port=(\d+)", sandbox_args)
    assert kombo_port and comeet_port
    assert env["CONNECTOR_KOMBO__BASE_URL"] == f"http://sandbox:{kombo_port[1]}/v1"
    assert env["CONNECTOR_COMEET__BASE_URL"] == f"http://sandbox:{comeet_port[1]}"


def test_worker_health_and_web_port_agree() -> None:
    worker = SERVICES["worker"]
    port = worker["environment"]["CONNECTOR_WEB_PORT"]
    assert port in worker["expose"]
    assert f":{port}/health/ready" in " ".join(worker["healthcheck"]["test"])
    assert worker["environment"]["CONNECTOR_WEB_HOST"] == "0.0.0.0"
    assert "ports" not in worker, "a fixed host port would stop --scale worker=N"


def test_secrets_come_from_files_not_the_compose_file() -> None:
    env = SERVICES["worker"]["environment"]
    assert not any(k.endswith(("API_KEY", "TOKEN", "PASSWORD")) for k in env)
    settings = Settings.model_validate(
        {"kombo": {"api_key_file": None}, "comeet": {"token_file": None}}
    )
    assert settings.kombo.api_key.get_secret_value() == ""
    for secret in ("kombo_api_key", "comeet_token"):
        assert secret in SERVICES["worker"]["secrets"]
        assert f"/run/secrets/{secret}" in " ".join(env.values())
