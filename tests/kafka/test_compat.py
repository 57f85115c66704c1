"""The start-up self-check: exact versions, and the internals the adapter uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from connector.kafka import compat

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_libraries_are_the_pinned_ones_with_every_internal() -> None:
    assert compat.problems() == []


def test_the_pins_in_pyproject_are_the_verified_versions() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    for library, version in compat.PINS.items():
        assert f'"{library}=={version}"' in text, library


def test_another_version_is_refused_in_one_line_naming_found_expected_and_what_to_do() -> None:
    lines = compat.problems(pins={"faust-streaming": "0.99.0"})
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith("faust-streaming 0.15.3 is installed")
    assert "verified against faust-streaming 0.99.0 only" in line
    assert "uv sync --frozen" in line


def test_a_missing_or_reshaped_internal_is_refused() -> None:
    needs = (
        compat.Need(
            "faust-streaming", "faust.transport.consumer:Consumer._gone", "method", callable
        ),
        compat.Need(
            "faust-streaming",
            "faust.transport.consumer:Consumer._new_offset",
            "method (offset)",
            compat._params("offset"),  # the real one takes (tp)
        ),
    )
    lines = compat.problems(needs=needs)
    assert [line.split(": ")[1].split(" ")[0] for line in lines] == [
        "faust.transport.consumer:Consumer._gone",
        "faust.transport.consumer:Consumer._new_offset",
    ]
    assert all("missing or changed shape" in line for line in lines)


def test_the_worker_refuses_to_start_on_another_version() -> None:
    # The real CLI in a child process, with the verified version pretended to be another.
    code = (
        "import sys\n"
        "from connector.kafka import compat\n"
        "compat.PINS['aiokafka'] = '0.13.0'\n"
        "from connector.cli import main\n"
        "sys.exit(main(['worker']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert errors == [
        "connector: configuration error: aiokafka 0.14.0 is installed, but connector.kafka "
        "was verified against aiokafka 0.13.0 only: install the pinned versions "
        "(`uv sync --frozen`, or the package's own requirements), or verify connector/kafka "
        "against 0.14.0 and change the pin in connector/kafka/compat.py and pyproject.toml"
    ]
