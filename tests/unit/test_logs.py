"""The Kafka clients' repeated complaints are damped, never lost."""

from __future__ import annotations

import json
import logging

import pytest

from adapters.logs import RepeatFilter, bind, configure_logging, readable


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


def test_json_lines_carry_the_service_and_the_order_bound_while_handling_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("engine", "json")
    try:
        with bind(order_id="o-1", correlation_id="c-1"):
            logging.getLogger("services.engine.processor").warning("step %s", "failed")
        logging.getLogger("services.engine.processor").warning("between orders")
    finally:
        logging.getLogger().handlers.clear()

    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert first["service"] == "engine"
    assert first["level"] == "WARNING"
    assert first["logger"] == "services.engine.processor"
    assert first["message"] == "step failed"
    assert (first["order_id"], first["correlation_id"]) == ("o-1", "c-1")
    assert "order_id" not in second
    assert second["message"] == "between orders"


def test_readable_shows_a_json_line_for_a_human_and_leaves_other_lines() -> None:
    line = json.dumps(
        {"time": "t", "level": "INFO", "logger": "a.b", "message": "hello", "order_id": "o-1"}
    )
    assert readable(line) == "INFO a.b: hello [order_id=o-1]"
    assert readable("plain text") == "plain text"
    assert readable('{"not": "a log line"}') == '{"not": "a log line"}'
