"""The ``connector`` command: worker, publish, topics, audit, dlq, demo.

Configuration comes from the environment (see :mod:`connector.settings`);
flags here only select what to do and filter what to show.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector.settings import Settings, get_settings

if TYPE_CHECKING:
    from connector.ops.first_start import StartFrom

__all__ = ["EXIT_BROKEN_PIPE", "main"]

logger = logging.getLogger(__name__)

# What a shell reports for a program SIGPIPE ended (128 + 13), as for `cat big | head -1`:
# the reader stopped early, the output was not all read. `set -o pipefail` scripts see
# the same code from the connector as from any other Unix tool.
EXIT_BROKEN_PIPE = 141


def _secrets(settings: Settings) -> list[str]:
    from connector.vendors.accounts import secret_values

    # Every credential, named accounts and per-customer tokens included.
    return secret_values(settings)


def _require_broker(settings: Settings) -> None:
    if not settings.kafka.bootstrap_servers:
        raise SystemExit(
            "no Kafka configured: set KAFKA_BOOTSTRAP_SERVERS (or run `connector demo`, "
            "which starts a local broker)"
        )


def cmd_worker(args: argparse.Namespace) -> int:
    import faust

    from connector.app import create_app
    from connector.infra.kafka_clients import ensure_topics
    from connector.infra.logs import configure_logging
    from connector.infra.tracing import configure as configure_tracing
    from connector.kafka.compat import verify_libraries
    from connector.ops.check import refuse_unsafe_start
    from connector.ops.first_start import guard_first_start
    from connector.settings import otel_environment

    # First: the Kafka adapter runs only on the library versions it was verified against.
    verify_libraries()
    settings = get_settings()
    configure_logging(settings.log_level, json_lines=settings.log_json, secrets=_secrets(settings))
    # Before joining the group: e.g. an empty key against a real vendor would dead-letter
    # every event as a 401 (raises ConfigError, exit 2).
    for warning in refuse_unsafe_start(settings):
        logger.warning("%s", warning)
    _require_broker(settings)
    configure_tracing(otel_environment())
    start_from = _start_from(args, settings)
    if start_from is None:
        return 2
    asyncio.run(ensure_topics(settings))
    # After the partition check (nothing is committed for a deployment that must not run):
    # a misspelt app id would replay the whole events topic to the vendors (issue 21).
    asyncio.run(guard_first_start(settings, start_from))
    if settings.event_loop == "uvloop":
        import uvloop

        # Before the worker creates its loop (mode.Worker takes the policy's loop).
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    connector = create_app(settings)
    tune_gc(settings.gc_threshold)
    worker = faust.Worker(
        connector.app,
        loglevel=settings.log_level,
        override_logging=False,
    )
    # Faust's terminal spinner writes "\b" and the show-cursor escape (ESC [?25h) at start-up
    # even when its output is a log file or a pipe; without it Faust logs "Ready".
    worker.spinner = None
    logger.info("event loop: %s", type(worker.loop).__module__)
    worker.execute_from_commandline()
    return 0


def _start_from(args: argparse.Namespace, settings: Settings) -> StartFrom | None:
    """``--new-deployment --from X`` (or CONNECTOR_NEW_DEPLOYMENT); None: a usage error."""
    if args.new_deployment != bool(args.start_from):
        print(
            "connector worker: --new-deployment and --from go together: "
            "--new-deployment --from earliest|latest",
            file=sys.stderr,
        )
        return None
    chosen: StartFrom = args.start_from or settings.new_deployment
    return chosen


def tune_gc(threshold: int) -> None:
    """Keep Python's cyclic garbage collector from costing a third of the worker's CPU.

    What exists after start-up (modules, pydantic models, the Faust app) lives as long
    as the process: frozen, no collection scans it again. Young-generation passes run
    every ``threshold`` allocations instead of 700; the older generations keep their
    ratios (10, 10), so full collections stay as rare relative to young ones as before.
    """
    gc.freeze()
    gc.set_threshold(threshold, 10, 10)


def cmd_topics(args: argparse.Namespace) -> int:
    from aiokafka.errors import for_code

    from connector.infra.kafka_clients import admin_client, ensure_topics
    from connector.infra.topics import changelog_topic, definitions

    if args.action == "generate":
        from connector.ops.schemas import write

        for path in write(Path(args.dir)):
            print(f"wrote {path}")
        return 0
    settings = get_settings()
    _require_broker(settings)
    if args.action == "migrate":
        from connector.ops.migrate import migrate

        if args.partitions is None or args.partitions < 1:
            print("connector topics migrate: give --partitions N (N >= 1)", file=sys.stderr)
            return 2
        return asyncio.run(
            migrate(
                settings,
                args.partitions,
                partitioner=args.partitioner,
                dry_run=args.dry_run,
                out=sys.stdout,
                err=sys.stderr,
            )
        )
    if args.action == "ensure":
        created = asyncio.run(ensure_topics(settings))
        for d in definitions(settings):
            state = "created" if d in created else "exists"
            print(f"{d.name:<32} {d.partitions:>3} partitions  {state}")
        return 0

    changelog = changelog_topic(settings)
    rows = [(d.role, d.name) for d in definitions(settings)] + [("changelog", changelog)]

    async def describe() -> list[Any]:
        admin = admin_client(settings)
        await admin.start()
        try:
            # Only topics that exist: a metadata request naming a missing topic makes a
            # broker with auto.create.topics.enable create it (1 partition, no configs).
            existing = set(await admin.list_topics())
            wanted = [name for _, name in rows if name in existing]
            return list(await admin.describe_topics(wanted)) if wanted else []
        finally:
            await admin.close()

    found = {topic["topic"]: topic for topic in asyncio.run(describe())}
    for role, name in rows:
        topic = found.get(name, {})
        code = topic.get("error_code", 3)
        if code == 0:
            count = len(topic.get("partitions", []))
            state = f"{count:>3} partition{'' if count == 1 else 's'}"
        elif code == 3:  # UNKNOWN_TOPIC_OR_PARTITION
            maker = (
                "the first worker creates it" if role == "changelog" else "connector topics ensure"
            )
            state = f"missing ({maker})"
        else:
            state = f"error: {for_code(code).__name__}"
        print(f"{role:<11} {name:<40} {state}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from connector.domain.events import parse_value
    from connector.errors import InvalidEventError
    from connector.infra.kafka_clients import producer

    settings = get_settings()
    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        text = raw.decode("utf-8").strip()
        documents: list[Any] = json.loads(text) if text.startswith("[") else [json.loads(text)]
    except OSError as exc:
        print(f"connector publish: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = "stdin" if args.file == "-" else args.file
        print(f"connector publish: {where} is not valid JSON: {exc}", file=sys.stderr)
        return 2
    records: list[tuple[bytes, bytes]] = []
    for index, document in enumerate(documents):
        value = json.dumps(document).encode()
        try:
            event = parse_value(value, max_bytes=settings.kafka.max_message_bytes)
            key = event.key.encode()
        except Exception as exc:
            reason = exc.reason if isinstance(exc, InvalidEventError) else str(exc)
            print(f"event #{index} is invalid: {reason}", file=sys.stderr)
            return 2
        if event.unknown_fields:
            # Accepted and never sent (README "Compatibility rules"), but worth a word.
            fields = ", ".join(event.unknown_fields)
            print(f"event #{index}: unknown fields, ignored: {fields}", file=sys.stderr)
        records.append((key, value))
    _require_broker(settings)

    async def send() -> None:
        prod = producer(settings)
        await prod.start()
        try:
            for n, (key, value) in enumerate(records, 1):
                meta = await prod.send_and_wait(settings.topics.events, value, key=key)
                print(
                    f"published {key.decode()} -> partition {meta.partition} "
                    f"offset {meta.offset} ({n}/{len(records)})"
                )
        finally:
            await prod.stop()

    asyncio.run(send())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from connector.infra.logs import configure_logging
    from connector.ops.demo import run_demo

    settings = get_settings()
    configure_logging("WARNING", json_lines=False, secrets=_secrets(settings))
    return run_demo(settings, orders=args.orders, workers=args.workers)


def cmd_audit(args: argparse.Namespace) -> int:
    from connector.ops.audit_view import tail_command

    settings = get_settings()
    _require_broker(settings)
    return tail_command(settings, args)


def cmd_dlq(args: argparse.Namespace) -> int:
    from connector.ops.dlq import dlq_command

    settings = get_settings()
    _require_broker(settings)
    return dlq_command(settings, args)


def cmd_order(args: argparse.Namespace) -> int:
    from connector.ops.order_view import show_command

    settings = get_settings()
    _require_broker(settings)
    return show_command(settings, args)


def cmd_target(args: argparse.Namespace) -> int:
    from connector.ops.control import forget, read_control, set_paused, target_forms, target_problem

    settings = get_settings()
    if args.action in ("pause", "resume", "forget"):
        if not args.target:
            forms = " or ".join(target_forms())
            print(f"connector: give the target: {forms}, e.g. kombo|workday:ACME1", file=sys.stderr)
            return 2
        problem = target_problem(args.target)
        if problem and args.action == "pause":
            # Checked before anything is written: a bogus name would pause nothing.
            print(f"connector: {problem}", file=sys.stderr)
            return 2
        _require_broker(settings)
        if problem and args.target not in asyncio.run(read_control(settings)):
            # resume and forget also take a listed entry that is not a target (written
            # before names were checked), so that it can be removed.
            print(f"connector: {problem}", file=sys.stderr)
            return 2
        if args.action == "forget":
            asyncio.run(forget(settings, args.target, args.reason or ""))
            print(f"{args.target} forgotten: resumed on every worker, removed from the list")
            return 0
        paused = args.action == "pause"
        asyncio.run(set_paused(settings, args.target, paused, args.reason or ""))
        print(f"{args.target} {'paused' if paused else 'resumed'} on every worker")
        return 0
    _require_broker(settings)
    state = asyncio.run(read_control(settings))
    if not state and not args.json:
        print("no target is paused (connector target pause comeet, or kombo|<integration_id>)")
    for control in sorted(state.values(), key=lambda c: c.target):
        if args.json:
            print(json.dumps({"target": control.target, **json.loads(control.to_json())}))
        else:
            status = "paused" if control.paused else "active"
            if target_problem(control.target):
                status = "ignored"
                control = replace(
                    control, reason=f"not a target: connector target forget '{control.target}'"
                )
            print(
                f"{control.target:<40} {status:<7} {control.time:<32} {control.by} {control.reason}"
            )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from connector.ops.check import run_checks

    return run_checks()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="connector", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run a worker (join the consumer group)")
    worker.add_argument(
        "--new-deployment",
        action="store_true",
        help="this app id is new: start it even though other groups read the events topic",
    )
    worker.add_argument(
        "--from",
        dest="start_from",
        choices=["earliest", "latest"],
        help="with --new-deployment: every retained event, or only those published from now",
    )
    worker.set_defaults(func=cmd_worker)

    topics = sub.add_parser(
        "topics",
        help="create, describe or migrate the connector's topics (migrate: new partition count)",
    )
    topics.add_argument("action", choices=["ensure", "describe", "generate", "migrate"])
    topics.add_argument("--dir", default="topics", help="with generate: where to write")
    topics.add_argument(
        "--partitions", type=int, help="with migrate: the new partition count (stopped workers)"
    )
    topics.add_argument(
        "--partitioner",
        choices=["murmur2", "crc32"],
        default="murmur2",
        help="with migrate: the producers' (murmur2: Java, aiokafka; crc32: librdkafka default)",
    )
    topics.add_argument(
        "--dry-run", action="store_true", help="with migrate: say what it would do, change nothing"
    )
    topics.set_defaults(func=cmd_topics)

    publish = sub.add_parser("publish", help="validate and publish events (JSON or JSON list)")
    publish.add_argument("file", help="path, or - for stdin")
    publish.set_defaults(func=cmd_publish)

    demo = sub.add_parser("demo", help="run the whole connector locally with sample events")
    demo.add_argument("--orders", type=int, default=30)
    demo.add_argument("--workers", type=int, default=2)
    demo.set_defaults(func=cmd_demo)

    # The arguments of audit, dlq and order live next to their commands.
    from connector.ops.audit_view import add_tail_arguments
    from connector.ops.dlq import add_dlq_arguments
    from connector.ops.order_view import add_show_arguments

    audit = sub.add_parser("audit", help="read the audit topic")
    add_tail_arguments(audit)
    audit.set_defaults(func=cmd_audit)

    dlq = sub.add_parser("dlq", help="list or replay dead letters (open or replayed)")
    add_dlq_arguments(dlq)
    dlq.set_defaults(func=cmd_dlq)

    order = sub.add_parser("order", help="one order's state and audit timeline")
    add_show_arguments(order)
    order.set_defaults(func=cmd_order)

    from connector.vendors import registry as vendor_registry

    nouns = ", or ".join(vendor_registry.target_nouns())
    tgt = sub.add_parser("target", help=f"pause, resume, forget or list targets ({nouns})")
    tgt.add_argument("action", choices=["pause", "resume", "forget", "list"])
    tgt.add_argument("target", nargs="?", help=" or ".join(vendor_registry.limit_key_forms()))
    tgt.add_argument("--reason", help="why (goes to the audit trail)")
    tgt.add_argument("--json", action="store_true")
    tgt.set_defaults(func=cmd_target)

    sub.add_parser(
        "check",
        help="validate the configuration, reach the broker, check topics and vendor credentials",
    ).set_defaults(func=cmd_check)

    from connector.ops.cli_help import document

    document(parser)  # plain text, and the variables each command reads
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from aiokafka.errors import KafkaError

    from connector.errors import ConfigurationError
    from connector.infra.config_errors import ConfigError, load_settings, unknown_variables
    from connector.infra.logs import configure_logging

    args = build_parser().parse_args(argv)
    if args.command == "check":
        return int(args.func(args))  # reports configuration problems itself, one per line
    try:
        settings = load_settings()
    except ConfigError as exc:
        for line in exc.lines:
            print(f"connector: configuration error: {line}", file=sys.stderr)
        return 2
    if args.command != "worker":  # the worker logs them (JSON lines)
        for warning in unknown_variables():
            print(f"connector: warning: {warning}", file=sys.stderr)
    if args.command not in ("worker", "demo"):
        configure_logging("WARNING", json_lines=False, secrets=_secrets(settings))
    try:
        result: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
    except BrokenPipeError:
        # The reader went away (`connector audit tail | head -3`): stop quietly. Python's
        # recipe: point stdout at /dev/null, so the flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KafkaError as exc:
        # aiokafka logs the cause (e.g. authentication failed) just above; one line here.
        print(f"connector: Kafka error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        for line in exc.lines:
            print(f"connector: configuration error: {line}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        # e.g. partition counts that disagree (topics ensure, worker): refuse, say why.
        print(f"connector: configuration error: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
