"""The Kafka clients' repeated complaints are damped, never lost."""

from __future__ import annotations

import logging

from cli.logs import RepeatFilter


def _record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, message, args, None)


def test_repeat_filter_repeats_within_interval_are_held_then_counted() -> None:
    now = 0.0
    damper = RepeatFilter(every_s=10.0, clock=lambda: now)
    template = "Unable connect to node with id %s: %s"

    passed = [damper.filter(_record(template, 1, "refused")) for _ in range(5)]
    now = 10.0
    summary = _record(template, 1, "refused")
    assert damper.filter(summary)

    assert passed == [True, False, False, False, False]
    assert summary.getMessage() == (
        "Unable connect to node with id 1: refused (and 4 more like it in the last 10s)"
    )


def test_repeat_filter_other_message_passes() -> None:
    damper = RepeatFilter(every_s=10.0, clock=lambda: 0.0)
    assert damper.filter(_record("Unable to update metadata from %s", [1]))
    assert damper.filter(_record("Failed fetch messages from %s: %s", 1, "closed"))
