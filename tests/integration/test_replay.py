"""Replay and check on a real Kafka broker and a real PostgreSQL, with live projectors running.

Events are written straight to the topic (``tests.unit.factories``); the engine is
not needed. Every test has topics and a database of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from psycopg import sql

from adapters.kafka import client_options, ensure_topics
from adapters.postgres import Connection, connect
from adapters.settings import Settings
from cli.replay import main
from events.messages import Event
from projections.analytics.handler import AnalyticsProjection
from projections.contract import BatchResult, Decoded
from projections.orders.handler import OrdersProjection
from services.projector.main import project_all
from services.projector.replay import ReplayError, ReplayRunningError, TableDiff, check, replay
from services.projector.runner import MultiProjectionRunner
from tests.integration.test_projector import (
    Projector,
    eventually,
    fetch,
    offsets_reach_end,
    produce,
    wait_for_events,
)
from tests.unit.factories import confirmed_history

pytestmark = pytest.mark.integration


@pytest.fixture
async def settings(settings_factory: Callable[..., Settings], fresh_database_url: str) -> Settings:
    """Return settings with fresh topics and a database of their own (a replay swaps tables)."""
    made = settings_factory(database_url=fresh_database_url, partitions=3)
    await ensure_topics(made)
    return made


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    client = AIOKafkaProducer(**client_options(settings), acks="all")
    await client.start()
    yield client
    await client.stop()


def histories(count: int) -> list[Event]:
    return [event for _ in range(count) for event in confirmed_history()]


async def rows(settings: Settings, schema: str, table: str, order_by: str) -> list[str]:
    """Return every row of ``schema.table`` as PostgreSQL's own text, in a stable order."""
    query = sql.SQL("SELECT t::text FROM {}.{} t ORDER BY {}").format(
        sql.Identifier(schema), sql.Identifier(table), sql.SQL(order_by)
    )
    conn = await connect(settings)
    try:
        cur = await conn.execute(query)
        return [row[0] for row in await cur.fetchall()]
    finally:
        await conn.close()


async def execute(settings: Settings, statement: str, *params: Any) -> None:
    conn = await connect(settings)
    try:
        await conn.execute(statement, params)
    finally:
        await conn.close()


async def snapshot(settings: Settings, schema: str) -> dict[str, list[str]]:
    return {
        "orders": await rows(settings, schema, "orders", "order_id"),
        "order_events": await rows(settings, schema, "order_events", "order_id, seq"),
        "projection_offsets": await rows(
            settings, schema, "projection_offsets", "projection, topic, partition"
        ),
    }


async def project_from_scratch(settings: Settings, schema: str) -> None:
    """Project the whole topic into a new schema, independently of replay."""
    conn = await connect(settings)
    try:
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    finally:
        await conn.close()
    runner = MultiProjectionRunner(
        settings, (OrdersProjection(),), live=False, search_path=schema, publish_dead_letters=False
    )
    await runner.catch_up()


async def schemas(settings: Settings) -> set[str]:
    return {name for (name,) in await fetch(settings, "SELECT nspname FROM pg_namespace")}


async def indexes(settings: Settings, table: str) -> set[str]:
    found = await fetch(
        settings,
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename = %s",
        table,
    )
    return {name for (name,) in found}


async def feed(producer: AIOKafkaProducer, topic: str, stop: asyncio.Event) -> list[Event]:
    """Produce one order's events after another until ``stop`` is set; return them all."""
    sent: list[Event] = []
    while not stop.is_set():
        events = confirmed_history()
        await produce(producer, topic, events)
        sent.extend(events)
        await asyncio.sleep(0.02)
    return sent


# Tests ---------------------------------------------------------------------------------


