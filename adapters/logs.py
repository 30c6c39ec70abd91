"""Logging of every ``oee`` process: JSON lines (or text) with the order bound, repeats damped.

While the broker is down, each Kafka client (several per process) logs the same
failed connection ten times a second; ``oee up`` relays every line, and on a small
machine that flood slows the broker's own restart. A repeated message is let through
once per interval with a count of the ones held back, so the outage stays visible.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from pythonjsonlogger.json import JsonFormatter

# Where the Kafka clients (aiokafka, under faust too) log their connection failures.
CHATTY_LOGGERS = (
    "aiokafka",
    "aiokafka.admin.client",
    "aiokafka.cluster",
    "aiokafka.conn",
    "aiokafka.consumer.consumer",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.producer.producer",
    "aiokafka.producer.sender",
)
REPEAT_EVERY_S = 10.0


class RepeatFilter(logging.Filter):
    """Pass a message (logger, level, template) at most once per ``every_s`` seconds.

    The first one after a quiet spell passes with the number held back since the last.
    """

    def __init__(
        self, every_s: float = REPEAT_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._every_s = every_s
        self._clock = clock
        # Per message: when it last passed, and how many were held back since.
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        passed = self._seen.get(key)
        if passed is not None and now - passed[0] < self._every_s:
            self._seen[key] = (passed[0], passed[1] + 1)
            return False
        self._seen[key] = (now, 0)
        if passed is not None and passed[1]:
            summary = f"(and {passed[1]} more like it in the last {now - passed[0]:.0f}s)"
            record.msg = f"{record.getMessage()} {summary}"
            record.args = None
        return True


# Bound while a process handles one order (``bind``), added to every line logged meanwhile.
ORDER_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("order_id", default=None)
CORRELATION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation_id", default=None
)


@contextlib.contextmanager
def bind(order_id: object = None, correlation_id: object = None) -> Iterator[None]:
    """Log every line inside the block with this order id and correlation id."""
    tokens = [
        (var, var.set(str(value)))
        for var, value in ((ORDER_ID, order_id), (CORRELATION_ID, correlation_id))
        if value is not None
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextFilter(logging.Filter):
    """Stamp each record with the service name and the order ids bound now."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self._service
        record.order_id = ORDER_ID.get()
        record.correlation_id = CORRELATION_ID.get()
        return True


class _Json(JsonFormatter):
    """One JSON object per line: time, level, service, logger, message, order ids."""

    def add_fields(
        self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_record, record, message_dict)
        for key in ("order_id", "correlation_id"):
            if log_record.get(key) is None:
                log_record.pop(key, None)
        log_record.pop("color_message", None)  # uvicorn's copy of the message, with colours


_TEXT = "%(asctime)s %(levelname)s %(service)s %(name)s: %(message)s"
_JSON = "%(asctime)s %(levelname)s %(service)s %(name)s %(message)s %(order_id)s %(correlation_id)s"


def configure_logging(service: str = "oee", fmt: str = "text") -> None:
    """Log INFO and up to stderr as JSON lines (``fmt="json"``) or plain lines, keep
    the Kafka clients' INFO chatter out, and damp their repeated complaints."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "text":
        handler.setFormatter(logging.Formatter(_TEXT))
    else:
        handler.setFormatter(
            _Json(
                _JSON,
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
            )
        )
    handler.addFilter(ContextFilter(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    damper = RepeatFilter()
    # A logger's filters see only the records logged to it, not to its children,
    # and they stay when faust configures its own handlers.
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).addFilter(damper)
    # Joins, rebalances and connection notices, and a line per HTTP request a client
    # makes: useful when debugging, noise otherwise.
    for name in ("aiokafka", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)


def readable(line: str) -> str:
    """Return a JSON log line as a line for a human (``oee up``); other lines unchanged."""
    if not line.startswith("{"):
        return line
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict) or "message" not in record:
        return line
    extra = " ".join(
        f"{key}={record[key]}" for key in ("order_id", "correlation_id") if key in record
    )
    text = f"{record.get('level', '')} {record.get('logger', '')}: {record['message']}"
    if "exc_info" in record:
        text += "\n" + str(record["exc_info"])
    return f"{text} [{extra}]" if extra else text
