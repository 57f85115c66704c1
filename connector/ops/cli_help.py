"""Plain-text ``--help`` for every ``connector`` command, with the variables it reads.

Help text comes from docstrings and argument help written for Sphinx too;
``--help`` must not show ``:mod:`x``` or ````x````, so every text is made
plain here. Each command's help ends with the environment variables it reads,
expanded from the settings model (:func:`connector.infra.config_errors.known_variables`),
so a new setting shows up without editing this file.
"""

from __future__ import annotations

import argparse
import logging
import re

from connector.infra.config_errors import known_variables

__all__ = ["COMMAND_VARIABLES", "document", "plain", "variables_for"]

logger = logging.getLogger(__name__)

# How every command reaches Kafka.
_KAFKA = ("KAFKA_BOOTSTRAP_SERVERS", "CONNECTOR_KAFKA__")
_ALL = ("KAFKA_BOOTSTRAP_SERVERS", "CONNECTOR_")
_OTEL = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_SERVICE_NAME")

# Command -> variable names or prefixes (a prefix ends with "_" or "__").
COMMAND_VARIABLES: dict[str, tuple[str, ...]] = {
    "worker": (*_ALL, *_OTEL),
    "check": (*_ALL, *_OTEL),
    "topics": (*_KAFKA, "CONNECTOR_APP_ID", "CONNECTOR_TOPICS__"),
    "publish": (*_KAFKA, "CONNECTOR_TOPICS__EVENTS"),
    "demo": (
        "CONNECTOR_APP_ID",
        "CONNECTOR_TOPICS__",
        "CONNECTOR_DATA_DIR",
        "CONNECTOR_STORE",
        "CONNECTOR_KOMBO__API_KEY",
        "CONNECTOR_COMEET__TOKEN",
    ),
    "audit": (*_KAFKA, "CONNECTOR_TOPICS__AUDIT", "CONNECTOR_TOPICS__PARTITIONS"),
    "order": (
        *_KAFKA,
        "CONNECTOR_APP_ID",
        "CONNECTOR_TOPICS__",
    ),
    "dlq": (*_KAFKA, "CONNECTOR_TOPICS__DEAD_LETTER", "CONNECTOR_TOPICS__EVENTS"),
    "target": (
        *_KAFKA,
        "CONNECTOR_TOPICS__CONTROL",
        "CONNECTOR_TOPICS__EVENTS",
        "CONNECTOR_WORKER_ID",
    ),
}

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def plain(text: str | None) -> str | None:
    """``text`` without reStructuredText roles and literals."""
    if not text:
        return text
    return _LITERAL.sub(r"\1", _ROLE.sub(r"\1", text))


def variables_for(command: str) -> list[str]:
    """The variables ``command`` reads, in the settings' order (``<NAME>``: yours to pick)."""
    wanted = COMMAND_VARIABLES.get(command, _ALL)
    names = ["KAFKA_BOOTSTRAP_SERVERS", *known_variables(), *_OTEL]
    chosen = []
    for name in names:
        if any(name == w or (w.endswith("_") and name.startswith(w)) for w in wanted):
            shown = name.replace("*", "<NAME>")
            # A group's own variable (CONNECTOR_KAFKA as JSON) adds nothing to its members.
            if shown not in chosen and not _is_group(name, names):
                chosen.append(shown)
    return chosen


def _is_group(name: str, names: list[str]) -> bool:
    return any(other.startswith(name + "__") for other in names)


def _epilog(command: str) -> str:
    lines = "\n".join(f"  {name}" for name in variables_for(command))
    return (
        f"environment variables read (README 'Configuration'; a secret may come from "
        f"<NAME>_FILE):\n{lines}"
    )


def _plain_actions(parser: argparse.ArgumentParser) -> None:
    parser.description = plain(parser.description)
    for action in parser._actions:
        action.help = plain(action.help)


def document(parser: argparse.ArgumentParser) -> None:
    """Make every help text plain and list each command's variables under its ``--help``."""
    _plain_actions(parser)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "Configuration comes from environment variables only; `connector COMMAND --help` "
        "lists those the command reads, `connector check` validates them."
    )
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        summaries = {a.dest: a.help for a in action._choices_actions}
        for command, sub in action.choices.items():
            _plain_actions(sub)
            sub.description = sub.description or plain(summaries.get(command))
            sub.epilog = _epilog(command)
            sub.formatter_class = argparse.RawDescriptionHelpFormatter
