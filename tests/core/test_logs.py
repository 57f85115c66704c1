"""JSON log lines, and the last-line-of-defence redaction of configured secrets."""

from __future__ import annotations

import io
import json
import logging

import pytest

from connector.infra.logs import MASK, JsonFormatter, RedactingFilter
from connector.settings import Settings

SECRET = "sk-live-0123456789abcdef"


@pytest.fixture
def capture() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter([SECRET, "", "ab"]))
    logger = logging.getLogger("test.redaction")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_secret_in_message_args_and_traceback_is_masked(capture) -> None:
    logger, stream = capture
    logger.info("calling with %s", f"Bearer {SECRET}", extra={"event_id": "e-1"})
    try:
        raise RuntimeError(f"boom {SECRET}")
    except RuntimeError:
        logger.exception("failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["message"] == f"calling with Bearer {MASK}"
    assert lines[0]["event_id"] == "e-1"
    assert SECRET not in stream.getvalue()
    assert f"boom {MASK}" in lines[1]["exception"]


def test_settings_repr_hides_secrets() -> None:
    settings = Settings(kombo={"api_key": SECRET}, comeet={"token": SECRET})
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())
    assert settings.kombo.api_key.get_secret_value() == SECRET


def test_secret_from_file(tmp_path) -> None:
    path = tmp_path / "key"
    path.write_text(SECRET + "\n")
    settings = Settings(kombo={"api_key_file": str(path)})
    assert settings.kombo.api_key.get_secret_value() == SECRET


def test_repeated_lines_are_throttled_and_counted() -> None:
    from connector.infra.logs import RepeatFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RepeatFilter(limit=3, window_s=10))
    logger = logging.getLogger("test.repeat")
    logger.handlers[:] = [handler]
    logger.propagate = False
    for n in range(100):
        record = logger.makeRecord(
            "test.repeat", logging.ERROR, "f", 1, "Unable connect to node %s", (n,), None
        )
        record.created = 1000.0 + n * 0.01
        logger.handle(record)
    later = logger.makeRecord(
        "test.repeat", logging.ERROR, "f", 1, "Unable connect to node %s", (7,), None
    )
    later.created = 1020.0
    logger.handle(later)
    lines = stream.getvalue().splitlines()
    assert lines[:3] == [
        "Unable connect to node 0",
        "Unable connect to node 1",
        "Unable connect to node 2",
    ]
    assert lines[3] == "Unable connect to node 7 (+97 similar suppressed)"
    assert len(lines) == 4


def test_faust_warning_about_its_missing_sensors_is_not_logged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from connector.infra.logs import configure_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO", json_lines=True)
        faust_log = logging.getLogger("connector.app")  # the module of the app's class
        # As mode's CompositeLogger passes it on, on every rebalance.
        faust_log.warning("[^---Producer]: Missing sensor state for rebalance #%s", 3)
        faust_log.warning("[^---Producer]: Missing sensor state for rebalance end #%s", 3)
        faust_log.warning("[^---Fetcher]: something else")
        logging.getLogger("connector.x").warning("Missing sensor state for rebalance")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = [json.loads(line)["message"] for line in capsys.readouterr().err.splitlines()]
    assert lines == ["[^---Fetcher]: something else", "Missing sensor state for rebalance"]
