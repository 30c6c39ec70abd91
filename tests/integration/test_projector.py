"""The projector on a real Kafka broker and a real PostgreSQL.

Each test gets its own topics and its own database, produces realistic order
events (built with ``decide``/``envelope_after``, as the engine does) and reads
the read models back through ``projections.orders.queries``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from types import NoneType, UnionType
from typing import Any, Literal, get_args, get_origin

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import AwareDatetime

from adapters.kafka import client_options, ensure_topics
from adapters.postgres import connect
from adapters.settings import Settings
from domain.lifecycle import OrderState, envelope_after, evolve
from events.messages import (
    DeadLetter,
    Event,
    OrderAccepted,
    OrderFailed,
    OrderSpec,
    decode_event,
    encode,
    order_key,
)
from projections.contract import Stats, ensure_schema
from projections.orders.handler import ORDER_COLUMNS, OrdersProjection
from projections.orders.queries import (
    OrderLabels,
    find_order,
    get_order,
    list_events,
    newest_orders,
    order_labels,
    stored_events,
)
from services.projector.main import project
from services.projector.replay import replay
from services.projector.runner import MultiProjectionRunner
from tests.unit.test_orders_projection import T0, order_history

pytestmark = pytest.mark.integration

Positions = list[tuple[int, int]]


# Fixtures and helpers ---------------------------------------------------------------


@pytest.fixture
async def settings(settings_factory: Callable[..., Settings], fresh_database_url: str) -> Settings:
    """Return settings with fresh topics and a fresh database of their own.

    Overrides the shared ``settings``: a replay swaps the read-model tables, so each
    test needs a database nobody else projects into.
    """
    made = settings_factory(database_url=fresh_database_url, partitions=3)
    await ensure_topics(made)
    return made


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    client = AIOKafkaProducer(**client_options(settings), acks="all")
    await client.start()
    yield client
    await client.stop()


async def produce(producer: AIOKafkaProducer, topic: str, events: list[Event]) -> Positions:
    """Send events keyed by order id; return each one's (partition, offset)."""
    positions: Positions = []
    for event in events:
        meta = await producer.send_and_wait(topic, encode(event), key=order_key(event.order_id))
        positions.append((meta.partition, meta.offset))
    return positions


class Projector:
    """A projector running as a task, stoppable gracefully or killed mid-batch."""

    def __init__(self, settings: Settings, *, max_records: int = 500, instance: str = "0") -> None:
        self.stop = asyncio.Event()
        # A restarted projector keeps its static member id; a second replica has its own.
        settings = settings.model_copy(update={"projector_instance": instance})
        self.runner = MultiProjectionRunner(
            settings,
            (OrdersProjection(),),
            group_id=settings.projector_group,
            max_records=max_records,
        )
        self.task = asyncio.create_task(self.runner.run(self.stop))

    async def close(self) -> Stats:
        self.stop.set()
        return (await asyncio.wait_for(self.task, 30))[OrdersProjection.name]

    async def kill(self) -> Stats:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        return self.runner.stats[OrdersProjection.name]


