"""``connector demo``: the whole connector on one machine, with a realistic scenario.

Starts a local Kafka broker (unless ``KAFKA_BOOTSTRAP_SERVERS`` names one), the
sandbox Kombo and Comeet servers, two workers, then publishes a few dozen
orders across both vendors: full lifecycles, expiries, a package list, a
duplicate, a transition the guard must reject, invalid events, and a Kombo
integration that fails twice before it recovers. It prints the audit trail as
it arrives and a summary, then stops everything it started.

The demo never calls the real vendors: sample data must not reach a customer's
hiring system, so it always uses the sandboxes, whatever credentials are set.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from connector.domain.events import event_adapter
from connector.infra.kafka_clients import ensure_topics, producer
from connector.ops.audit_view import format_header, format_row, read_topic
from connector.settings import Settings, external_bootstrap_servers

__all__ = ["NEXT_STEPS", "planted", "run_demo", "scenario"]

REPORT_PDF = base64.b64encode(b"%PDF-1.4 demo assessment report").decode()
FLAKY_INTEGRATION = "lever:DEMOflaky01"


def _event(event_type: str, target: dict[str, Any], n: int, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"demo-{uuid.uuid4().hex[:12]}",
        "type": event_type,
        "occurred_at": f"2026-11-23T09:{n % 60:02d}:00.000Z",
        "target": target,
        **fields,
    }


def scenario(orders: int = 30) -> list[tuple[bytes | None, bytes]]:
    """Records (key, value) in publish order."""
    events: list[dict[str, Any]] = []
    raw: list[tuple[bytes | None, bytes]] = []
    for n in range(orders):
        if n % 2 == 0:
            integration = FLAKY_INTEGRATION if n % 10 == 0 else "greenhouse:DEMOacme001"
            target = {
                "vendor": "kombo",
                "integration_id": integration,
                "assessment_order_id": f"order-{n:03d}",
            }
        else:
            target = {"vendor": "comeet", "evaluation_id": f"eval-{n:03d}"}
        url = f"https://assess.example/candidates/{n}"
        events.append(_event("order.opened", target, n, result_url=url))
        events.append(
            _event("order.progress", target, n, status_text="Test started", result_url=url)
        )
        if n % 7 == 3:
            events.append(
                _event(
                    "order.cancelled",
                    target,
                    n,
                    kind="expired",
                    reason="The candidate did not complete the test within 7 days.",
                    result_url=url,
                )
            )
            continue
        completed = _event(
            "order.completed",
            target,
            n,
            outcome=["passed", "review", "failed"][n % 3],
            completed_at=f"2026-11-23T10:{n % 60:02d}:00.000Z",
            result_url=f"{url}/report",
            score={"value": 40 + n, "max": 100},
            summary="Solid fundamentals; strong on algorithms.",
            sub_results=[
                {
                    "id": "algo",
                    "label": "Algorithms",
                    "score": {"value": 7, "max": 10},
                    "group": "Exercise 1",
                }
            ],
            attributes=[{"label": "Role fit", "value": "Good"}],
            attachments=[
                {"name": "Report.pdf", "content_type": "application/pdf", "data": REPORT_PDF}
            ]
            if target["vendor"] == "kombo"
            else [],
        )
        events.append(completed)
        if n == 1:
            events.append(completed)  # a producer retry: the same event id twice
            events.append(_event("order.opened", target, n, result_url=url))  # reopen: rejected
    events.append(
        _event(
            "packages.set",
            {"vendor": "kombo", "integration_id": "greenhouse:DEMOacme001"},
            0,
            packages=[
                {
                    "id": "ts-1",
                    "type": "SKILLS_TEST",
                    "name": "TypeScript",
                    "description": "TypeScript coding skills assessment",
                },
                {
                    "id": "vi-1",
                    "type": "VIDEO_INTERVIEW",
                    "name": "Video interview",
                    "description": "Recorded answers to five questions",
                },
            ],
        )
    )
    for document in events:
        key = event_adapter.validate_python(document).key.encode()
        raw.append((key, json.dumps(document).encode()))
    # Invalid input from a buggy producer: not JSON, and a status over Comeet's 40 characters.
    raw.append((b"comeet|eval-999", b'{"type": "order.completed", "event_id": '))
    bad = _event(
        "order.progress",
        {"vendor": "comeet", "evaluation_id": "eval-998"},
        1,
        status_text="Candidate is currently working on exercise three of five",
    )
    raw.append((b"comeet|eval-998", json.dumps(bad).encode()))
    return raw


def planted(orders: int) -> list[tuple[str, int, str]]:
    """The problems :func:`scenario` plants on purpose: (outcome, count, what), so that
    "dead_lettered 2" in the summary reads as the expected result, not a failure."""
    found = [
        (
            "dead_lettered",
            2,
            "comeet|eval-999 is not JSON; comeet|eval-998's status text is longer than "
            "Comeet's 40 characters (a contract violation)",
        )
    ]
    if orders > 1:
        found += [
            ("duplicate", 1, "comeet|eval-001's completion published twice (a producer retry)"),
            ("rejected", 1, "comeet|eval-001 opened again after it completed"),
        ]
    found.append(
        (
            "failed",
            0,
            f"kombo|{FLAKY_INTEGRATION} answers 503 twice, then the retries deliver "
            "(failed attempts, not terminal)",
        )
    )
    return found


NEXT_STEPS = """\
next steps (the demo stopped everything it started):
  a local stack that stays up (broker, sandbox vendors, 2 workers): scripts/stack up,
    then source .stack/env (README "Operator walkthrough"); scripts/stack down stops it
  connector publish topics/examples/order.completed.kombo.json
  connector audit tail --last 20; connector dlq list; connector order show KEY
  README "Watching the audit topic"; connector COMMAND --help lists what each one reads
