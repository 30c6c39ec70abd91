"""The refusal to start on topics with another partition count names the fix."""

from __future__ import annotations

from adapters.kafka import mismatch_message


def test_topics_of_one_other_count_name_the_setting_that_runs_on_them():
    message = mismatch_message({"orders.commands": 6, "orders.events": 6}, 12)

    assert "orders.commands has 6, orders.events has 6" in message
    assert "configured OEE_PARTITIONS=12" in message
    assert "set OEE_PARTITIONS=6" in message
    # And how to change the count instead: new topics, never the old ones resized.
    assert "new topics with the new count" in message
    assert "Choosing the partition count" in message


def test_topics_that_disagree_among_themselves_have_no_setting_that_fits():
    message = mismatch_message({"orders.commands": 6, "orders.events": 12}, 6)

    assert "orders.events has 12" in message
    assert "orders.commands has" not in message
    assert "no OEE_PARTITIONS fits" in message
    assert "set OEE_PARTITIONS=" not in message
