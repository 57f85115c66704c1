"""The benchmark's smoke mode runs end to end against the session's broker."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.scenario import IMPLEMENTATIONS
from connector.settings import child_environment

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_mode_prints_a_row_per_implementation(kafka_bootstrap: str, tmp_path: Path) -> None:
    # The session broker is handed over, so the benchmark starts no broker of its own.
    env = child_environment({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap})
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout
    assert "## End to end" in out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    for impl in IMPLEMENTATIONS:
        row = next((r for r in rows if r.startswith(f"| {impl} |")), None)
        assert row is not None, f"no row for {impl}:\n{out}"
        cells = [c.strip() for c in row.strip("|").split("|")]
        delivered = int(cells[3].split("/")[0].replace(",", ""))
        assert delivered > 0, row
    # Per-order order always holds for the connector, and for the contenders: quix (one
    # order's calls of a checkpoint in sequence, checkpoints one after another) and
    # faststream (each order's events chained). Both run with the contenders' interpreter
    # (bench/contenders/.venv; the root one has neither), so a row with deliveries also
    # shows that environment builds and starts.
    for impl in ("connector", "quix", "faststream"):
        row = next(r for r in rows if r.startswith(f"| {impl} |"))
        assert "| yes |" in row, row
    assert "## Kombo SDK vs KomboClient" in out
    [report] = tmp_path.glob("*.md")
    assert report.read_text(encoding="utf-8").strip() == out.strip()
    assert re.search(r"Kafka \| external broker at ", out)
