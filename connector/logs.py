"""Structured JSON logs that never carry a secret.

Every line is one JSON object (``time``, ``level``, ``logger``, ``message``,
plus ``event_id`` / ``order_key`` when given through ``extra``). As a last line
of defence, :class:`RedactingFilter` masks the configured secret values in
any message, argument or traceback text before it is formatted.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

__all__ = ["JsonFormatter", "RedactingFilter", "RepeatFilter", "configure_logging"]

MASK = "**********"
_CONTEXT_FIELDS = ("event_id", "order_key", "vendor", "worker_id")


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


def configure_logging(level: str, *, json_lines: bool, secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(RepeatFilter())
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO: one line per event is noise and ~3% of CPU.
    logging.getLogger("httpx").setLevel(max(root.level, logging.WARNING))