"""


@contextlib.contextmanager
def _local_stack(settings: Settings, workdir: Path, workers: int) -> Iterator[Settings]:
    from connector.local.kafka import LocalKafka
    from connector.local.stack import deployment_env, deployment_settings
    from connector.local.worker import WorkerProcess
    from connector.sandbox import SandboxControl, SandboxProcess

    with contextlib.ExitStack() as stack:
        bootstrap = external_bootstrap_servers()
        if not bootstrap:
            print("starting a local Kafka broker (KRaft) ...", flush=True)
            kafka = LocalKafka(log_file=workdir / "kafka.log")
            kafka.start()
            stack.callback(kafka.stop)
            bootstrap = kafka.bootstrap_servers
            print(
                f"  Kafka {kafka.version} ready on {bootstrap} in {kafka.startup_seconds:.1f} s",
                flush=True,
            )
        kombo_key, comeet_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        sandbox = SandboxProcess(kombo_key=kombo_key, comeet_token=comeet_token)
        urls = sandbox.start()
        stack.callback(sandbox.stop)
        print(f"  sandbox Kombo  {urls.kombo_url}\n  sandbox Comeet {urls.comeet_url}", flush=True)
        control = SandboxControl(urls.kombo_url.removesuffix("/v1"))
        stack.callback(control.close)
        # A flaky integration: two 503s, then it recovers; the connector retries.
        control.add_fault(
            "error",
            target=FLAKY_INTEGRATION,
            status=503,
            code="REMOTE.SERVICE_UNAVAILABLE",
            count=2,
        )
        run_id = uuid.uuid4().hex[:8]
        env = {
            **deployment_env(
                bootstrap=bootstrap,
                kombo_url=urls.kombo_url,
                kombo_key=kombo_key,
                comeet_url=urls.comeet_url,
                comeet_token=comeet_token,
                name=f"demo-{run_id}",
            ),
            "CONNECTOR_DATA_DIR": str(workdir / "state"),
            "CONNECTOR_DELIVERY__BACKOFF_INITIAL_S": "0.2",
        }
        # The workers' app id: ensure_topics checks this deployment's changelog.
        demo_settings = deployment_settings(env)
        asyncio.run(ensure_topics(demo_settings))
        for i in range(1, workers + 1):
            worker = WorkerProcess(
                env, worker_id=f"worker-{i}", log_path=workdir / f"worker-{i}.log"
            )
            print(f"starting worker-{i} ...", flush=True)
            worker.start(wait_ready=120)
            stack.callback(worker.stop)
        yield demo_settings


async def _publish_and_watch(
    settings: Settings, records: list[tuple[bytes | None, bytes]], timeout: float
) -> Counter[str]:
    writer = producer(settings)
    await writer.start()
    try:
        for key, value in records:
            await writer.send(settings.topics.events, value, key=key)
        await writer.flush()
    finally:
        await writer.stop()
    print(f"\npublished {len(records)} events; audit trail:\n", flush=True)
    print(format_header())
    outcomes: Counter[str] = Counter()
    terminal = 0
    deadline = time.monotonic() + timeout

    def finished() -> bool:
        return terminal >= len(records) or time.monotonic() > deadline

    async for _, record in read_topic(settings, settings.topics.audit, follow=True, stop=finished):
        print(format_row(record), flush=True)
        if record.get("terminal"):
            terminal += 1
            outcomes[record["outcome"]] += 1
    return outcomes


def run_demo(
    settings: Settings, *, orders: int = 30, workers: int = 2, timeout: float = 180.0
) -> int:
    records = scenario(orders)
    with (
        tempfile.TemporaryDirectory(prefix="connector-demo-") as tmp,
        _local_stack(settings, Path(tmp), workers) as demo_settings,
    ):
        outcomes = asyncio.run(_publish_and_watch(demo_settings, records, timeout))
    total = sum(outcomes.values())
    print("\nplanted on purpose (the expected outcomes, not failures):")
    for outcome, count, what in planted(orders):
        print(f"  {outcome + (f' {count}' if count else ''):<16} {what}")
    print(
        "\nsummary: "
        + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        + f" (terminal {total} of {len(records)} events)"
    )
    expected = all(outcomes[o] == n for o, n, _ in planted(orders) if n)
    if total == len(records):
        print("all events ended" + (" as planted" if expected else "; compare with the plan above"))
    print("\n" + NEXT_STEPS)
    return 0 if total == len(records) else 1


if __name__ == "__main__":
    sys.exit(run_demo(Settings()))