async def fetch(settings: Settings, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = await connect(settings)
    try:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()
    finally:
        await conn.close()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 30
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def event_count(settings: Settings) -> int:
    try:
        [(count,)] = await fetch(settings, "SELECT count(*) FROM order_events")
    except psycopg.errors.UndefinedTable:
        return 0
    return int(count)


async def wait_for_events(settings: Settings, expected: int) -> None:
    async def reached() -> bool:
        return await event_count(settings) >= expected

    await eventually(reached, what=f"{expected} projected events")


async def snapshot(settings: Settings) -> dict[str, list[str]]:
    """Return every read-model row as PostgreSQL's own text, in a stable order."""
    tables = {
        "orders": "SELECT t::text FROM orders t ORDER BY order_id",
        "order_events": "SELECT t::text FROM order_events t ORDER BY order_id, seq",
        "projection_offsets": (
            "SELECT t::text FROM projection_offsets t ORDER BY projection, topic, partition"
        ),
    }
    return {name: [row[0] for row in await fetch(settings, sql)] for name, sql in tables.items()}


async def dead_letters(settings: Settings, expected: int) -> list[DeadLetter]:
    consumer = AIOKafkaConsumer(**client_options(settings), auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [
            TopicPartition(settings.dead_letter_topic, p) for p in range(settings.partitions)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        letters: list[DeadLetter] = []
        deadline = time.monotonic() + 30
        while len(letters) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                letters.extend(DeadLetter.model_validate_json(r.value) for r in records)
        # Anything extra would arrive shortly after; give it a moment to show up.
        batch = await consumer.getmany(timeout_ms=1000)
        for records in batch.values():
            letters.extend(DeadLetter.model_validate_json(r.value) for r in records)
        return letters
    finally:
        await consumer.stop()


def failed_history(order_id: uuid.UUID | None = None) -> list[Event]:
    """Return the events of an order that fails when no venue answers a quote."""
    accepted = order_history(order_id)[0]
    state = evolve(None, accepted)
    failed = OrderFailed(
        **envelope_after(state, accepted, T0 + timedelta(seconds=3)),
        code="NO_ROUTE",
        reason="no venue returned a quote",
    )
    return [accepted, failed]


# Tests ----------------------------------------------------------------------------------


async def test_projector_events_produced_appear_in_read_models(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    confirmed, failed = order_history(), failed_history()
    positions = await produce(producer, settings.events_topic, confirmed + failed)
    stop = asyncio.Event()
    task = asyncio.create_task(project(settings, stop))

    await wait_for_events(settings, 7)
    stop.set()
    stats = await asyncio.wait_for(task, 30)

    conn = await connect(settings)
    try:
        order = await get_order(conn, confirmed[0].order_id)
        assert order is not None
        assert order["status"] == "confirmed"
        assert order["seq"] == 5
        assert (order["token_in"], order["token_out"]) == ("SOL", "USDC")
        assert order["amount"] == Decimal("1.50")
        assert order["expected_out"] == Decimal("224.1")
        assert order["min_amount_out"] == Decimal("222.9795")
        assert order["amount_out"] == Decimal("224.0")
        assert order["executed_price"] == Decimal("149.333333")
        assert (order["venue"], order["tx_hash"], order["attempt"]) == ("raydium", "0xabc", 1)
        assert order["quotes"][0]["amount_out"] == "224.1"
        assert order["created_at"] == T0
        assert order["updated_at"] == T0 + timedelta(minutes=4)
        assert order["correlation_id"] == confirmed[0].correlation_id
        assert order["client_order_id"] == "c1"

        history = await list_events(conn, confirmed[0].order_id)
        assert [e["seq"] for e in history] == [1, 2, 3, 4, 5]
        assert [e["status"] for e in history] == [
            "pending",
            "routing",
            "building",
            "submitted",
            "confirmed",
        ]
        assert [decode_event(json.dumps(e["payload"])) for e in history] == confirmed
        assert [(e["partition"], e["offset"]) for e in history] == positions[:5]
        assert {e["topic"] for e in history} == {settings.events_topic}

        rejected = await get_order(conn, failed[0].order_id)
        assert rejected is not None
        assert (rejected["status"], rejected["failure_code"]) == ("failed", "NO_ROUTE")
        assert rejected["venue"] is None
        assert await get_order(conn, uuid.uuid4()) is None
    finally:
        await conn.close()
    assert (stats.applied, stats.skipped, stats.dead_lettered) == (7, 0, 0)


async def test_projector_typed_queries_answer_the_states_evolve_folds(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    older, newer = order_history(), order_history(start=T0 + timedelta(hours=1))
    positions = await produce(producer, settings.events_topic, older + newer)
    stop = asyncio.Event()
    task = asyncio.create_task(project(settings, stop))
    await wait_for_events(settings, 10)
    stop.set()
    await asyncio.wait_for(task, 30)

    conn = await connect(settings)
    try:
        # Every field survives the row and its generated mapping, to the exact state.
        assert await find_order(conn, older[0].order_id) == fold_all(older)
        assert await find_order(conn, uuid.uuid4()) is None
        assert await newest_orders(conn, 5) == [fold_all(newer), fold_all(older)]
        page = await newest_orders(conn, 5, (fold_all(newer).created_at, newer[0].order_id))
        assert page == [fold_all(older)]

        trail = await stored_events(conn, older[0].order_id)
        assert [decode_event(json.dumps(e.payload)) for e in trail] == older
        assert [(e.seq, e.status) for e in trail] == [(ev.seq, ev.status) for ev in older]
        assert [(e.partition, e.offset) for e in trail] == positions[:5]

        [labels] = await order_labels(conn, [newer[0].order_id, uuid.uuid4()])
        assert labels == OrderLabels(newer[0].order_id, "market", "SOL", "USDC", "raydium", None)
    finally:
        await conn.close()


async def test_orders_table_has_exactly_the_columns_generated_from_order_state(
    settings: Settings,
) -> None:
    conn = await connect(settings)
    try:
        await ensure_schema(conn, OrdersProjection())
        cur = await conn.execute(
            "SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = 'orders'"
        )
        columns = {name: (kind, nullable) for name, kind, nullable in await cur.fetchall()}
    finally:
        await conn.close()

    assert sorted(columns) == sorted(ORDER_COLUMNS)
    fields = {**OrderState.model_fields, **OrderSpec.model_fields}
    for name in ORDER_COLUMNS:
        assert columns[name] == sql_column(fields[name].annotation), name


_SQL_TYPES: dict[object, str] = {
    uuid.UUID: "uuid",
    int: "integer",
    str: "text",
    Decimal: "numeric",
    datetime: "timestamp with time zone",
    AwareDatetime: "timestamp with time zone",
}


def sql_column(annotation: Any) -> tuple[str, bool]:
    """Return the PostgreSQL type and nullability a field's annotation calls for."""
    nullable = get_origin(annotation) is UnionType and NoneType in get_args(annotation)
    if nullable:
        [annotation] = [a for a in get_args(annotation) if a is not NoneType]
    if get_origin(annotation) is Literal:
        return "text", nullable
    if get_origin(annotation) is tuple:
        return "jsonb", nullable
    return _SQL_TYPES[annotation], nullable


def fold_all(events: list[Event]) -> OrderState:
    state = None
    for event in events:
        state = evolve(state, event)
    assert state is not None
    return state


async def test_projector_duplicate_event_resent_is_noop(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    events = order_history()
    await produce(producer, settings.events_topic, events[:3])
    projector = Projector(settings)
    await wait_for_events(settings, 3)
    before = await snapshot(settings)

    # An at-least-once redelivery of the last event and a late copy of the first.
    await produce(producer, settings.events_topic, [events[2], events[0]])
    await produce(producer, settings.events_topic, events[3:4])
    await wait_for_events(settings, 4)
    stats = await projector.close()

    after = await snapshot(settings)
    assert len(after["order_events"]) == 4
    assert after["order_events"][:3] == before["order_events"]
    [(seq, status)] = await fetch(
        settings, "SELECT seq, status FROM orders WHERE order_id = %s", events[0].order_id
    )
    assert (seq, status) == (4, "submitted")
    assert (stats.applied, stats.skipped, stats.dead_lettered) == (4, 2, 0)


async def test_projector_restart_mid_stream_applies_every_event_exactly_once(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    histories = [order_history() for _ in range(60)]
    events = [e for h in histories for e in h]
    positions = await produce(producer, settings.events_topic, events)

    # Small batches so the kill lands between (or inside) many transactions.
    first = Projector(settings, max_records=7)
    await eventually(lambda: _at_least(settings, 40), what="the first projector to be mid-stream")
    killed = await first.kill()
    stopped_at = await event_count(settings)
    assert 0 < stopped_at < len(events)

    second = Projector(settings, max_records=7)
    await wait_for_events(settings, len(events))
    resumed = await second.close()

    # Offsets committed with the rows: the restart neither re-reads nor skips anything.
    # (What the killed runner counted is no measure: a kill that lands while COMMIT is
    # in flight leaves rows stored that it never counted. The database is the truth.)
    assert resumed.applied == len(events) - stopped_at
    assert resumed.skipped == 0
    assert killed.dead_lettered + resumed.dead_lettered == 0
    rows = await fetch(settings, "SELECT status, seq FROM orders")
    assert len(rows) == len(histories)
    assert set(rows) == {("confirmed", 5)}
    ends: dict[int, int] = {}
    for partition, offset in positions:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    stored = await fetch(
        settings,
        "SELECT partition, next_offset FROM projection_offsets WHERE topic = %s",
        settings.events_topic,
    )
    assert dict(stored) == ends


async def test_projector_database_connection_lost_reconnects_and_resumes(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    events = [e for _ in range(40) for e in order_history()]
    await produce(producer, settings.events_topic, events)
    projector = Projector(settings, max_records=5)
    await eventually(lambda: _at_least(settings, 20), what="the projector to be mid-stream")

    await fetch(
        settings,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    await wait_for_events(settings, len(events))
    stats = await projector.close()

    assert stats.errors >= 1
    assert stats.dead_lettered == 0
    assert set(await fetch(settings, "SELECT status, seq FROM orders")) == {("confirmed", 5)}


async def _at_least(settings: Settings, count: int) -> bool:
    return await event_count(settings) >= count


async def test_projector_garbage_message_is_dead_lettered_and_projection_continues(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    events = order_history()
    garbage = await producer.send_and_wait(
        settings.events_topic, b"{not json at all", key=order_key(events[0].order_id)
    )
    # Routed before accepted: decodes fine, but is not a legal transition.
    illegal = order_history()[1]
    [illegal_at] = await produce(producer, settings.events_topic, [illegal])
    await produce(producer, settings.events_topic, events)
    projector = Projector(settings)

    await wait_for_events(settings, 5)
    stats = await projector.close()

    letters = await dead_letters(settings, 2)
    by_offset = {(letter.partition, letter.offset): letter for letter in letters}
    assert len(letters) == 2
    bad = by_offset[(garbage.partition, garbage.offset)]
    assert bad.source_topic == settings.events_topic
    assert bad.value == "{not json at all"
    assert bad.key == str(events[0].order_id)
    assert bad.error.startswith("DecodeError")
    assert by_offset[illegal_at].error == (
        "IllegalTransition: None -> routing is not a legal transition"
    )
    order = await fetch(
        settings, "SELECT status FROM orders WHERE order_id = %s", events[0].order_id
    )
    assert order == [("confirmed",)]
    assert (stats.applied, stats.dead_lettered) == (5, 2)


async def test_projector_event_the_database_refuses_is_dead_lettered_alone(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    good = order_history()
    accepted = good[0]
    assert isinstance(accepted, OrderAccepted)
    # Valid for pydantic, but beyond what a PostgreSQL numeric can hold.
    huge_spec = accepted.spec.model_copy(update={"amount": Decimal("1e1000000")})
    huge = accepted.model_copy(
        update={"message_id": uuid.uuid4(), "order_id": uuid.uuid4(), "spec": huge_spec}
    )
    [huge_at] = await produce(producer, settings.events_topic, [huge])
    await produce(producer, settings.events_topic, good)
    projector = Projector(settings)

    await wait_for_events(settings, 5)
    stats = await projector.close()

    [letter] = await dead_letters(settings, 1)
    assert (letter.partition, letter.offset) == huge_at
    assert letter.error.startswith("NumericValueOutOfRange")
    assert await fetch(settings, "SELECT status FROM orders") == [("confirmed",)]
    assert (stats.applied, stats.dead_lettered) == (5, 1)


async def test_replay_after_projection_yields_identical_rows(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    histories = [order_history() for _ in range(10)] + [failed_history() for _ in range(5)]
    events = [e for h in histories for e in h]
    await produce(producer, settings.events_topic, events)
    # A duplicate and a poison message must not make the rebuild differ.
    await produce(producer, settings.events_topic, events[:1])
    await producer.send_and_wait(settings.events_topic, b"garbage", key=b"x")
    projector = Projector(settings)
    await wait_for_events(settings, len(events))
    await eventually(
        lambda: offsets_reach_end(settings), what="the projector to pass the last record"
    )
    await projector.close()
    before = await snapshot(settings)

    report = await replay(settings)

    assert await snapshot(settings) == before
    assert len(before["order_events"]) == len(events)
    assert (report.stats.applied, report.stats.skipped) == (len(events), 1)
    assert report.stats.dead_lettered == 1
    # The live projector dead-lettered the garbage once; the replay does not again.
    assert len(await dead_letters(settings, 1)) == 1


async def offsets_reach_end(settings: Settings) -> bool:
    """Tell whether the stored offsets of ``settings``' events topic are at its end."""
    consumer = AIOKafkaConsumer(**client_options(settings))
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.events_topic, p) for p in range(settings.partitions)]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    stored = dict(
        await fetch(
            settings,
            "SELECT partition, next_offset FROM projection_offsets WHERE topic = %s",
            settings.events_topic,
        )
    )
    return all(stored.get(tp.partition, 0) >= end for tp, end in ends.items())


async def test_replay_while_projector_runs_swaps_tables_and_projector_carries_on(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    first, second = order_history(), order_history()
    await produce(producer, settings.events_topic, first)
    projector = Projector(settings)
    await wait_for_events(settings, 5)
    try:
        report = await replay(settings)
        await produce(producer, settings.events_topic, second)
        await wait_for_events(settings, 10)
    finally:
        stats = await projector.close()

    assert report.live_projector
    assert report.stats.applied == 5
    # Its positions were the stored ones after the swap: no conflict, no resync.
    assert (stats.applied, stats.errors) == (10, 0)
    rows = await fetch(settings, "SELECT order_id, status FROM orders")
    assert set(rows) == {(first[0].order_id, "confirmed"), (second[0].order_id, "confirmed")}


async def test_projector_two_in_one_group_share_partitions_without_double_applying(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    events = [e for _ in range(30) for e in order_history()]
    first = Projector(settings, max_records=5, instance="a")
    second = Projector(settings, max_records=5, instance="b")
    await produce(producer, settings.events_topic, events)

    await wait_for_events(settings, len(events))
    await eventually(lambda: offsets_reach_end(settings), what="all partitions projected")
    a, b = await first.close(), await second.close()

    assert a.dead_lettered + b.dead_lettered == 0
    assert a.applied + b.applied == len(events)
    assert set(await fetch(settings, "SELECT status, seq FROM orders")) == {("confirmed", 5)}
