"""Every `connector` command, end to end against the real broker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from connector.cli import EXIT_BROKEN_PIPE
from connector.domain.audit import AuditRecord, DeadLetter, Outcome
from connector.sandbox import Sandboxes
from connector.settings import child_environment
from tests.e2e.harness import Deployment
from tests.factories import make_event, target

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


async def cli(
    env: dict[str, str], *args: str, stdin: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "connector.cli", *args],
            env=child_environment(env),
            input=stdin.decode() if stdin else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=ROOT,
        )

    return await asyncio.to_thread(run)


async def test_topics_publish_audit_and_dlq(
    deployment: Deployment, sandboxes: Sandboxes, tmp_path: Path
) -> None:
    env = deployment.env
    ensured = await cli(env, "topics", "ensure")
    assert ensured.returncode == 0, ensured.stderr
    assert f"{deployment.events_topic}" in ensured.stdout
    assert "created" in ensured.stdout
    again = await cli(env, "topics", "ensure")
    assert again.stdout.count("exists") == 5  # events, audit, parked, control, dead letters
    described = await cli(env, "topics", "describe")
    assert f"{deployment.audit_topic}" in described.stdout
    assert "4 partitions" in described.stdout

    worker = deployment.worker()
    order = target("comeet", "c-cli")
    event_file = tmp_path / "opened.json"
    event_file.write_text(json.dumps(make_event("opened", order)))
    published = await cli(env, "publish", str(event_file))
    assert published.returncode == 0, published.stderr
    assert "published comeet|c-cli -> partition" in published.stdout
    batch = [make_event("completed", order), make_event("opened", order)]
    from_stdin = await cli(env, "publish", "-", stdin=json.dumps(batch).encode())
    assert from_stdin.stdout.count("published") == 2
    invalid = await cli(env, "publish", "-", stdin=b'{"type": "order.opened"}')
    assert invalid.returncode == 2
    assert "event #0 is invalid" in invalid.stderr
    await deployment.publish_raw([(b"comeet|c-cli", b"not json")])
    await deployment.audit_until_terminal([batch[1]["event_id"]], invalid=1)

    table = await cli(env, "audit", "tail", "--order", "c-cli", "--terminal")
    lines = table.stdout.splitlines()
    assert lines[0].startswith("time")
    assert sum("delivered" in line for line in lines) == 2
    assert sum("rejected" in line and "cannot reopen" in line for line in lines) == 1
    as_json = await cli(env, "audit", "tail", "--json", "--outcome", "rejected")
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["event_id"] for r in records] == [batch[1]["event_id"]]
    by_vendor = await cli(env, "audit", "tail", "--json", "--vendor", "kombo")
    assert by_vendor.stdout.strip() == ""

    listing = await cli(env, "dlq", "list")
    assert "not_json" in listing.stdout
    assert "1 dead letters" in listing.stderr
    # not_json cannot succeed again as it is: refused unless forced (issue 14 item 4).
    dry = await cli(env, "dlq", "replay", "--code", "not_json", "--dry-run")
    assert "would replay 0 dead letters" in dry.stdout
    assert "refused 1 dead letters" in dry.stderr and dry.returncode == 2
    forced = await cli(env, "dlq", "replay", "--code", "not_json", "--dry-run", "--force")
    assert "would replay 1 dead letters" in forced.stdout
    # The worker's log holds log lines only: no terminal escape from Faust's spinner
    # (ESC [?25h), no warning about the sensors the connector removed (connector.infra.logs).
    log = worker.log_path.read_bytes()
    assert b"\x1b[" not in log
    assert b"Missing sensor state" not in log


def test_topics_generate_writes_the_contract_files(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "connector.cli", "topics", "generate", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert "event.schema.json" in result.stdout
    assert (tmp_path / "schemas/event.schema.json").read_text() == (
        ROOT / "topics/schemas/event.schema.json"
    ).read_text()


@pytest.mark.slow
async def test_demo_runs_to_the_end(kafka_bootstrap: str) -> None:
    result = await cli(
        {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        "demo",
        "--orders",
        "8",
        "--workers",
        "1",
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    (summary,) = [line for line in lines if line.startswith("summary: ")]
    assert summary.startswith("summary: dead_lettered 2, delivered")
    # Said before the summary: those outcomes were planted; after it: what to do next.
    planted = lines.index("planted on purpose (the expected outcomes, not failures):")
    assert planted < lines.index(summary)
    assert lines[planted + 1].startswith("  dead_lettered 2  comeet|eval-999 is not JSON")
    assert "all events ended as planted" in lines
    assert "next steps (the demo stopped everything it started):" in lines
    assert "duplicate 1, rejected 1" in summary
    assert "cannot reopen a final order" in result.stdout


async def test_target_names_are_checked_and_entries_can_be_forgotten(
    deployment: Deployment,
) -> None:
    env = deployment.env
    assert (await cli(env, "topics", "ensure")).returncode == 0
    empty = await cli(env, "target", "list")
    assert empty.returncode == 0, empty.stderr
    assert "no target is paused" in empty.stdout
    for bogus in ("kombo", "nonsense"):
        refused = await cli(env, "target", "pause", bogus)
        assert refused.returncode == 2, refused.stdout
        assert "kombo|<integration_id>, comeet" in refused.stderr
    # An entry left by a CLI that did not check names yet: listed as ignored, removable.
    control_topic = f"{deployment.events_topic}.control"
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            control_topic, b'{"paused": true, "by": "cli@old"}', key=b"kombo", partition=0
        )
    finally:
        await producer.stop()
    paused = await cli(env, "target", "pause", "kombo|workday:ACME1", "--reason", "test")
    assert paused.returncode == 0, paused.stderr
    listed = (await cli(env, "target", "list")).stdout.splitlines()
    assert [line.split()[:2] for line in listed] == [
        ["kombo", "ignored"],
        ["kombo|workday:ACME1", "paused"],
    ]
    assert "connector target forget 'kombo'" in listed[0]
    assert (await cli(env, "target", "forget", "nonsense")).returncode == 2  # never listed
    for name in ("kombo", "kombo|workday:ACME1"):
        forgotten = await cli(env, "target", "forget", name)
        assert forgotten.returncode == 0, forgotten.stderr
    assert "no target is paused" in (await cli(env, "target", "list")).stdout


async def test_output_cut_short_by_the_reader_ends_quietly(deployment: Deployment) -> None:
    """`connector audit tail | head -3`: no traceback, the shell's code for SIGPIPE."""
    env = deployment.env
    assert (await cli(env, "topics", "ensure")).returncode == 0
    audit = AuditRecord(worker_id="w1", outcome=Outcome.DELIVERED, terminal=True)
    letter = DeadLetter(worker_id="w1", code="not_json", reason="value is not valid JSON")
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap, acks="all")
    await producer.start()
    try:
        # Far more than a pipe's buffer (64 KiB) once formatted.
        for n in range(3000):
            key = f"comeet|c-{n}".encode()
            await producer.send(deployment.audit_topic, audit.model_dump_json().encode(), key=key)
            if n < 1500:
                await producer.send(
                    deployment.dlq_topic, letter.model_dump_json().encode(), key=key
                )
        await producer.flush()
    finally:
        await producer.stop()
    for command, lines in (("audit tail", 3), ("dlq list", 1)):
        shell = f"set -o pipefail; {sys.executable} -m connector.cli {command} | head -{lines}"
        run = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-c", shell],
            env=child_environment(env),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert "Traceback" not in run.stderr, run.stderr
        assert "BrokenPipeError" not in run.stderr, run.stderr
        assert len(run.stdout.splitlines()) == lines
        assert run.returncode == EXIT_BROKEN_PIPE, (command, run.returncode, run.stderr)


