"""Waiting for the broker or the database: backoff, and which errors are worth a retry."""

from __future__ import annotations

import pytest
from aiokafka.errors import InvalidReplicationFactorError, KafkaConnectionError

from adapters.backoff import Backoff, until_reachable
from adapters.kafka import broker_unreachable


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(first_s=0.5, max_s=3.0)
    assert [backoff.next_s() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next_s() == 0.5


async def test_until_reachable_retries_transient_errors_then_returns() -> None:
    failures = [KafkaConnectionError("down"), KafkaConnectionError("still down")]

    async def attempt() -> str:
        if failures:
            raise failures.pop(0)
        return "up"

    result = await until_reachable(attempt, broker_unreachable, "Kafka", Backoff(first_s=0.001))

    assert result == "up"
    assert failures == []


async def test_until_reachable_other_error_propagates_at_once() -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise InvalidReplicationFactorError("3 > 1 broker")

    with pytest.raises(InvalidReplicationFactorError):
        await until_reachable(attempt, broker_unreachable, "Kafka", Backoff(first_s=0.001))
    assert calls == 1
