"""Configuration errors name the variable, exit 2; typos are reported; --help is plain.

The CLI runs in-process (``connector.cli.main``) with a controlled environment;
nothing here reaches a broker: every refusal happens before that.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from connector import cli
from connector.infra.config_errors import ConfigError, load_settings, unknown_variables
from connector.ops.check import is_local_url, static_problems
from connector.ops.cli_help import variables_for
from connector.settings import Settings

SECRET = "kombo-live-secret-value-42"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.startswith(("CONNECTOR_", "KAFKA_BOOTSTRAP", "OTEL_")):
            monkeypatch.delenv(name)
    return monkeypatch


def errors_of(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, list[str]]:
    code = cli.main(argv)
    return code, capsys.readouterr().err.splitlines()


def test_a_bad_value_names_the_variable_problem_and_fix(clean_env, capsys) -> None:
    clean_env.setenv("CONNECTOR_DELIVERY__MAX_IN_FLIGHT", "lots")
    clean_env.setenv("CONNECTOR_DELIVERY__ON_OUTAGE", "explode")
    clean_env.setenv("CONNECTOR_TOPICS__PARTITIONS", "0")
    code, lines = errors_of(capsys, ["topics", "describe"])
    assert code == 2
    assert lines == [
        "connector: configuration error: CONNECTOR_TOPICS__PARTITIONS='0': out of range "
        "(input should be greater than 0); fix: set a number greater than 0 (default: 6)",
        "connector: configuration error: CONNECTOR_DELIVERY__MAX_IN_FLIGHT='lots': not a whole "
        "number; fix: set a whole number greater than 0 (default: 256)",
        "connector: configuration error: CONNECTOR_DELIVERY__ON_OUTAGE='explode': not an allowed "
        "value; fix: use one of 'park', 'dead_letter' or 'stop' (default: park)",
    ]


def test_an_unreadable_secret_file_is_one_line_naming_it(clean_env, capsys, tmp_path: Path) -> None:
    # A Compose secret mounted 0600 for the host user, read by the image's uid 10001.
    unreadable = tmp_path / "kombo_api_key"
    unreadable.write_text(SECRET)
    unreadable.chmod(0)
    real_read_text = Path.read_text

    def read_text(self: Path, *args: object, **kwargs: object) -> str:
        if self == unreadable:  # root reads a mode-0 file: refuse as the kernel would
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)  # type: ignore[arg-type]

    clean_env.setattr(Path, "read_text", read_text)
    clean_env.setenv("CONNECTOR_KOMBO__API_KEY_FILE", str(unreadable))
    code, lines = errors_of(capsys, ["worker"])
    assert code == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"connector: configuration error: CONNECTOR_KOMBO__API_KEY_FILE='{unreadable}': "
        f"secret file {unreadable} cannot be read by uid "
    )
    assert "(Permission denied); fix: make it readable by that user" in lines[0]
    assert "scripts/compose-secrets" in lines[0]
    assert SECRET not in lines[0]


def test_a_missing_secret_file_is_one_line_and_a_secret_is_never_echoed(
    clean_env, capsys, tmp_path: Path
) -> None:
    missing = tmp_path / "kombo_api_key"
    clean_env.setenv("CONNECTOR_KOMBO__API_KEY_FILE", str(missing))
    code, lines = errors_of(capsys, ["worker"])
    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith("connector: configuration error: CONNECTOR_KOMBO__API_KEY_FILE=")
    assert f"secret file {missing} does not exist; fix: create it" in lines[0]
    clean_env.delenv("CONNECTOR_KOMBO__API_KEY_FILE")
    clean_env.setenv("CONNECTOR_KAFKA__SASL_PASSWORD", SECRET)
    clean_env.setenv("CONNECTOR_KAFKA__SECURITY_PROTOCOL", "TLS")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert SECRET not in str(raised.value)
    assert "CONNECTOR_KAFKA__SECURITY_PROTOCOL='TLS'" in str(raised.value)


def test_unknown_variables_are_probable_typos(clean_env, capsys) -> None:
    clean_env.setenv("CONNECTOR_DELIVERY__MAX_INFLIGHT", "3")
    clean_env.setenv("CONNECTOR_KOMBO__APIKEY", SECRET)
    clean_env.setenv("CONNECTOR_KOMBO__ACCOUNTS__US_EAST__API_KEY", "k")  # a named account
    clean_env.setenv("CONNECTOR_KOMBO__ACCOUNTS__US_EAST__INTEGRATIONS", '["us-*"]')
    clean_env.setenv("CONNECTOR_WEB_PORT", "7000")
    warnings = unknown_variables()
    assert warnings == [
        "CONNECTOR_DELIVERY__MAX_INFLIGHT is not a setting and is ignored (probable typo): "
        "did you mean CONNECTOR_DELIVERY__MAX_IN_FLIGHT?",
        "CONNECTOR_KOMBO__APIKEY is not a setting and is ignored (probable typo): "
        "did you mean CONNECTOR_KOMBO__API_KEY?",
    ]
    cli.main(["publish", "/nonexistent.json"])
    err = capsys.readouterr().err
    assert "connector: warning: CONNECTOR_DELIVERY__MAX_INFLIGHT is not a setting" in err
    assert SECRET not in err


def test_publish_of_bad_json_or_a_missing_file_is_a_clean_error(
    clean_env, capsys, tmp_path: Path
) -> None:
    bad = tmp_path / "event.json"
    bad.write_text('{"event_id": ')
    code, lines = errors_of(capsys, ["publish", str(bad)])
    assert code == 2
    assert lines == [
        f"connector publish: {bad} is not valid JSON: Expecting value: line 1 column 13 (char 12)"
    ]
    code, lines = errors_of(capsys, ["publish", str(tmp_path / "nope.json")])
    assert code == 2
    assert lines == [
        f"connector publish: cannot read {tmp_path / 'nope.json'}: No such file or directory"
    ]


def test_the_worker_refuses_an_empty_credential_for_a_real_vendor(clean_env, capsys) -> None:
    clean_env.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached
    clean_env.setenv("CONNECTOR_COMEET__TOKEN", "t")
    code, lines = errors_of(capsys, ["worker"])
    assert code == 2
    assert lines == [
        "connector: configuration error: CONNECTOR_KOMBO__API_KEY: empty while Kombo calls go "
        "to https://api.kombo.dev/v1 (CONNECTOR_KOMBO__REGION=eu); fix: set "
        "CONNECTOR_KOMBO__API_KEY or CONNECTOR_KOMBO__API_KEY_FILE"
    ]


def test_local_vendor_urls_need_no_credential() -> None:
    assert is_local_url("http://127.0.0.1:8081/v1")
    assert is_local_url("http://localhost:9/x")
    assert is_local_url("http://[::1]:80")
    assert not is_local_url("https://api.comeet.co")
    assert not is_local_url("http://sandbox:8081/v1")
    local = Settings(
        kafka={"bootstrap_servers": "b:9092"},
        kombo={"base_url": "http://127.0.0.1:8081/v1"},
        comeet={"base_url": "http://localhost:8082"},
    )
    assert static_problems(local)[0] == []
    real = Settings(kafka={"bootstrap_servers": "b:9092"}, comeet={"base_url": "ftp://x"})
    errors = static_problems(real)[0]
    assert any(
        e.startswith("CONNECTOR_COMEET__BASE_URL='ftp://x': not an http(s) URL") for e in errors
    )
    assert any(e.startswith("CONNECTOR_KOMBO__API_KEY: empty") for e in errors)


@pytest.mark.parametrize(
    "command", ["worker", "topics", "publish", "demo", "audit", "dlq", "order", "target", "check"]
)
def test_help_is_plain_text_and_lists_the_variables_read(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for markup in (":mod:", ":class:", ":func:", "``"):
        assert markup not in text, f"{command} --help shows {markup}"
    assert "environment variables read" in text
    listed = variables_for(command)
    assert listed and all(name in text for name in listed)


def test_help_lists_what_each_command_reads(capsys: pytest.CaptureFixture[str]) -> None:
    assert "CONNECTOR_TOPICS__EVENTS" in variables_for("publish")
    assert "CONNECTOR_DELIVERY__MAX_IN_FLIGHT" not in variables_for("publish")
    worker = variables_for("worker")
    assert {"CONNECTOR_DELIVERY__MAX_IN_FLIGHT", "KAFKA_BOOTSTRAP_SERVERS"} <= set(worker)
    assert "CONNECTOR_KOMBO__ACCOUNTS__<NAME>__API_KEY_FILE" in worker
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in worker
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    top = capsys.readouterr().out
    assert ":mod:" not in top and "connector check" in top


def test_values_that_must_be_json_are_named(clean_env, capsys) -> None:
    clean_env.setenv("CONNECTOR_KOMBO__ACCOUNTS__US__API_KEY", SECRET)
    clean_env.setenv("CONNECTOR_KOMBO__ACCOUNTS__US__INTEGRATIONS", "us-1")
    code, lines = errors_of(capsys, ["topics", "describe"])
    assert code == 2
    assert lines == [
        "connector: configuration error: CONNECTOR_KOMBO__ACCOUNTS__US__INTEGRATIONS='us-1': "
        'not JSON, and this setting takes a JSON list; fix: set it as JSON, e.g. ["us-1", "us-*"]'
    ]
    clean_env.delenv("CONNECTOR_KOMBO__ACCOUNTS__US__INTEGRATIONS")
    code, lines = errors_of(capsys, ["topics", "describe"])
    assert lines == [
        "connector: configuration error: CONNECTOR_KOMBO__ACCOUNTS__US__INTEGRATIONS: "
        "required and not set; fix: set it"
    ]
    assert SECRET not in capsys.readouterr().err
