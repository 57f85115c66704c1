"""Machine details and the markdown tables of a benchmark run."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata

from bench.analysis import RunStats

__all__ = ["RunResult", "code_version", "machine_details", "markdown_table", "results_table"]

_PACKAGES = (
    "faust-streaming",
    "aiokafka",
    "httpx",
    "httpx-aiohttp",
    "aiohttp",
    "kombo",
    "rocksdict",
)


@dataclass(frozen=True)
class RunResult:
    """One configuration's outcome."""

    implementation: str
    workers: int
    latency_ms: float
    stats: RunStats
    peak_rss_mb: list[float]
    cpu_s: float  # CPU time of the implementation's processes during the run
    ready_s: float  # start to ready (not part of the measured seconds)
    other_cores: float  # mean cores used by processes not of this benchmark during the run
    note: str = ""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> str:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def code_version(root: str | None = None) -> str:
    """The last commit that changed ``connector/``, and whether it has uncommitted changes.

    Workers import the working tree when they start, so the figures belong to this
    version only if it did not change during the run (the report shows it at both ends).
    ``root``: another checkout (``bench.run --before``); default, this one.
    """
    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    try:
        commit = git("log", "-1", "--format=%h", "--abbrev=12", "--", "connector")
        dirty = git("status", "--porcelain", "--", "connector")
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    if not commit:
        return "unknown (not a git checkout)"
    return commit + (" + uncommitted changes in connector/" if dirty else "")


def machine_details(kafka: str) -> list[tuple[str, str]]:
    return [
        ("CPU", f"{os.cpu_count()} cores, {_cpu_model()}"),
        ("RAM", _memory_gib()),
        ("Python", f"{platform.python_implementation()} {sys.version.split()[0]}"),
        ("Kernel", f"{platform.system()} {platform.release()}"),
        ("Kafka", kafka),
        ("Packages", ", ".join(f"{p} {_version(p)}" for p in _PACKAGES)),
    ]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    right = [False] + [True] * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---:" if r else "---" for r in right) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _order(stats: RunStats) -> str:
    if stats.order_violations == 0:
        return "yes"
    return f"NO: {stats.order_violations} of {stats.orders_seen} orders"


def results_table(results: Sequence[RunResult]) -> str:
    headers = [
        "implementation",
        "workers",
        "API latency ms",
        "delivered",
        "seconds",
        "events/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "peak RSS MB per worker",
        "CPU ms/event",
        "per-order order held",
        "capped",
        "others' load (cores)",
    ]
    rows = []
    for r in results:
        s = r.stats
        extra = []
        if s.duplicates:
            extra.append(f"{s.duplicates} dup")
        if s.rejected:
            extra.append(f"{s.rejected} refused")
        delivered = f"{s.delivered:,}/{s.expected:,}" + (f" ({', '.join(extra)})" if extra else "")
        cpu = f"{1000 * r.cpu_s / s.delivered:.2f}" if s.delivered else "-"
        note = r.note
        if s.warmup_events:
            note += (
                f"; percentiles after a {s.warmup_s:g} s warm-up, whose {s.warmup_events:,}"
                f" events had p99 {_ms(s.warmup_p99_ms)} ms"
            )
        name = r.implementation + (f" ({note})" if note else "")
        rows.append(
            [
                name,
                str(r.workers),
                f"{r.latency_ms:g}",
                delivered,
                f"{s.seconds:.1f}",
                f"{s.throughput:,.0f}",
                _ms(s.p50_ms),
                _ms(s.p95_ms),
                _ms(s.p99_ms),
                ", ".join(f"{m:.0f}" for m in r.peak_rss_mb) or "-",
                cpu,
                _order(s),
                "CAPPED" if s.capped else "no",
                f"{r.other_cores:.2f}",
            ]
        )
    return markdown_table(headers, rows)