async def test_audit_tail_last_prints_only_the_newest_records(deployment: Deployment) -> None:
    env = deployment.env
    assert (await cli(env, "topics", "ensure")).returncode == 0
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap, acks="all")
    await producer.start()
    base = int(time.time() * 1000) - 60_000
    try:
        for n in range(40):  # spread over the 4 partitions, one millisecond apart
            outcome = Outcome.DEAD_LETTERED if n % 10 == 0 else Outcome.DELIVERED
            record = AuditRecord(
                worker_id="w1", outcome=outcome, terminal=True, order_key=f"comeet|c-{n}"
            )
            await producer.send_and_wait(
                deployment.audit_topic,
                record.model_dump_json().encode(),
                key=f"comeet|c-{n}".encode(),
                timestamp_ms=base + n,
            )
    finally:
        await producer.stop()

    async def keys(*args: str) -> list[str]:
        run = await cli(env, "audit", "tail", "--json", *args)
        assert run.returncode == 0, run.stderr
        return [json.loads(line)["order_key"] for line in run.stdout.splitlines()]

    assert await keys("--last", "3") == ["comeet|c-37", "comeet|c-38", "comeet|c-39"]
    # A filter: the newest matching records, however old.
    assert await keys("--last", "2", "--outcome", "dead_lettered") == [
        "comeet|c-20",
        "comeet|c-30",
    ]
    assert len(await keys()) == 40
    refused = await cli(env, "audit", "tail", "--last", "0")
    assert refused.returncode == 2


async def test_topics_describe_names_every_topic_and_creates_none(deployment: Deployment) -> None:
    env = deployment.env
    changelog = f"{env['CONNECTOR_APP_ID']}-orders-changelog"
    before = await cli(env, "topics", "describe")
    assert before.returncode == 0, before.stderr
    lines = before.stdout.splitlines()
    assert len(lines) == 6 and all("missing" in line for line in lines), lines
    assert f"changelog   {changelog}" in before.stdout
    admin = AIOKafkaAdminClient(bootstrap_servers=deployment.bootstrap)
    await admin.start()
    try:
        # A broker that auto-creates topics made each one on main (1 partition, no configs).
        assert deployment.events_topic not in await admin.list_topics()
    finally:
        await admin.close()
    assert (await cli(env, "topics", "ensure")).returncode == 0
    after = (await cli(env, "topics", "describe")).stdout
    assert "error_code" not in after
    assert f"events      {deployment.events_topic}" in after
    assert after.count("  4 partitions") == 4, after
    assert f"control     {deployment.events_topic}.control" in after
    assert "  1 partition\n" in after  # the control topic
    assert "missing (the first worker creates it)" in after
