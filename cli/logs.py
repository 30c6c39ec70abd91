"""Logging of every ``oee`` process: one line per record, repeats of a client's complaint damped.

While the broker is down, each Kafka client (several per process) logs the same
failed connection ten times a second; ``oee up`` relays every line, and on a small
machine that flood slows the broker's own restart. A repeated message is let through
once per interval with a count of the ones held back, so the outage stays visible.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

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


def configure_logging() -> None:
    """Log INFO and up to stderr, and damp the Kafka clients' repeated complaints."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    damper = RepeatFilter()
    # A logger's filters see only the records logged to it, not to its children,
    # and they stay when faust configures its own handlers.
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).addFilter(damper)
