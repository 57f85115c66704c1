"""docker-compose.yml and the Dockerfile cannot run here (no Docker engine), so every claim
they make is checked against the code: connector/settings.py, the health endpoints, the
secrets script, the stable worker ids and the README's commands."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from connector.app import ConnectorApp
from connector.healthcheck import check
from connector.settings import KOMBO_REGIONS, Settings, child_environment
from connector.slots import claim_slot

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
VENDORS = yaml.safe_load((ROOT / "docker-compose.vendors.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")


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


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${NAME:-default}`` and ``${NAME}``."""

    def one(match: re.Match[str]) -> str:
        name, default = match[1], match[3] or ""
        return env.get(name) or default

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", one, value)


def merged_worker_environment(env: dict[str, str]) -> dict[str, str]:
    """The worker's environment with the override file, as ``-f a -f b`` merges it."""
    merged = {**SERVICES["worker"]["environment"], **VENDORS["services"]["worker"]["environment"]}
    return {k: interpolate(str(v), env) for k, v in merged.items()}


def settings_from(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a container with this environment would load (secret files aside)."""
    for name in list(os.environ):
        if name.startswith("CONNECTOR_") or name == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)
    for name, value in environment.items():
        if not name.endswith("_FILE"):  # /run/secrets exists only in the container
            monkeypatch.setenv(name, value)
    return Settings()


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def listeners(value: str) -> dict[str, tuple[str, int]]:
    found: dict[str, tuple[str, int]] = {}
    for item in value.split(","):
        name, address = item.split("://")
        host, port = address.rsplit(":", 1)
        found[name] = (host, int(port))
    return found


# -- services, settings ------------------------------------------------------------------


def test_services() -> None:
    assert {"kafka", "sandbox", "worker"} <= set(SERVICES)


@pytest.mark.parametrize("variable", sorted(SERVICES["worker"]["environment"]))
def test_worker_environment_names_real_settings(variable: str) -> None:
    assert variable.startswith(("CONNECTOR_", "KAFKA_"))
    assert setting_exists(variable), f"{variable} is not a setting in connector/settings.py"


def test_setting_check_can_fail() -> None:
    assert not setting_exists("CONNECTOR_KOMBO__API_KEYS")
    assert not setting_exists("CONNECTOR_NOPE")


# -- Kafka listeners: in the network and from the host --------------------------------------


def test_kafka_listens_for_the_network_and_for_the_host() -> None:
    kafka = SERVICES["kafka"]["environment"]
    bound = listeners(kafka["KAFKA_LISTENERS"])
    advertised = listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(p.split(":") for p in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(bound) == set(protocols)
    for name, (_, port) in advertised.items():
        assert bound[name][1] == port, f"{name} is advertised on a port it does not bind"
    # In the network: the worker's bootstrap is an advertised listener named after the service.
    worker_bootstrap = SERVICES["worker"]["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
    internal = [n for n, (h, p) in advertised.items() if f"{h}:{p}" == worker_bootstrap]
    assert internal and worker_bootstrap.startswith("kafka:")
    assert kafka["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    # From the host: a listener advertised as localhost on a port published as the same
    # host port, the address the README uses.
    host = [(n, p) for n, (h, p) in advertised.items() if h == "localhost"]
    assert len(host) == 1
    published = {
        int(parts[-1]): int(parts[-2])
        for parts in (p.split(":") for p in SERVICES["kafka"]["ports"])
    }
    assert published[host[0][1]] == host[0][1]
    assert f"KAFKA_BOOTSTRAP_SERVERS=localhost:{host[0][1]} connector publish" in README
    health = " ".join(SERVICES["kafka"]["healthcheck"]["test"])
    assert re.search(r"--bootstrap-server (\S+)", health)[1] in {  # type: ignore[index]
        f"localhost:{p}" for _, p in bound.values()
    }


def test_worker_reaches_the_sandboxes_on_their_ports() -> None:
    env = SERVICES["worker"]["environment"]
    sandbox_args = " ".join(SERVICES["sandbox"]["command"])
    kombo_port = re.search(r"--kombo-port=(\d+)", sandbox_args)
    comeet_port = re.search(r"--comeet-port=(\d+)", sandbox_args)
    assert kombo_port and comeet_port
    assert env["CONNECTOR_KOMBO__BASE_URL"] == f"http://sandbox:{kombo_port[1]}/v1"
    assert env["CONNECTOR_COMEET__BASE_URL"] == f"http://sandbox:{comeet_port[1]}"
    health = " ".join(SERVICES["sandbox"]["healthcheck"]["test"])
    assert f"({kombo_port[1]}, {comeet_port[1]})" in health


# -- real vendors through the override file ------------------------------------------------


@pytest.mark.parametrize("region", ["eu", "us", None])
def test_override_file_sends_to_real_vendors_without_the_sandbox(
    region: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert VENDORS["services"]["sandbox"]["profiles"], "the sandbox must not start"
    assert SERVICES["worker"]["depends_on"]["sandbox"]["required"] is False
    assert SERVICES["worker"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    env = merged_worker_environment({"KOMBO_REGION": region} if region else {})
    assert not any("sandbox" in value for value in env.values())
    settings = settings_from(env, monkeypatch)
    assert settings.kombo.url == KOMBO_REGIONS[region or "eu"]
    assert settings.comeet.url == "https://api.comeet.co"
    assert "docker compose -f docker-compose.yml -f docker-compose.vendors.yml up" in README


# -- secrets ---------------------------------------------------------------------------------


def test_secrets_come_from_files_not_the_compose_file() -> None:
    env = SERVICES["worker"]["environment"]
    assert not any(k.endswith(("API_KEY", "TOKEN", "PASSWORD")) for k in env)
    for secret in ("kombo_api_key", "comeet_token"):
        assert secret in SERVICES["worker"]["secrets"]
        assert secret in SERVICES["sandbox"]["secrets"]
        assert f"/run/secrets/{secret}" in " ".join(env.values())


def test_one_command_creates_the_secrets_compose_mounts(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts/compose-secrets", tmp_path / "scripts")
    script = tmp_path / "scripts/compose-secrets"
    first = subprocess.run([script], capture_output=True, text=True, check=True)
    # The container's uid 10001 reads the file (mounted with its host mode); other host
    # users cannot reach it through the directory.
    assert (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700
    for secret in COMPOSE["secrets"].values():
        file = tmp_path / secret["file"]
        assert file.stat().st_size >= 32
        assert file.stat().st_mode & 0o777 == 0o644
    assert first.stdout.count("created") == len(COMPOSE["secrets"])
    # The empty directory some Docker versions leave for a missing secret file is replaced.
    (tmp_path / "secrets/comeet_token").unlink()
    (tmp_path / "secrets/comeet_token").mkdir()
    subprocess.run([script], capture_output=True, text=True, check=True)
    assert (tmp_path / "secrets/comeet_token").is_file()
    kept = (tmp_path / "secrets/kombo_api_key").read_text()
    # A file made 0600 by an earlier version (or by hand) is made readable, and kept.
    (tmp_path / "secrets/kombo_api_key").chmod(0o600)
    (tmp_path / "secrets").chmod(0o755)
    again = subprocess.run([script], capture_output=True, text=True, check=True)
    assert again.stdout.count("kept") == len(COMPOSE["secrets"])
    assert (tmp_path / "secrets/kombo_api_key").read_text() == kept
    assert (tmp_path / "secrets/kombo_api_key").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "secrets").stat().st_mode & 0o777 == 0o700
    assert "scripts/compose-secrets" in README


def test_a_missing_secret_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        ValidationError,
        match=r"/run/secrets/kombo_api_key does not exist.*"
        r"scripts/compose-secrets",
    ):
        Settings.model_validate({"kombo": {"api_key_file": "/run/secrets/kombo_api_key"}})
    empty = tmp_path / "comeet_token"
    empty.write_text("\n")
    with pytest.raises(ValidationError, match="comeet_token is empty"):
        Settings.model_validate({"comeet": {"token_file": str(empty)}})
    with pytest.raises(ValidationError, match="does not exist"):  # a directory in its place
        Settings.model_validate({"comeet": {"token_file": str(tmp_path)}})


# -- restarts, stops, health -----------------------------------------------------------------


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_service_restarts_and_has_a_healthcheck(service: str) -> None:
    assert SERVICES[service]["restart"] in ("unless-stopped", "always")
    assert SERVICES[service]["healthcheck"]["test"]


def test_stop_grace_period_covers_the_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(SERVICES["worker"]["environment"], monkeypatch)
    grace = seconds(SERVICES["worker"]["stop_grace_period"])
    assert grace >= settings.shutdown_grace_s > settings.shutdown_drain_s
    assert grace <= settings.shutdown_grace_s + 30, "much longer only delays a stuck stop"
    assert settings.shutdown_grace_s > 10, "Docker's default grace period would not do"


@dataclass
class _Dispatcher:
    bounds: list[float]

    def revoke(self) -> None:
        pass

    async def drain_revoked(self, wire_timeout: float) -> None:
        self.bounds.append(wire_timeout)


def test_shutdown_drains_for_the_bound_the_settings_state() -> None:
    settings = Settings.model_validate({"delivery": {"connect_timeout_s": 7, "read_timeout_s": 40}})
    bounds: list[float] = []
    dispatcher = _Dispatcher(bounds)
    app = ConnectorApp(settings, None, None, None, None, None, None)  # type: ignore[arg-type]
    app.dispatcher = dispatcher  # type: ignore[assignment]
    app.processor = type("P", (), {"parking_dispatcher": dispatcher})()
    asyncio.run(app.fence_and_drain())
    assert bounds == [settings.shutdown_drain_s] * 2 == [52.0, 52.0]


def test_worker_health_and_web_port_agree() -> None:
    worker = SERVICES["worker"]
    port = worker["environment"]["CONNECTOR_WEB_PORT"]
    assert port in worker["expose"]
    assert worker["healthcheck"]["test"] == [
        "CMD",
        "python",
        "-m",
        "connector.healthcheck",
        "--restart-stalled",
    ]
    assert worker["environment"]["CONNECTOR_WEB_HOST"] == "0.0.0.0"
    assert "ports" not in worker, "a fixed host port would stop --scale worker=N"


class _Health(BaseHTTPRequestHandler):
    answer: tuple[int, str] = (200, "alive")

    def do_GET(self) -> None:
        status, word = self.answer
        body = json.dumps({"status": word}).encode()
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[str, type[_Health]]]:
    handler = type("Handler", (_Health,), {})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/health/live", handler
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_restarts_a_stalled_worker(
    health_server: tuple[str, type[_Health]],
) -> None:
    url, handler = health_server
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert check(url, restart_pid=worker.pid) == 0
        handler.answer = (503, "starting")
        assert check(url, restart_pid=worker.pid) == 1
        assert worker.poll() is None, "a worker that is only starting is left alone"
        handler.answer = (503, "stalled")
        assert check(url, restart_pid=worker.pid) == 1
        assert worker.wait(timeout=5) == -signal.SIGTERM
    finally:
        worker.kill()
        worker.wait()
    assert check("http://127.0.0.1:9/health/live", restart_pid=None, timeout_s=1) == 1


# -- volumes and stable worker ids -------------------------------------------------------------


def test_kafka_data_and_worker_state_are_named_volumes() -> None:
    declared = set(COMPOSE["volumes"])
    kafka_mounts = dict(v.split(":", 1) for v in SERVICES["kafka"]["volumes"])
    assert kafka_mounts["kafka-data"] == SERVICES["kafka"]["environment"]["KAFKA_LOG_DIRS"]
    worker_mounts = dict(v.split(":", 1) for v in SERVICES["worker"]["volumes"])
    assert worker_mounts["worker-state"] == SERVICES["worker"]["environment"]["CONNECTOR_DATA_DIR"]
    assert {"kafka-data", "worker-state"} <= declared
    # The worker id is claimed in the shared volume, never the random host name.
    assert "CONNECTOR_WORKER_ID" not in SERVICES["worker"]["environment"]
    assert SERVICES["worker"]["command"][:3] == ["python", "-m", "connector.slots"]
    assert 'CMD ["python", "-m", "connector.slots", "connector", "worker"]' in DOCKERFILE
    assert "mkdir -p /app/state" in DOCKERFILE and "chown -R connector /app" in DOCKERFILE


def test_slots_are_stable_and_never_shared(tmp_path: Path) -> None:
    first, fd0 = claim_slot(tmp_path)
    second, fd1 = claim_slot(tmp_path)
    assert (first, second) == ("worker-0", "worker-1")
    os.close(fd0)  # the container of worker-0 went away
    again, fd2 = claim_slot(tmp_path)
    assert again == "worker-0"
    os.close(fd1)
    os.close(fd2)


def test_slots_entrypoint_sets_the_id_for_the_worker(tmp_path: Path) -> None:
    held, fd = claim_slot(tmp_path)  # another live replica holds worker-0
    show = [sys.executable, "-c", "import os; print(os.environ['CONNECTOR_WORKER_ID'])"]
    env = {"CONNECTOR_DATA_DIR": str(tmp_path)}
    environment = child_environment(env)
    environment.pop("CONNECTOR_WORKER_ID", None)

    def worker_id() -> str:
        run = subprocess.run(
            [sys.executable, "-m", "connector.slots", *show],
            env=environment,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        return run.stdout.strip()

    assert (held, worker_id()) == ("worker-0", "worker-1")
    environment["CONNECTOR_WORKER_ID"] = "connector-3"  # a StatefulSet's pod name
    assert worker_id() == "connector-3"
    os.close(fd)


# -- the image -------------------------------------------------------------------------------


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.removeprefix("!").rstrip("/")
        if fnmatch.fnmatch(path, body) or path.startswith(body + "/"):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_secrets_and_environments_out_of_the_context() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (".git", ".venv", "secrets", "secrets/kombo_api_key", ".connector-data"):
        assert _ignored(path, patterns), path
    for copy in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", DOCKERFILE, re.M):
        for source in copy.split():
            assert not _ignored(source, patterns), f"the Dockerfile copies {source}"
            assert (ROOT / source).exists()


def test_dockerfile_pins_its_tools_and_caches_the_dependency_layer() -> None:
    # The base is a build argument (scripts/containers builds on Debian's packages); its
    # default, what everyone else builds on, is the official slim image.
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", DOCKERFILE, re.M)
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert base and re.fullmatch(r"python:3\.11-slim-\w+", base[1])
    uv = re.search(r"^ARG UV_VERSION=(\d+\.\d+\.\d+)$", DOCKERFILE, re.M)
    assert uv and '"uv==${UV_VERSION}"' in DOCKERFILE
    lines = DOCKERFILE.splitlines()

    def first(prefix: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(prefix))

    deps = first("RUN uv sync --frozen --no-dev --extra otel --no-install-project")
    assert first("COPY --chown=connector pyproject.toml uv.lock") < deps
    assert deps < first("COPY --chown=connector connector ")
    assert all("--frozen" in line for line in lines if "uv sync" in line)


def test_the_image_steps_build_from_what_the_dockerfile_copies(tmp_path: Path) -> None:
    """Replays the Dockerfile's COPY and ``uv sync`` steps in a bare directory (offline,
    from uv's cache): the dependency layer needs only pyproject.toml and uv.lock, and the
    project layer's files are enough for the commands the compose file runs."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed (scripts/bootstrap installs it)")
    env = {**child_environment({}), "UV_OFFLINE": "1", "UV_PYTHON": sys.executable}
    env.pop("VIRTUAL_ENV", None)
    env.pop("UV_PROJECT_ENVIRONMENT", None)
    steps = re.findall(r"^(COPY|RUN) (.+)$", DOCKERFILE, re.M)
    syncs = 0
    for instruction, argument in steps:
        if instruction == "COPY":
            *sources, _ = re.sub(r"--\S+ ", "", argument).split()
            for source in sources:
                copy = shutil.copytree if (ROOT / source).is_dir() else shutil.copy
                copy(ROOT / source, tmp_path / source)
        elif argument.startswith("uv sync"):
            syncs += 1
            run = subprocess.run(
                [uv, *argument.split()[1:]], cwd=tmp_path, env=env, capture_output=True, text=True
            )
            assert run.returncode == 0, run.stderr[-2000:]
            if "--no-install-project" in argument:
                assert not (tmp_path / "connector").exists(), "the code came before the deps"
    assert syncs == 2
    python = tmp_path / ".venv/bin/python"
    for command in (
        [str(tmp_path / ".venv/bin/connector"), "--help"],
        [str(python), "-m", "connector.healthcheck", "--help"],
        [str(python), "-c", "import connector.slots, connector.sandbox, connector.app"],
        # The image has the OpenTelemetry SDK the README's OTEL_* variables need.
        [str(python), "-c", "import opentelemetry.sdk.trace, opentelemetry.exporter.otlp"],
    ):
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]


def test_readme_documents_the_compose_workflow() -> None:
    section = README.split("### Docker Compose", 1)[1].split("\n## ", 1)[0]
    for claim in (
        "scripts/compose-secrets",
        "docker compose up -d --scale worker=3",
        "docker-compose.vendors.yml",
        "stop_grace_period",
        "worker-0",
    ):
        assert claim in section, claim
    assert math.isfinite(seconds(SERVICES["kafka"]["stop_grace_period"]))
    # The numbers it gives are the settings' defaults and the compose file's.
    defaults = Settings.model_validate({})
    text = " ".join(section.split())
    assert f"{defaults.shutdown_drain_s:g} s by default: `Settings.shutdown_drain_s`" in text
    assert f"(`Settings.shutdown_grace_s`, {defaults.shutdown_grace_s:g} s)" in text
    grace = seconds(SERVICES["worker"]["stop_grace_period"])
    assert f"`stop_grace_period` ({grace:g} s)" in text
