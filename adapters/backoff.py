"""Waiting for the broker or the database to come back: exponential backoff, never a tight loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

_T = TypeVar("_T")

log = logging.getLogger(__name__)


@dataclass
class Backoff:
    """Delays that double from ``first_s`` up to ``max_s`` with each failure in a row."""

    first_s: float = 0.2
    max_s: float = 5.0
    failures: int = field(default=0, init=False)

    def next_s(self) -> float:
        """Count a failure and return how long to wait before the next try."""
        delay = min(self.max_s, self.first_s * 2.0**self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        """Start again from ``first_s``: the last try succeeded."""
        self.failures = 0


async def until_reachable(
    attempt: Callable[[], Awaitable[_T]],
    transient: Callable[[Exception], bool],
    what: str,
    backoff: Backoff | None = None,
) -> _T:
    """Return ``attempt()``, trying again after a backoff while it raises an error that
    ``transient`` accepts; any other error propagates.

    Each failure is logged on one line naming what could not be reached.
    """
    backoff = backoff or Backoff(first_s=0.5)
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not transient(exc):
                raise
            delay = backoff.next_s()
            log.warning("%s is not reachable (%s); trying again in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
