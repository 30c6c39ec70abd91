"""The progress line that `oee bench` and `oee replay` write on stderr."""

from __future__ import annotations

import io

from cli.progress import CountProgress, ProgressLine, counted


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_counted_says_done_of_total_share_and_rate() -> None:
    line = counted("replay", 12_345, 40_000, 5.0, "events")

    assert line == "replay: 12,345 / 40,000 events (30%), 2,469 events/s"


def test_counted_nothing_to_do_has_no_share_and_no_rate() -> None:
    assert counted("replay", 0, 0, 0.0, "events") == "replay: 0 / 0 events, 0 events/s"


def test_progress_line_updates_at_most_every_interval_and_overwrites_in_place() -> None:
    out, clock = io.StringIO(), Clock()
    line = ProgressLine(out, every_s=1.0, clock=clock)

    line.update("first line")
    clock.now += 0.5
    line.update("skipped")
    clock.now += 0.5
    line.update("short")
    line.end()

    assert out.getvalue() == "\rfirst line\rshort     \n"


def test_progress_line_never_shown_ends_without_a_newline() -> None:
    out = io.StringIO()

    ProgressLine(out).end()

    assert out.getvalue() == ""


def test_count_progress_end_shows_the_last_counts_even_between_updates() -> None:
    out, clock = io.StringIO(), Clock()
    progress = CountProgress("replay", "events", ProgressLine(out, every_s=1.0, clock=clock), clock)

    clock.now += 1.0
    progress(10, 50)
    clock.now += 0.25
    progress(50, 50)  # within the interval: not written now
    progress.end()

    lines = out.getvalue().split("\r")
    assert lines[1].rstrip() == "replay: 10 / 50 events (20%), 10 events/s"
    assert lines[2] == "replay: 50 / 50 events (100%), 40 events/s\n"
