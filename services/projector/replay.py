"""Rebuild a read model from the start of the log, then swap it in or check it.

Live projectors keep running throughout. The whole events topic is projected from
offset zero into a schema of its own (``oee_rebuild_<name>``) until it has caught
up with the live projector's stored offsets. Then ONE transaction takes the
projection's batch lock exclusively (live batches in flight finish first, new ones
wait), reads the live offsets again, projects the last records up to exactly
those offsets, and either

* swaps: moves the live tables out of ``public``, the rebuilt ones in, and sets the
  live offsets to the rebuilt positions, so live projectors carry on against the
  new tables from where they were; or
* checks: compares the rebuilt tables with the live ones, row by row and column by
  column, at the same log positions, changing nothing live.

While it projects, the rebuild tells an optional ``progress`` callback how many
records of the log it has projected, of how many (``oee replay`` shows it as a
line on stderr).

A live projector's positions equal the stored ones after a swap. When they do not
(it was not running, or it lost a rebalance race), its next claim of a partition
fails and it reseeks to the stored offsets, as after any other conflict.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import psycopg
from aiokafka import TopicPartition
from psycopg import sql

from adapters.postgres import Connection, connect
from adapters.settings import Settings
from projections.contract import TRACKING_DDL, Projection, Stats
from projections.orders.handler import OrdersProjection
from services.projector.runner import MultiProjectionRunner, lock_key, presence_key

T = TypeVar("T")
# Told (records projected, records to project) after every batch of a rebuild.
Progress = Callable[[int, int], None]

LIVE_SCHEMA = "public"
# Differing rows named per table in a check report.
_SAMPLE_KEYS = 5
# Catch-up rounds after the first, while the live projector is further ahead than one
# batch: each one shortens the pause of the final transaction.
_EXTRA_ROUNDS = 3


class ReplayRunningError(RuntimeError):
    """Another replay or check of the same projection is under way."""


class ReplayError(RuntimeError):
    """The rebuild cannot be completed as asked; nothing live was changed."""


@dataclass(frozen=True)
class ReplayReport:
    """What a replay did: records projected, time taken, and how long live batches waited."""

    projection: str
    stats: Stats
    seconds: float
    paused_seconds: float
    live_projector: bool
    # Next offset per partition of the swapped-in tables.
    positions: dict[int, int]


@dataclass(frozen=True)
class TableDiff:
    """How one rebuilt table differs from the live one."""

    table: str
    only_live: int
    only_rebuilt: int
    # Primary keys (``column=value``) of a few differing rows, from either side.
    sample_keys: tuple[str, ...] = ()
    # A difference of shape rather than rows: a missing table, different columns.
    problem: str | None = None

    @property
    def differs(self) -> bool:
        return bool(self.only_live or self.only_rebuilt or self.problem)


@dataclass(frozen=True)
class CheckReport:
    """A rebuild compared with the live tables at the same log positions."""

    projection: str
    stats: Stats
    seconds: float
    paused_seconds: float
    live_projector: bool
    # The log positions both sides were compared at: next offset per partition.
    positions: dict[int, int]
    tables: tuple[TableDiff, ...]

    @property
    def differences(self) -> tuple[TableDiff, ...]:
        return tuple(diff for diff in self.tables if diff.differs)


@dataclass(frozen=True)
class _Schemas:
    rebuild: str
    retired: str


class _Counter:
    """Counts the records a rebuild projected, and how many it aims at, for ``progress``."""

    def __init__(
        self,
        runner: MultiProjectionRunner,
        begins: Mapping[TopicPartition, int],
        progress: Progress | None,
    ) -> None:
        self._runner = runner
        self._begins = begins
        self._progress = progress
        self._total = 0

    def aim(self, target: Mapping[TopicPartition, int]) -> Mapping[TopicPartition, int]:
        """Take ``target`` as where the rebuild projects to (it only grows); return it."""
        count = sum(max(0, o - self._begins.get(tp, 0)) for tp, o in target.items())
        self._total = max(self._total, count)
        return target

    def batch(self) -> None:
        """Tell ``progress`` where the rebuild stands."""
        if self._progress is None:
            return
        done = sum(
            max(0, pos - self._begins.get(tp, 0)) for tp, pos in self._runner.positions.items()
        )
        self._progress(done, max(done, self._total))


@dataclass(frozen=True)
class _Rebuilt(Generic[T]):
    result: T
    stats: Stats
    seconds: float
    paused_seconds: float
    live_projector: bool
    positions: dict[int, int]


async def replay(
    settings: Settings,
    projection: Projection | None = None,
    *,
    publish_dead_letters: bool = False,
    progress: Progress | None = None,
) -> ReplayReport:
    """Rebuild ``projection`` (orders by default) from offset zero and swap it in.

    With a live projector running, the rebuild ends at its positions and it carries
    on against the new tables; without one, at the log's end offsets taken at start.
    Dead letters were published when the live projector first met them, so a replay
    only counts them unless ``publish_dead_letters`` is set. ``progress`` is told
    (records projected, records to project) after every batch.
    """
    projection = projection or OrdersProjection()
    await _expect_owner(settings, projection)
    done = await _rebuild(
        settings,
        projection,
        _swap,
        follow_live=False,
        publish_dead_letters=publish_dead_letters,
        progress=progress,
    )
    return ReplayReport(
        projection.name,
        done.stats,
        done.seconds,
        done.paused_seconds,
        done.live_projector,
        done.positions,
    )


async def check(
    settings: Settings, projection: Projection | None = None, *, progress: Progress | None = None
) -> CheckReport:
    """Rebuild ``projection`` (orders by default) beside the live tables and compare them.

    The rebuild ends at the live stored offsets, so both sides reflect the same
    records. Nothing live changes; the rebuild is dropped afterwards. ``progress``
    is told (records projected, records to project) after every batch.
    """
    projection = projection or OrdersProjection()
    done = await _rebuild(
        settings,
        projection,
        _compare,
        follow_live=True,
        publish_dead_letters=False,
        progress=progress,
    )
    return CheckReport(
        projection.name,
        done.stats,
        done.seconds,
        done.paused_seconds,
        done.live_projector,
        done.positions,
        done.result,
    )


async def _expect_owner(settings: Settings, projection: Projection) -> None:
    """Refuse a replay by a role other than the live tables' owner (the projector's).

    The swapped-in tables belong to whoever built them: built by another role, the
    live projector could no longer write them, nor the readers read them.
    """
    conn = await connect(settings)
    try:
        cursor = await conn.execute(
            "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = %s "
            "AND tablename = ANY(%s) AND tableowner <> current_user",
            (LIVE_SCHEMA, [*projection.tables, "projection_offsets"]),
        )
        others = await cursor.fetchall()
    finally:
        await conn.close()
    if others:
        table, owner = others[0]
        raise ReplayError(
            f"the live table {table} belongs to role {owner!r}: replay as that role "
            "(`oee replay` logs into the embedded database as the projector)"
        )


# The rebuild -----------------------------------------------------------------------------


async def _rebuild(
    settings: Settings,
    projection: Projection,
    finish: Callable[[Connection, Projection, _Schemas], Awaitable[T]],
    *,
    follow_live: bool,
    publish_dead_letters: bool,
    progress: Progress | None = None,
) -> _Rebuilt[T]:
    """Project the log into a fresh schema up to the live positions, then ``finish``
    inside the transaction that holds live batches back.

    With ``follow_live`` the rebuild always ends at the live stored offsets;
    otherwise it ends at the log's end when no live projector runs.
    """
    started = time.perf_counter()
    schemas = _Schemas(f"oee_rebuild_{projection.name}", f"oee_retired_{projection.name}")
    guard = await connect(settings, search_path=LIVE_SCHEMA)
    try:
        if not await _try_lock(guard, f"oee.replay.{projection.name}"):
            raise ReplayRunningError(f"a replay of {projection.name!r} is already running")
        live_projector = await _projector_alive(guard, projection)
        async with guard.transaction():
            await guard.execute("SELECT pg_advisory_xact_lock(hashtext('oee.schema'))")
            await guard.execute(TRACKING_DDL)
            await guard.execute(_drop_schema(schemas.rebuild))
            await guard.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schemas.rebuild)))
        runner = MultiProjectionRunner(
            settings,
            (projection,),
            group_id=None,
            live=False,
            search_path=schemas.rebuild,
            publish_dead_letters=publish_dead_letters,
        )
        try:
            async with runner.catching_up():
                await _expect_tables(guard, projection, schemas.rebuild)
                # The live positions first: a live projector moves on meanwhile, and
                # read after the log's end, they could pass it and look recreated.
                live = await _live_offsets(guard, projection, runner.topic)
                ends = await runner.end_offsets()
                counter = _Counter(runner, await runner.begin_offsets(), progress)
                target = _within(live, ends) if follow_live or (live_projector and live) else ends
                await runner.project_until(counter.aim(target), counter.batch)
                if live_projector:
                    await _close_in(runner, guard, projection, counter)
                conn = await runner.connection()
                async with conn.transaction():
                    pause = time.perf_counter()
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtext(%s))", (lock_key(projection),)
                    )
                    live = await _live_offsets(conn, projection, runner.topic)
                    # Never behind the live positions; ahead only when the live ones lag
                    # the log's end with no live projector to move them.
                    target = {tp: max(pos, live.get(tp, 0)) for tp, pos in runner.positions.items()}
                    last = _within(target, await runner.end_offsets())
                    await runner.project_until(counter.aim(last), counter.batch)
                    counter.batch()
                    result = await finish(conn, projection, schemas)
                paused = time.perf_counter() - pause
        finally:
            await guard.execute(_drop_schema(schemas.rebuild))
    finally:
        await guard.close()
    return _Rebuilt(
        result,
        runner.stats[projection.name],
        time.perf_counter() - started,
        paused,
        live_projector,
        {tp.partition: offset for tp, offset in sorted(runner.positions.items()) if offset},
    )


async def _close_in(
    runner: MultiProjectionRunner, guard: Connection, projection: Projection, counter: _Counter
) -> None:
    """Follow the live projector while it is more than a batch ahead, so the final
    transaction, which holds live batches back, has little left to project."""
    for _ in range(_EXTRA_ROUNDS):
        live = await _live_offsets(guard, projection, runner.topic)
        lag = sum(max(0, live.get(tp, 0) - pos) for tp, pos in runner.positions.items())
        if lag <= runner.max_records:
            return
        target = _within(live, await runner.end_offsets())
        await runner.project_until(counter.aim(target), counter.batch)


async def _try_lock(conn: Connection, key: str) -> bool:
    """Take a session-level advisory lock if free; it lasts until ``conn`` closes."""
    cur = await conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,))
    row = await cur.fetchone()
    return row is not None and bool(row[0])


async def _projector_alive(conn: Connection, projection: Projection) -> bool:
    """Tell whether a live projector holds its presence lock (shared, for its life)."""
    key = presence_key(projection)
    if not await _try_lock(conn, key):
        return True
    await conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
    return False


async def _live_offsets(
    conn: Connection, projection: Projection, topic: str
) -> dict[TopicPartition, int]:
    cur = await conn.execute(
        sql.SQL(
            "SELECT partition, next_offset FROM {}.projection_offsets "
            "WHERE projection = %s AND topic = %s"
        ).format(sql.Identifier(LIVE_SCHEMA)),
        (projection.name, topic),
    )
    return {TopicPartition(topic, p): int(o) for p, o in await cur.fetchall()}


def _within(
    target: Mapping[TopicPartition, int], ends: Mapping[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """Return ``target`` for the log's partitions, refusing offsets past the log's end
    (the topic was recreated): projecting up to them would wait forever."""
    beyond = {tp: o for tp, o in target.items() if tp in ends and o > ends[tp]}
    if beyond:
        raise ReplayError(f"stored offsets {beyond} are past the log's end {dict(ends)}")
    return {tp: target.get(tp, 0) for tp in ends}


async def _expect_tables(conn: Connection, projection: Projection, schema: str) -> None:
    """Refuse a projection whose DDL creates tables other than its ``tables``: a swap
    would leave those behind and a check would not compare them."""
    cur = await conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename <> %s",
        (schema, "projection_offsets"),
    )
    created = {row[0] for row in await cur.fetchall()}
    if created != set(projection.tables):
        raise ReplayError(
            f"projection {projection.name!r} declares tables {sorted(projection.tables)} "
            f"but its DDL creates {sorted(created)}"
        )


def _drop_schema(schema: str) -> sql.Composed:
    return sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))


# Finishing inside the paused transaction ---------------------------------------------------


async def _swap(conn: Connection, projection: Projection, schemas: _Schemas) -> None:
    """Move the rebuilt tables and positions into ``public`` in place of the live ones."""
    live = sql.Identifier(LIVE_SCHEMA)
    rebuild = sql.Identifier(schemas.rebuild)
    retired = sql.Identifier(schemas.retired)
    tables = [sql.Identifier(t) for t in projection.tables]
    # A live projector reconnecting now would run its CREATE ... IF NOT EXISTS.
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('oee.schema'))")
    await conn.execute(sql.SQL("CREATE SCHEMA {}").format(retired))
    # Indexes, constraints and owned sequences move with their table and keep their
    # names, which are unique per schema, so the two sets never collide.
    for table in tables:
        await conn.execute(
            sql.SQL("ALTER TABLE IF EXISTS {}.{} SET SCHEMA {}").format(live, table, retired)
        )
    for table in tables:
        await conn.execute(sql.SQL("ALTER TABLE {}.{} SET SCHEMA {}").format(rebuild, table, live))
    await conn.execute(
        sql.SQL("DELETE FROM {}.projection_offsets WHERE projection = %s").format(live),
        (projection.name,),
    )
    await conn.execute(
        sql.SQL(
            "INSERT INTO {}.projection_offsets (projection, topic, partition, next_offset) "
            "SELECT projection, topic, partition, next_offset FROM {}.projection_offsets "
            "WHERE projection = %s"
        ).format(live, rebuild),
        (projection.name,),
    )
    # No CASCADE: something of someone else's built on a live table (a view) fails
    # the swap, which then changes nothing, instead of vanishing with the old table.
    try:
        await conn.execute(
            sql.SQL("DROP TABLE IF EXISTS {}").format(
                sql.SQL(", ").join(sql.SQL("{}.{}").format(retired, t) for t in tables)
            )
        )
    except psycopg.errors.DependentObjectsStillExist as exc:
        raise ReplayError(f"cannot replace the live tables: {exc}") from exc
    await conn.execute(sql.SQL("DROP SCHEMA {}").format(retired))
    await conn.execute(_drop_schema(schemas.rebuild))


async def _compare(
    conn: Connection, projection: Projection, schemas: _Schemas
) -> tuple[TableDiff, ...]:
    """Compare every rebuilt table with the live one, all columns, as PostgreSQL text."""
    return tuple(
        [await _compare_table(conn, table, schemas.rebuild) for table in projection.tables]
    )


async def _compare_table(conn: Connection, table: str, rebuild: str) -> TableDiff:
    rebuilt_columns = await _columns(conn, rebuild, table)
    live_columns = await _columns(conn, LIVE_SCHEMA, table)
    key = await _primary_key(conn, rebuild, table) or rebuilt_columns
    if not live_columns:
        only_rebuilt, samples = await _rows_not_in(conn, table, rebuild, None, rebuilt_columns, key)
        return TableDiff(table, 0, only_rebuilt, samples, f"no table {table} in {LIVE_SCHEMA}")
    common = [c for c in rebuilt_columns if c in live_columns]
    problem = None
    if set(live_columns) != set(rebuilt_columns):
        problem = (
            f"columns only in live {sorted(set(live_columns) - set(rebuilt_columns))}, "
            f"only in the rebuild {sorted(set(rebuilt_columns) - set(live_columns))}"
        )
    key = [c for c in key if c in common] or common
    only_live, live_samples = await _rows_not_in(conn, table, LIVE_SCHEMA, rebuild, common, key)
    only_rebuilt, rebuilt_samples = await _rows_not_in(
        conn, table, rebuild, LIVE_SCHEMA, common, key
    )
    samples = tuple(dict.fromkeys(live_samples + rebuilt_samples))[:_SAMPLE_KEYS]
    return TableDiff(table, only_live, only_rebuilt, samples, problem)


async def _columns(conn: Connection, schema: str, table: str) -> list[str]:
    cur = await conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (schema, table),
    )
    return [row[0] for row in await cur.fetchall()]


async def _primary_key(conn: Connection, schema: str, table: str) -> list[str]:
    cur = await conn.execute(
        "SELECT a.attname FROM pg_index i "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = to_regclass(format('%%I.%%I', %s::text, %s::text)) AND i.indisprimary "
        "ORDER BY array_position(i.indkey::int2[], a.attnum)",
        (schema, table),
    )
    return [row[0] for row in await cur.fetchall()]


async def _rows_not_in(
    conn: Connection,
    table: str,
    schema: str,
    other: str | None,
    columns: Sequence[str],
    key: Sequence[str],
) -> tuple[int, tuple[str, ...]]:
    """Count the rows of ``schema.table`` missing from ``other.table`` (all of them when
    ``other`` is None), comparing every column's text, and name a few by ``key``."""
    as_text = sql.SQL(", ").join(
        sql.SQL("{}::text AS {}").format(sql.Identifier(c), sql.Identifier(c)) for c in columns
    )
    rows = sql.SQL("SELECT {} FROM {}.{}").format(
        as_text, sql.Identifier(schema), sql.Identifier(table)
    )
    if other is not None:
        rows = sql.SQL("{} EXCEPT ALL SELECT {} FROM {}.{}").format(
            rows, as_text, sql.Identifier(other), sql.Identifier(table)
        )
    keys = sql.SQL(", ").join(sql.Identifier(c) for c in key)
    cur = await conn.execute(
        sql.SQL("SELECT count(*) OVER (), {} FROM ({}) AS d ORDER BY {} LIMIT {}").format(
            keys, rows, keys, sql.Literal(_SAMPLE_KEYS)
        )
    )
    found = await cur.fetchall()
    if not found:
        return 0, ()
    samples = tuple(
        ", ".join(f"{name}={value}" for name, value in zip(key, row[1:], strict=True))
        for row in found
    )
    return int(found[0][0]), samples
