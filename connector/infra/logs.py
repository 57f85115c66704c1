"""Structured JSON logs that never carry a secret.

Every line is one JSON object (``time``, ``level``, ``logger``, ``message``).
A line logged while a delivery job runs also carries the event it is about:
``event_id``, ``order_key``, ``partition``, ``offset`` (of the input record)
and ``trace_id`` when the record came with a W3C ``traceparent``, filled by
:class:`EventContextFilter` from the job's context (:mod:`connector.domain.context`);
``extra`` given to a call wins. As a last line of defence,
:class:`RedactingFilter` masks the configured secret values in any message,
argument or traceback text before it is formatted.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

from connector.domain.context import CURRENT

__all__ = [
    "EventContextFilter",
    "FaustNoiseFilter",
    "JsonFormatter",
    "RedactingFilter",
    "RepeatFilter",
    "TextFormatter",
    "configure_logging",
]

logger = logging.getLogger(__name__)

MASK = "**********"
_CONTEXT_FIELDS = (
    "event_id",
    "order_key",
    "partition",
    "offset",
    "trace_id",
    "vendor",
    "worker_id",
)


class EventContextFilter(logging.Filter):
    """Adds the current job's event to the record (fields given through ``extra`` win).

    A filter, not the formatter, reads the context: it runs in the task that
    logs, the one whose context holds the job's event.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = CURRENT.get()
        if ctx is None:
            return True
        fields = record.__dict__
        fields.setdefault("event_id", ctx.event_id)
        fields.setdefault("order_key", ctx.order_key)
        fields.setdefault("partition", ctx.partition)
        fields.setdefault("offset", ctx.offset)
        if ctx.traceparent is not None:
            fields.setdefault("trace_id", ctx.traceparent[3:35])
        return True


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            record.msg = self._mask(record.getMessage())
            record.args = None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = self._mask(record.exc_text)
                record.exc_info = None
        return True


class RepeatFilter(logging.Filter):
    """At most ``limit`` lines per message template and logger in each window.

    A broker outage makes aiokafka log the same connection error thousands of
    times a second; the first lines say all there is, and the next window's
    first line says how many were dropped.
    """

    def __init__(self, limit: int = 5, window_s: float = 10.0) -> None:
        super().__init__()
        self._limit = limit
        self._window_s = window_s
        self._seen: dict[tuple[str, object], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        entry = self._seen.get(key)
        if entry is None or record.created - entry[0] >= self._window_s:
            suppressed = int(entry[2]) if entry else 0
            self._seen[key] = [record.created, 1.0, 0.0]
            if len(self._seen) > 10_000:  # bounded: forget old templates
                self._seen.clear()
            if suppressed:
                record.msg = f"{record.getMessage()} (+{suppressed} similar suppressed)"
                record.args = None
            return True
        entry[1] += 1
        if entry[1] <= self._limit:
            return True
        entry[2] += 1
        return False


class FaustNoiseFilter(logging.Filter):
    """Drops Faust's warnings that say nothing about this connector's health.

    "Missing sensor state for rebalance" (and "... rebalance end"), on every rebalance:
    Faust keeps one state per sensor and warns when the set is empty. The connector
    removes Faust's only sensor, its Monitor (connector/app.py; its own metrics replace
    it), so the set is always empty and the warning only says that no sensor wanted to
    hear about the rebalance. Nothing is skipped but calls to sensors that do not exist.
    """

    _NOISE = ("]: Missing sensor state for rebalance",)

    def filter(self, record: logging.LogRecord) -> bool:
        # Faust's app logs through mode's service logger, named after the module of the
        # app's class (connector.app here), with a "[^-Name]: " prefix: match the text.
        message = str(record.msg)
        return not (message.startswith("[^") and any(n in message for n in self._NOISE))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                payload[name] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exception"] = record.exc_text
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """Plain lines (``CONNECTOR_LOG_JSON=false``), with the event's fields appended."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        # Before any traceback, which format() appends after this.
        line = super().formatMessage(record)
        extra = [
            f"{name}={value}"
            for name in _CONTEXT_FIELDS
            if (value := getattr(record, name, None)) is not None
        ]
        return f"{line} [{' '.join(extra)}]" if extra else line


def configure_logging(level: str, *, json_lines: bool, secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(FaustNoiseFilter())
    handler.addFilter(RepeatFilter())
    handler.addFilter(EventContextFilter())
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO: one line per event is noise and ~3% of CPU.
    logging.getLogger("httpx").setLevel(max(root.level, logging.WARNING))
