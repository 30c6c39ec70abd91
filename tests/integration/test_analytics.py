"""The analytics projection on a real PostgreSQL (and, once, a real broker).

Ten orders (three of them limit orders) with hand-computed figures are folded in,
with duplicates and stale redeliveries, and ``analytics(conn)`` must answer
exactly the figures worked out by hand below.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from adapters.kafka import client_options, ensure_topics
from adapters.postgres import Connection, connect
from adapters.settings import Settings
from cli.analytics import main as report_main
from events.messages import Event, encode, order_key
from projections.analytics.handler import AnalyticsProjection
from projections.analytics.queries import analytics
from projections.batch import decode_records
from projections.contract import LogRecord, ensure_schema
from services.projector.main import project_all
from tests.unit.test_analytics_projection import T0, OrderBuilder

pytestmark = pytest.mark.integration


def orders() -> dict[str, OrderBuilder]:
    """Return the ten orders, each starting a second after the one before."""

    def new(index: int, token_in: str, token_out: str, amount: str, **limit: Any) -> OrderBuilder:
        return OrderBuilder(
            token_in, token_out, amount, start=T0 + timedelta(seconds=index), **limit
        )

    return {
        # Confirmed on raydium 100 ms after submission.
        "a": new(0, "SOL", "USDC", "1.5").through_submission("raydium", "10.00").confirmed(300),
        # Slipped once, re-routed to raydium, confirmed 300 ms after the second
        # submission (3400 ms after the first, which must not count).
        "b": new(1, "USDC", "SOL", "250")
        .through_submission("raydium", "12.50")
        .attempt_failed(2200, "SLIPPAGE_EXCEEDED")
        .routed(3200, "raydium", "20.00")
        .built(3250)
        .submitted(3300)
        .confirmed(3600),
        # Confirmed on raydium 800 ms after submission; meteora gave no quote.
        "c": new(2, "SOL", "USDC", "2.25").through_submission("raydium", None).confirmed(1000),
        # Confirmed on meteora 250 ms after submission.
        "d": new(3, "SOL", "USDC", "0.5").through_submission("meteora", "5.50").confirmed(450),
        # Slipped on raydium, then twice on meteora: failed there for good.
        "e": new(4, "USDC", "JUP", "100")
        .through_submission("raydium", "3.00")
        .attempt_failed(2200, "SLIPPAGE_EXCEEDED")
        .routed(3200, "meteora", "7.25")
        .built(3250)
        .submitted(3300)
        .attempt_failed(5300, "SLIPPAGE_EXCEEDED")
        .routed(6300, "meteora", "8.75")
        .built(6350)
        .submitted(6400)
        .failed(8400, "SLIPPAGE_EXCEEDED"),
        # No venue quoted: failed before routing.
        "f": new(5, "BONK", "SOL", "1000000").failed(200, "NO_ROUTE"),
        # Submitted on meteora, not confirmed yet.
        "g": new(6, "SOL", "USDC", "4").through_submission("meteora", "1.25"),
        # A limit order: armed, triggered, confirmed on meteora 250 ms after submission;
        # meteora's was the only quote.
        "h": new(7, "USDC", "RAY", "40", limit_price="2.5")
        .armed(50)
        .triggered(80, "2.45", "meteora")
        .through_submission("meteora", None)
        .confirmed(450),
        # A limit order cancelled while armed: never routed.
        "i": new(8, "SOL", "USDC", "1", limit_price="1000").armed(50).cancelled(5000),
        # A limit order routed to raydium (no runner-up), slipped, armed again when the
        # re-quote missed its limit, then expired.
        "j": new(9, "USDC", "SOL", "100", limit_price="120", expires_in_ms=9000)
        .armed(50)
        .triggered(80)
        .through_submission("raydium", None)
        .attempt_failed(2200, "SLIPPAGE_EXCEEDED")
        .armed(2300, "price moved away")
        .expired(9000),
    }


EXPECTED: dict[str, Any] = {
    "venues": [
        {
            "venue": "meteora",
            # d and h (confirmed), e (failed: its latest routing was meteora), g (in flight).
            "ordersRouted": 4,
            "confirmed": 2,
            "failed": 1,
            "cancelled": 0,
            "expired": 0,
            "fillRate": "0.6667",  # 2 / (2 + 1)
            "volumeIn": {"SOL": "0.5", "USDC": "40"},  # d; h
            # d's and h's 250 ms: every statistic of [250, 250] is 250.
            "confirmLatencyMs": {"avg": "250.0", "p50": "250.0", "p99": "250.0"},
            # (d 5.50 + e 8.75 (its latest routing) + g 1.25) / 3 = 15.50 / 3 = 5.1666...;
            # h had no runner-up.
            "priceImprovementBps": {"avg": "5.17"},
            "failureReasons": {"SLIPPAGE_EXCEEDED": 1},  # e's final failure only
        },
        {
            "venue": "raydium",
            # a, b, c, and j (routed before it was armed again); e's first routing here
            # does not count.
            "ordersRouted": 4,
            "confirmed": 3,
            "failed": 0,
            "cancelled": 0,
            "expired": 1,  # j
            "fillRate": "1.0000",  # 3 / (3 + 0): j's expiry is no failed execution
            "volumeIn": {"SOL": "3.75", "USDC": "250"},  # a 1.5 + c 2.25; b 250
            # [100, 300, 800]: avg 1200 / 3 = 400; p50 the middle one; p99 by linear
            # interpolation at 0.99 * (3 - 1) = 1.98: 300 + 0.98 * (800 - 300) = 790.
            "confirmLatencyMs": {"avg": "400.0", "p50": "300.0", "p99": "790.0"},
            # (a 10.00 + b 20.00 (its latest routing)) / 2; c and j had no runner-up.
            "priceImprovementBps": {"avg": "15.00"},
            "failureReasons": {},
        },
    ],
    "pairs": [
        {
            "pair": "BONK/SOL",  # f
            "ordersRouted": 0,
            "confirmed": 0,
            "failed": 1,
            "cancelled": 0,
            "expired": 0,
            "fillRate": "0.0000",  # 0 / (0 + 1)
            "volumeIn": {},
            "confirmLatencyMs": {"avg": None, "p50": None, "p99": None},
            "priceImprovementBps": {"avg": None},
            "failureReasons": {"NO_ROUTE": 1},
        },
        {
            "pair": "JUP/USDC",  # e
            "ordersRouted": 1,
            "confirmed": 0,
            "failed": 1,
            "cancelled": 0,
            "expired": 0,
            "fillRate": "0.0000",  # 0 / (0 + 1)
            "volumeIn": {},
            "confirmLatencyMs": {"avg": None, "p50": None, "p99": None},
            "priceImprovementBps": {"avg": "8.75"},
            "failureReasons": {"SLIPPAGE_EXCEEDED": 1},
        },
        {
            "pair": "RAY/USDC",  # h
            "ordersRouted": 1,
            "confirmed": 1,
            "failed": 0,
            "cancelled": 0,
            "expired": 0,
            "fillRate": "1.0000",  # 1 / (1 + 0)
            "volumeIn": {"USDC": "40"},
            "confirmLatencyMs": {"avg": "250.0", "p50": "250.0", "p99": "250.0"},
            "priceImprovementBps": {"avg": None},
            "failureReasons": {},
        },
        {
            "pair": "SOL/USDC",  # a, b, c, d, g, i, j: both directions
            "ordersRouted": 6,  # all but i, cancelled while armed
            "confirmed": 4,
            "failed": 0,
            "cancelled": 1,  # i
            "expired": 1,  # j
            "fillRate": "1.0000",  # 4 / (4 + 0); g is in flight, i and j count in neither
            # a 1.5 + c 2.25 + d 0.5 = 4.25 SOL; b 250 USDC
            "volumeIn": {"SOL": "4.25", "USDC": "250"},
            # [100, 250, 300, 800]: avg 1450 / 4 = 362.5;
            # p50 at 0.5 * 3 = 1.5: 250 + 0.5 * (300 - 250) = 275;
            # p99 at 0.99 * 3 = 2.97: 300 + 0.97 * (800 - 300) = 785.
            "confirmLatencyMs": {"avg": "362.5", "p50": "275.0", "p99": "785.0"},
            # (a 10.00 + b 20.00 + d 5.50 + g 1.25) / 4 = 36.75 / 4 = 9.1875, half up;
            # c and j had no runner-up.
            "priceImprovementBps": {"avg": "9.19"},
            "failureReasons": {},
        },
    ],
}
# Every event of the ten orders, once: a..g 43 as before, h 7, i 3, j 9.
EVENTS = 62


def records_of(events: list[Event]) -> list[LogRecord]:
    return [
        LogRecord("orders.events", 0, i, order_key(e.order_id), encode(e), 0)
        for i, e in enumerate(events)
    ]


def interleaved(histories: list[list[Event]]) -> list[Event]:
    """Round-robin the orders' events, each order's in sequence (as partitions deliver)."""
    return [e for row in itertools.zip_longest(*histories) for e in row if e is not None]


@pytest.fixture
async def settings(settings_factory: Callable[..., Settings], fresh_database_url: str) -> Settings:
    """Return settings with fresh topics and a database of their own."""
    made = settings_factory(database_url=fresh_database_url, partitions=3)
    await ensure_topics(made)
    return made


@pytest.fixture
async def conn(settings: Settings) -> AsyncIterator[Connection]:
    connection = await connect(settings)
    await ensure_schema(connection, AnalyticsProjection())
    yield connection
    await connection.close()


async def apply(conn: Connection, events: list[Event]) -> tuple[int, int, int]:
    async with conn.transaction():
        result = await AnalyticsProjection().apply(conn, decode_records(records_of(events)))
    return result.applied, result.skipped, len(result.rejected)


async def rows(conn: Connection) -> list[str]:
    cur = await conn.execute("SELECT t::text FROM analytics_orders t ORDER BY order_id")
    return [row[0] for row in await cur.fetchall()]


# Through AnalyticsProjection.apply ------------------------------------------------------


async def test_analytics_hand_computed_orders_with_redeliveries_give_hand_computed_figures(
    conn: Connection,
) -> None:
    o = orders()
    every = [e for order in o.values() for e in order.events]
    # e's events each delivered twice in a row, and a's routing again at the end.
    first = [
        *[e for e in every if e.order_id != o["e"].order_id],
        *[e for e in o["e"].events for _ in range(2)],
        o["a"].events[1],
    ]
    # A later redelivery: all of d again, and b's first submission.
    later = [*o["d"].events, o["b"].events[3]]

    assert await apply(conn, first) == (EVENTS, len(o["e"].events) + 1, 0)
    assert await apply(conn, later) == (0, len(o["d"].events) + 1, 0)

    assert await analytics(conn) == EXPECTED


async def test_analytics_rebuilt_in_other_batches_yields_identical_rows(conn: Connection) -> None:
    histories = [order.events for order in orders().values()]
    await apply(conn, [e for h in histories for e in h])
    before = await rows(conn)

    projection = AnalyticsProjection()
    await conn.execute(projection.drop_ddl())
    await conn.execute(projection.ddl())
    events = interleaved(histories)
    for start in range(0, len(events), 4):
        await apply(conn, events[start : start + 4])

    assert await rows(conn) == before
    assert len(before) == 10
    assert await analytics(conn) == EXPECTED


async def test_analytics_no_orders_gives_empty_lists(conn: Connection) -> None:
    assert await analytics(conn) == {"venues": [], "pairs": []}


async def test_analytics_report_main_prints_one_row_per_venue_and_pair(
    settings: Settings, conn: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    await apply(conn, [e for order in orders().values() for e in order.events])

    code = await asyncio.to_thread(report_main, settings)

    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert [line.split("  ")[0] for line in lines] == [
        "",
        "venue meteora",
        "venue raydium",
        "pair BONK/SOL",
        "pair JUP/USDC",
        "pair RAY/USDC",
        "pair SOL/USDC",
    ]
    assert " ".join(lines[2].split()) == (
        "venue raydium 4 3 0 1.0000 3.75 SOL, 250 USDC 400.0 300.0 790.0 15.00 -"
    )


# Through the projector process, on the real broker ---------------------------------------


async def test_projector_process_builds_analytics_and_orders_in_one_consumer_group(
    settings: Settings,
) -> None:
    histories = [order.events for order in orders().values()]
    events = interleaved(histories)
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        for event in [*events, *events[:5]]:  # the first five redelivered
            await producer.send_and_wait(
                settings.events_topic, encode(event), key=order_key(event.order_id)
            )
    finally:
        await producer.stop()
    ends = await end_offsets(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(project_all(settings, stop))

    try:
        await wait_until_projected(settings, ends)
    finally:
        stop.set()
        stats = await asyncio.wait_for(task, 30)

    conn = await connect(settings)
    try:
        assert await analytics(conn) == EXPECTED
        cur = await conn.execute("SELECT count(*) FROM orders")
        assert await cur.fetchone() == (10,)
    finally:
        await conn.close()
    for name in ("orders", "analytics"):
        assert (stats[name].applied, stats[name].skipped, stats[name].dead_lettered) == (
            EVENTS,
            5,
            0,
        )
    # One group for both, the one the orders projection has always used.
    assert await committed(settings, settings.projector_group) == ends
    assert await committed(settings, f"{settings.projector_group}.analytics") == {}


async def end_offsets(settings: Settings) -> dict[int, int]:
    consumer = AIOKafkaConsumer(**client_options(settings))
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.events_topic, p) for p in range(settings.partitions)]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items() if offset > 0}


async def wait_until_projected(settings: Settings, ends: dict[int, int]) -> None:
    """Wait until both projections stored offsets at the ends of every partition."""
    expected = {(name, p, o) for name in ("orders", "analytics") for p, o in ends.items()}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        conn = await connect(settings)
        try:
            cur = await conn.execute("SELECT to_regclass('projection_offsets') IS NOT NULL")
            exists = await cur.fetchone()
            if exists == (True,):
                cur = await conn.execute(
                    "SELECT projection, partition, next_offset FROM projection_offsets"
                )
                if set(await cur.fetchall()) == expected:
                    return
        finally:
            await conn.close()
        await asyncio.sleep(0.2)
    raise AssertionError(f"the projections did not reach {ends}")


async def committed(settings: Settings, group_id: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group_id)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}
