"""The audit over thousands of orders' worth of log: it stays exact, and it is quick.

Each order is a SubmitOrder and the five events of a confirmed market order, written
straight to the topics and projected into both read models, as a day of trading
would leave them. One submission is never accepted: the audit must find that one
among all the records and nothing else.

2,000 orders by default; ``OEE_TEST_AUDIT_ORDERS=10000`` gives the README's figure
(``pytest tests/integration/test_audit_volume.py -s`` prints the audit's time).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaProducer

from adapters.kafka import client_options, ensure_topics
from adapters.settings import Settings
from cli.audit import run_audit
from cli.reconcile import Limits
from events.messages import Envelope, encode, order_key
from projections.analytics.handler import AnalyticsProjection
from projections.orders.handler import OrdersProjection
from services.projector.runner import MultiProjectionRunner
from tests.unit.factories import confirmed_history, submit_order

pytestmark = pytest.mark.integration

ORDERS = int(os.environ.get("OEE_TEST_AUDIT_ORDERS", "2000"))


@pytest.fixture
async def settings(settings_factory: Callable[..., Settings], fresh_database_url: str) -> Settings:
    made = settings_factory(database_url=fresh_database_url)
    await ensure_topics(made)
    return made


async def produce(settings: Settings, topic: str, messages: Sequence[Envelope]) -> None:
    """Write ``messages`` keyed by order id, awaiting delivery a batch at a time."""
    producer = AIOKafkaProducer(
        **client_options(settings), acks="all", linger_ms=20, max_batch_size=1 << 20
    )
    await producer.start()
    try:
        for start in range(0, len(messages), 5_000):
            sent = [
                await producer.send(topic, encode(m), key=order_key(m.order_id))
                for m in messages[start : start + 5_000]
            ]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def test_audit_of_thousands_of_orders_finds_the_one_lost_submission(
    settings: Settings,
) -> None:
    histories = [confirmed_history() for _ in range(ORDERS)]
    submissions = [submit_order(history[0].order_id) for history in histories]
    lost = submit_order()
    await produce(settings, settings.commands_topic, [*submissions, lost])
    await produce(settings, settings.events_topic, [e for h in histories for e in h])
    runner = MultiProjectionRunner(
        settings,
        (OrdersProjection(), AnalyticsProjection()),
        live=False,
        publish_dead_letters=False,
        max_records=5_000,
    )
    await runner.catch_up()

    started = time.monotonic()
    report = await run_audit(settings, Limits(grace=timedelta(0)))
    seconds = time.monotonic() - started
    print(f"\naudit of {ORDERS} orders ({ORDERS * 6 + 1} records): {seconds:.2f}s")

    assert [(p.kind, p.order_id) for p in report.problems] == [("not_accepted", lost.order_id)]
    assert report.coverage.commands == {"SubmitOrder": ORDERS + 1}
    assert report.coverage.events == ORDERS * 5
    assert report.coverage.orders == {"confirmed": ORDERS}
    assert report.coverage.read_models == {
        "orders": ORDERS,
        "order_events": ORDERS,
        "analytics_orders": ORDERS,
    }
    # No venue service runs here: the ledger is skipped, not failed.
    assert set(report.coverage.skipped) == {"ledger"}
