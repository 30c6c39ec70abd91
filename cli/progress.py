"""A progress line on stderr, rewritten in place while a long command runs.

``oee bench`` and ``oee replay`` show one: the same line is written again with a
carriage return, so a terminal shows the latest figures only, and the command ends
it with a newline before it prints its result on stdout.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class ProgressLine:
    """One line on ``stream`` (stderr by default), rewritten at most every ``every_s``."""

    def __init__(
        self,
        stream: TextIO | None = None,
        every_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._every_s = every_s
        self._clock = clock
        self._shown_at: float | None = None
        self._width = 0

    def show(self, text: str) -> None:
        """Write ``text`` over the line now."""
        # Padded to the longest line yet, so a shorter one leaves nothing behind.
        self._width = max(self._width, len(text))
        stream = self._stream or sys.stderr
        print(f"\r{text.ljust(self._width)}", end="", file=stream, flush=True)
        self._shown_at = self._clock()

    def update(self, text: str) -> None:
        """Write ``text`` over the line unless it was written less than ``every_s`` ago."""
        if self._shown_at is None or self._clock() - self._shown_at >= self._every_s:
            self.show(text)

    def end(self, text: str | None = None) -> None:
        """Write ``text`` (when given), then end the line if anything was written."""
        if text is not None:
            self.show(text)
        if self._shown_at is not None:
            print(file=self._stream or sys.stderr, flush=True)
            self._shown_at = None
            self._width = 0


def counted(label: str, done: int, total: int, seconds: float, unit: str) -> str:
    """Return ``label: 12,345 / 40,000 events (31%), 2,100 events/s``."""
    share = f" ({100 * done // total}%)" if total > 0 else ""
    rate = done / seconds if seconds > 0 else 0.0
    return f"{label}: {done:,} / {total:,} {unit}{share}, {rate:,.0f} {unit}/s"


class CountProgress:
    """A progress line of counts, ``counted``: call it with (done, total) as work goes on."""

    def __init__(
        self,
        label: str,
        unit: str,
        line: ProgressLine | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._label = label
        self._unit = unit
        self._line = line or ProgressLine(every_s=0.5, clock=clock)
        self._clock = clock
        self._started = clock()
        self._last: tuple[int, int] | None = None

    def __call__(self, done: int, total: int) -> None:
        self._last = (done, total)
        self._line.update(self._text(done, total))

    def end(self) -> None:
        """Show the last counts, then end the line."""
        self._line.end(None if self._last is None else self._text(*self._last))

    def _text(self, done: int, total: int) -> str:
        return counted(self._label, done, total, self._clock() - self._started, self._unit)