async def test_replay_while_projector_runs_and_events_arrive_matches_a_fresh_projection(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    initial = histories(40)
    await produce(producer, settings.events_topic, initial)
    # Small batches: the live projector commits many transactions during the replay.
    projector = Projector(settings, max_records=10)
    await wait_for_events(settings, 20)
    stop_feeding = asyncio.Event()
    feeder = asyncio.create_task(feed(producer, settings.events_topic, stop_feeding))
    try:
        report = await replay(settings)
        # Events keep arriving after the swap too, into the swapped-in tables.
        await asyncio.sleep(0.5)
    finally:
        stop_feeding.set()
        fed = await feeder
    later = histories(3)
    await produce(producer, settings.events_topic, later)
    events = initial + fed + later
    await wait_for_events(settings, len(events))
    await eventually(lambda: offsets_reach_end(settings), what="the live projector to catch up")
    stats = await projector.close()

    assert report.live_projector
    assert report.stats.dead_lettered == 0
    # Its positions equalled the swapped-in ones: no claim conflicted, nothing resynced.
    assert stats.errors == 0
    await project_from_scratch(settings, "scratch")
    assert await snapshot(settings, "public") == await snapshot(settings, "scratch")
    ids = await fetch(settings, "SELECT message_id FROM order_events")
    assert sorted(i for (i,) in ids) == sorted(e.message_id for e in events)
    assert set(await fetch(settings, "SELECT status, seq FROM orders")) == {("confirmed", 5)}
    assert {"orders_pkey", "orders_status_idx", "orders_client_order_id_idx"} <= await indexes(
        settings, "orders"
    )
    assert not {"oee_rebuild_orders", "oee_retired_orders"} & await schemas(settings)
    checked = await check(settings)
    assert checked.differences == ()
    assert {diff.table for diff in checked.tables} == {"orders", "order_events"}


async def test_replay_without_projector_builds_tables_up_to_the_log_end(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    events = histories(6)
    positions = await produce(producer, settings.events_topic, events)

    report = await replay(settings)

    ends: dict[int, int] = {}
    for partition, offset in positions:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    assert not report.live_projector
    assert report.positions == ends
    assert report.stats.applied == len(events)
    stored = await fetch(
        settings,
        "SELECT partition, next_offset FROM public.projection_offsets WHERE projection = 'orders'",
    )
    assert dict(stored) == ends
    assert len(await fetch(settings, "SELECT 1 FROM public.order_events")) == len(events)
    assert "orders_status_idx" in await indexes(settings, "orders")
    # A projector started afterwards resumes from the rebuilt positions.
    projector = Projector(settings)
    await produce(producer, settings.events_topic, histories(1))
    await wait_for_events(settings, len(events) + 5)
    stats = await projector.close()
    assert (stats.applied, stats.skipped, stats.errors) == (5, 0, 0)


async def test_replay_command_shows_its_progress_in_events_on_stderr(
    settings: Settings, producer: AIOKafkaProducer, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a log of 4 orders' events and no projector
    events = histories(4)
    await produce(producer, settings.events_topic, events)

    # When `oee replay` rebuilds the orders read model
    code = await asyncio.to_thread(main, settings, "orders")

    # Then stderr has counted the events on one line rewritten in place, up to all of them
    assert code == 0
    captured = capsys.readouterr()
    lines = [line.rstrip() for line in captured.err.split("\r") if line.strip()]
    total = len(events)
    assert lines, captured.err
    assert lines[-1] == f"replay: {total} / {total} events (100%), " + lines[-1].split(", ")[-1]
    assert lines[-1].endswith(" events/s")
    assert captured.err.endswith("\n")
    # ...and stdout has only the result
    assert captured.out.startswith("replayed ")


async def test_check_after_live_rows_tampered_names_tables_and_keys_and_exits_1(
    settings: Settings, producer: AIOKafkaProducer, capsys: pytest.CaptureFixture[str]
) -> None:
    events = histories(5)
    await produce(producer, settings.events_topic, events)
    projector = Projector(settings)
    try:
        await wait_for_events(settings, len(events))
        await eventually(lambda: offsets_reach_end(settings), what="the projector to catch up")
        assert await asyncio.to_thread(main, settings, "orders", True) == 0
        assert capsys.readouterr().out.rstrip().endswith("no differences")

        tampered, removed = events[0], events[7]
        await execute(
            settings, "UPDATE orders SET status = 'failed' WHERE order_id = %s", tampered.order_id
        )
        await execute(
            settings, "DELETE FROM order_events WHERE message_id = %s", removed.message_id
        )
        report = await check(settings)
        code = await asyncio.to_thread(main, settings, "orders", True)
    finally:
        await projector.close()

    assert report.live_projector
    assert report.differences == (
        TableDiff("order_events", 0, 1, (f"message_id={removed.message_id}",)),
        TableDiff("orders", 1, 1, (f"order_id={tampered.order_id}",)),
    )
    assert code == 1
    out = capsys.readouterr().out
    assert (
        f"orders: 1 row(s) only in live, 1 only in the rebuild, e.g. order_id={tampered.order_id}"
        in out
    )
    assert "order_events: 0 row(s) only in live, 1 only in the rebuild" in out
    # A check changes nothing live.
    status = await fetch(
        settings, "SELECT status FROM orders WHERE order_id = %s", tampered.order_id
    )
    assert status == [("failed",)]
    assert "oee_rebuild_orders" not in await schemas(settings)


async def test_replay_while_another_replay_runs_is_refused(settings: Settings) -> None:
    holder = await connect(settings)
    try:
        await holder.execute("SELECT pg_advisory_lock(hashtext('oee.replay.orders'))")
        with pytest.raises(ReplayRunningError):
            await replay(settings)
        assert await asyncio.to_thread(main, settings, "orders", False) == 2
    finally:
        await holder.close()


async def test_replayed_read_model_ahead_skips_what_it_has_while_the_other_catches_up(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    # Given analytics rebuilt to the log's end while no projector ran, and orders not
    # projected at all: the live projector starts below analytics.
    first = histories(3)
    await produce(producer, settings.events_topic, first)
    rebuilt = await replay(settings, AnalyticsProjection())
    assert not rebuilt.live_projector
    assert rebuilt.stats.applied == len(first)

    # When it runs both read models over the old records and new ones,
    stop = asyncio.Event()
    live = asyncio.create_task(project_all(settings, stop))
    more = histories(2)
    try:
        await produce(producer, settings.events_topic, more)
        await wait_for_events(settings, len(first) + len(more))
        await eventually(lambda: offsets_reach_end(settings), what="both projections")
    finally:
        stop.set()
        stats = await asyncio.wait_for(live, 30)

    # then orders applies everything, and analytics only what it did not have yet.
    assert (stats["orders"].applied, stats["orders"].skipped) == (len(first) + len(more), 0)
    assert (stats["analytics"].applied, stats["analytics"].skipped) == (len(more), 0)
    assert (await check(settings, AnalyticsProjection())).differences == ()
    assert (await check(settings)).differences == ()


class RecordCounts:
    """A second read model, to show replay is generic: records seen per partition."""

    name = "record_counts"
    tables: tuple[str, ...] = ("record_counts",)
    extra_ddl = ""

    def ddl(self) -> str:
        return (
            "CREATE TABLE IF NOT EXISTS record_counts "
            "(partition integer PRIMARY KEY, records bigint NOT NULL);"
            "CREATE INDEX IF NOT EXISTS record_counts_records_idx ON record_counts (records);"
            + self.extra_ddl
        )

    def drop_ddl(self) -> str:
        return "DROP TABLE IF EXISTS record_counts"

    async def apply(self, conn: Connection, decoded: Sequence[Decoded]) -> BatchResult:
        counts: dict[int, int] = {}
        for record, _ in decoded:
            counts[record.partition] = counts.get(record.partition, 0) + 1
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO record_counts (partition, records) VALUES (%s, %s) "
                "ON CONFLICT (partition) DO UPDATE "
                "SET records = record_counts.records + EXCLUDED.records",
                sorted(counts.items()),
            )
        return BatchResult(applied=len(decoded))


class UndeclaredTable(RecordCounts):
    extra_ddl = "CREATE TABLE IF NOT EXISTS forgotten (id integer);"


async def test_replay_other_projection_swaps_only_its_own_tables(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    events = histories(4)
    await produce(producer, settings.events_topic, events)
    orders = Projector(settings)
    await wait_for_events(settings, len(events))
    await eventually(lambda: offsets_reach_end(settings), what="the orders projector")
    await orders.close()
    before = await snapshot(settings, "public")
    stop = asyncio.Event()
    counts = MultiProjectionRunner(
        settings, (RecordCounts(),), group_id=f"{settings.projector_group}.c"
    )
    live = asyncio.create_task(counts.run(stop))
    try:
        await eventually(lambda: _total_is(settings, len(events)), what="the counts projector")
        report = await replay(settings, RecordCounts())
        checked = await check(settings, RecordCounts())
        await produce(producer, settings.events_topic, histories(1))
        await eventually(lambda: _total_is(settings, len(events) + 5), what="counting on")
    finally:
        stop.set()
        stats = (await asyncio.wait_for(live, 30))[RecordCounts.name]

    assert report.live_projector
    assert report.stats.applied == len(events)
    assert checked.differences == ()
    assert stats.errors == 0
    after = await snapshot(settings, "public")
    after["projection_offsets"] = [
        r for r in after["projection_offsets"] if r.startswith("(orders,")
    ]
    assert after == before
    assert "record_counts_records_idx" in await indexes(settings, "record_counts")


async def _total_is(settings: Settings, expected: int) -> bool:
    try:
        [(total,)] = await fetch(settings, "SELECT coalesce(sum(records), 0) FROM record_counts")
    except psycopg.errors.UndefinedTable:  # the runner has not created it yet
        return False
    return bool(total == expected)


async def test_replay_projection_creating_undeclared_table_is_refused_leaving_live_untouched(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    await produce(producer, settings.events_topic, histories(1))
    counts = MultiProjectionRunner(settings, (RecordCounts(),), live=True)
    await counts.catch_up()
    before = await fetch(settings, "SELECT * FROM record_counts ORDER BY partition")

    with pytest.raises(ReplayError, match="forgotten"):
        await replay(settings, UndeclaredTable())

    assert await fetch(settings, "SELECT * FROM record_counts ORDER BY partition") == before
    assert "oee_rebuild_record_counts" not in await schemas(settings)


async def test_replay_live_table_with_dependent_view_is_refused_leaving_live_untouched(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    await produce(producer, settings.events_topic, histories(2))
    await MultiProjectionRunner(settings, (OrdersProjection(),)).catch_up()
    await execute(settings, "CREATE VIEW confirmed AS SELECT * FROM orders")
    before = await snapshot(settings, "public")

    with pytest.raises(ReplayError, match="cannot replace the live tables"):
        await replay(settings)

    assert await snapshot(settings, "public") == before
    assert len(await fetch(settings, "SELECT * FROM confirmed")) == 2
    assert not {"oee_rebuild_orders", "oee_retired_orders"} & await schemas(settings)
