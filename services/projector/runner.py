"""Run read models over the event log, tracking each one's position in PostgreSQL.

One consumer reads the log once for every projection it runs: each fetched batch is
decoded once and applied to every projection in ONE transaction (one per
``getmany`` batch), beside the log offsets each projection's rows reflect, so after a
crash the projector resumes exactly where its last committed batch ended. Each
projection keeps its own positions in ``projection_offsets`` and claims them per
partition with its own compare-and-set; the consumer reads from the lowest of them,
and a projection that is ahead (just rebuilt by a replay) skips what it already has.
Kafka-side commits are only a courtesy for lag monitoring; the ``projection_offsets``
table is the truth.

Records a projection rejects (undecodable, illegal transition, unstorable) are
skipped: a poison message never blocks its partition. The first projection's
rejections are published to the dead-letter topic; the others apply the same
decoding and transition rules, so theirs would be copies, and are only logged.

Two advisory locks per projection coordinate live projectors with a replay
(``services.projector.replay``): every live batch transaction first takes each
projection's batch lock (``lock_key``) shared, so a replay's swap, which takes it
exclusively, waits for the batches in flight and holds new ones back only while it
swaps; and a live projector holds each presence lock (``presence_key``) shared for its
whole life, so a replay can tell whether one is running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from adapters.backoff import Backoff
from adapters.kafka import (
    batch_consumer_options,
    client_options,
    group_options,
    producer_options,
)
from adapters.metrics import (
    DEAD_LETTERS,
    EVENTS_CONSUMED,
    PROJECTOR_BATCH_SIZE,
    PROJECTOR_COMMIT_SECONDS,
)
from adapters.ops import Lag, consumer_lag
from adapters.postgres import CONNECTION_ERRORS, Connection, connect
from adapters.settings import Settings
from events.messages import encode
from projections.batch import decode_records
from projections.contract import (
    BatchResult,
    Decoded,
    LogRecord,
    Projection,
    Rejection,
    Stats,
    dead_letter,
    ensure_schema,
    stored_offsets,
)

log = logging.getLogger(__name__)

# Claim a partition's next batch: move the stored offset from where this process
# believes it is to the end of the batch. No row back means another process moved
# it first (a rebalance race), and the whole batch is rolled back.
_CLAIM_SQL = """
INSERT INTO projection_offsets (projection, topic, partition, next_offset)
VALUES (%(projection)s, %(topic)s, %(partition)s, %(next_offset)s)
ON CONFLICT (projection, topic, partition) DO UPDATE
    SET next_offset = EXCLUDED.next_offset
    WHERE projection_offsets.next_offset = %(expected)s
RETURNING next_offset
"""

# Errors that a single record's data can cause; anything else is infrastructure.
_POISON_ERRORS = (psycopg.DataError, psycopg.IntegrityError)


class PositionConflictError(RuntimeError):
    """Another process advanced a partition this process was about to project."""


def lock_key(projection: Projection) -> str:
    """Return the advisory-lock name of a projection's batches: shared per live batch,
    exclusive while a replay swaps its tables."""
    return f"oee.projection.{projection.name}"


def presence_key(projection: Projection) -> str:
    """Return the advisory-lock name a live projector holds shared for its whole life."""
    return f"oee.projector.{projection.name}"


class _Listener(ConsumerRebalanceListener):
    """Seek newly assigned partitions to the offsets stored in PostgreSQL."""

    def __init__(self, runner: MultiProjectionRunner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Taking the lock waits for an in-flight batch to commit before giving up.
        async with self._runner.lock:
            self._runner.forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._runner.lock:
            try:
                await self._runner.seek_to_stored(sorted(assigned))
            except (psycopg.Error, OSError) as exc:
                # Unknown offsets: nothing is projected until a later step resyncs.
                log.error("cannot read stored offsets of %s: %r", sorted(assigned), exc)
                self._runner.request_resync()


@dataclass(eq=False)
class MultiProjectionRunner:
    """Consume a topic into one or more projections, one transaction per batch.

    With ``group_id`` the partitions come from a consumer group (several live
    projectors share the work); without it every partition is assigned (replay).
    With ``search_path`` the projections' tables and offsets live in that schema.
    """

    settings: Settings
    projections: tuple[Projection, ...]
    group_id: str | None = None
    # A live runner announces itself and takes the batch locks shared in every batch;
    # a rebuild into a schema of its own does neither.
    live: bool = True
    search_path: str | None = None
    # Publish the first projection's rejections to the dead-letter topic.
    publish_dead_letters: bool = True
    max_records: int = 500
    # Running totals per projection name.
    stats: dict[str, Stats] = field(init=False)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    _conn: Connection | None = field(default=None, init=False)
    _consumer: Any = field(default=None, init=False)
    _producer: Any = field(default=None, init=False)
    # Per projection name, the next offset to project per owned partition, as
    # committed in PostgreSQL.
    _positions: dict[str, dict[TopicPartition, int]] = field(init=False)
    _resync_pending: bool = field(default=False, init=False)
    # Failures in a row (a batch, or reading the stored offsets) space the next try.
    _backoff: Backoff = field(default_factory=Backoff, init=False)
    # A catch-up (replay) fails on the first broken batch instead of retrying forever.
    _fail_fast: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.projections = tuple(self.projections)
        names = [p.name for p in self.projections]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"projections must be named and distinct, not {names}")
        self.stats = {name: Stats() for name in names}
        self._positions = {name: {} for name in names}

    @property
    def topic(self) -> str:
        return self.settings.events_topic

    @property
    def name(self) -> str:
        """Return the projections' names, for logs: ``orders+analytics``."""
        return "+".join(p.name for p in self.projections)

    async def run(self, stop: asyncio.Event) -> dict[str, Stats]:
        """Project until ``stop`` is set; return each projection's totals by name."""
        try:
            await self._start()
            while not stop.is_set():
                await self._step()
        finally:
            await self._close()
        return self.stats

    async def catch_up(self) -> dict[str, Stats]:
        """Project every partition from its stored offset up to the end offsets taken now."""
        async with self.catching_up():
            await self.project_until(await self.end_offsets())
        return self.stats

    @asynccontextmanager
    async def catching_up(self) -> AsyncIterator[None]:
        """Connect for ``project_until`` calls; a broken batch raises instead of retrying."""
        self._fail_fast = True
        try:
            await self._start()
            yield
        finally:
            await self._close()

    async def end_offsets(self) -> dict[TopicPartition, int]:
        """Return the log end offset of every assigned partition, as of now."""
        partitions = sorted(self._consumer.assignment())
        ends: dict[TopicPartition, int] = await self._consumer.end_offsets(partitions)
        return ends

    async def begin_offsets(self) -> dict[TopicPartition, int]:
        """Return the first offset still on the log of every assigned partition."""
        partitions = sorted(self._consumer.assignment())
        begins: dict[TopicPartition, int] = await self._consumer.beginning_offsets(partitions)
        return begins

    async def project_until(
        self,
        until: Mapping[TopicPartition, int],
        on_batch: Callable[[], None] | None = None,
    ) -> None:
        """Project every assigned partition up to (excluding) its offset in ``until``,
        calling ``on_batch`` after each fetch.

        A partition missing from ``until`` is not projected. Only inside ``catching_up``.
        """
        partitions = sorted(self._consumer.assignment())
        while True:
            positions = [await self._consumer.position(tp) for tp in partitions]
            if all(pos >= until.get(tp, 0) for tp, pos in zip(partitions, positions, strict=True)):
                break
            await self._step(until)
            if on_batch is not None:
                on_batch()
        # A fetch may have read past ``until`` and dropped the rest: rewind so that a
        # later call projects those records instead of skipping them.
        projected = self.positions
        for tp, pos in zip(partitions, positions, strict=True):
            if pos > projected.get(tp, 0):
                self._consumer.seek(tp, projected.get(tp, 0))

    @property
    def positions(self) -> dict[TopicPartition, int]:
        """Return the next offset to project per owned partition, as committed: the
        lowest over the projections, where the consumer reads from."""
        owned = [self._positions[p.name] for p in self.projections]
        return {tp: min(own[tp] for own in owned) for tp in owned[0] if all(tp in o for o in owned)}

    async def connection(self) -> Connection:
        """Return the runner's connection: batches projected while the caller holds a
        transaction open on it become savepoints of that transaction."""
        return await self._db()

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop the positions of partitions this process no longer owns."""
        for own in self._positions.values():
            for tp in partitions:
                own.pop(tp, None)

    def request_resync(self) -> None:
        """Make the next step re-read the stored offsets before projecting anything."""
        self._resync_pending = True

    async def seek_to_stored(self, partitions: Sequence[TopicPartition]) -> None:
        """Seek each partition to the lowest offset its projections have stored in
        PostgreSQL (0 when none)."""
        if not partitions:
            return
        conn = await self._db()
        for projection in self.projections:
            offsets = await stored_offsets(conn, projection.name, partitions)
            self._positions[projection.name].update(offsets)
            log.info("projection %s is at %s", projection.name, offsets)
        start = self.positions
        for tp in partitions:
            self._consumer.seek(tp, start[tp])

    # Internals -----------------------------------------------------------------

    async def _start(self) -> None:
        await self._db()
        if self.publish_dead_letters:
            self._producer = AIOKafkaProducer(**producer_options(self.settings))
            await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            group_id=self.group_id,
            group_instance_id=(
                f"{self.group_id}-{self.settings.projector_instance}" if self.group_id else None
            ),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            **batch_consumer_options(self.settings),
            # A dead projector's partitions wait this long for it before another takes them.
            **(group_options(self.settings) if self.group_id else {}),
        )
        await self._consumer.start()
        if self.group_id is None:
            partitions = await self._all_partitions()
            self._consumer.assign(partitions)
            async with self.lock:
                await self.seek_to_stored(partitions)
        else:
            self._consumer.subscribe([self.topic], listener=_Listener(self))

    async def _close(self) -> None:
        for client in (self._consumer, self._producer):
            if client is not None:
                await client.stop()
        if self._conn is not None:
            await self._conn.close()
        self._consumer = self._producer = self._conn = None

    async def _all_partitions(self) -> list[TopicPartition]:
        admin = AIOKafkaAdminClient(**client_options(self.settings))
        await admin.start()
        try:
            [described] = await admin.describe_topics([self.topic])
        finally:
            await admin.close()
        if described["error_code"] or not described["partitions"]:
            raise RuntimeError(f"topic {self.topic!r} is not available")
        numbers = sorted(p["partition"] for p in described["partitions"])
        return [TopicPartition(self.topic, p) for p in numbers]

    async def _db(self) -> Connection:
        """Return the open connection, reconnecting (and re-locking) after a loss."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = await connect(self.settings, search_path=self.search_path)
        try:
            for projection in self.projections:
                if self.live:
                    # Held while connected: how a replay knows a live projector runs.
                    await conn.execute(
                        "SELECT pg_advisory_lock_shared(hashtext(%s))",
                        (presence_key(projection),),
                    )
                await ensure_schema(conn, projection)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return conn

    async def _step(self, ends: Mapping[TopicPartition, int] | None = None) -> None:
        if self._resync_pending:
            async with self.lock:
                await self._resync()
            if self._resync_pending:
                return
        fetched: dict[TopicPartition, list[Any]] = await self._consumer.getmany(
            timeout_ms=500, max_records=self.max_records
        )
        if not fetched:
            return
        async with self.lock:
            batch = self._fresh(fetched, ends)
            if not batch:
                return
            started = time.perf_counter()
            try:
                results = await self._commit(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._fail_fast:
                    raise
                await self._recover(exc)
                return
            took_s = time.perf_counter() - started
            for name, (size, result) in results.items():
                self.stats[name].add(result)
                self._measure(name, size, result, took_s)
            self._backoff.reset()
        if self.group_id is not None:
            await self._commit_to_kafka(batch)

    def _measure(self, name: str, size: int, result: BatchResult, took_s: float) -> None:
        # Per projection, as when each ran its own transaction: the records it was
        # handed, and the time of the transaction they share.
        PROJECTOR_BATCH_SIZE.labels(name).observe(size)
        PROJECTOR_COMMIT_SECONDS.labels(name).observe(took_s)
        EVENTS_CONSUMED.labels(f"projector.{name}", "any").inc(size)
        if result.rejected:
            DEAD_LETTERS.labels(f"projector.{name}").inc(len(result.rejected))

    async def lag(self) -> Lag:
        """Return how far this runner's partitions are behind the log end."""
        if self.group_id is None:
            return {}
        return await consumer_lag(self._consumer, self.group_id, self.positions)

    def assignment(self) -> list[TopicPartition]:
        """Return the partitions this runner owns now."""
        return sorted(self._consumer.assignment()) if self._consumer is not None else []

    def _fresh(
        self, fetched: dict[TopicPartition, list[Any]], ends: Mapping[TopicPartition, int] | None
    ) -> dict[TopicPartition, list[LogRecord]]:
        """Keep the records of owned partitions that some projection has not yet
        projected (nor past ``ends``)."""
        start = self.positions
        batch: dict[TopicPartition, list[LogRecord]] = {}
        for tp, records in fetched.items():
            position = start.get(tp)
            if position is None:
                continue  # revoked while the batch was in flight
            end = ends.get(tp, 0) if ends is not None else None
            kept = [
                LogRecord(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)
                for r in records
                if r.offset >= position and (end is None or r.offset < end)
            ]
            if kept:
                batch[tp] = kept
        return batch

    async def _commit(
        self, batch: dict[TopicPartition, list[LogRecord]]
    ) -> dict[str, tuple[int, BatchResult]]:
        """Apply a batch to every projection and advance their offsets in one
        transaction; return, per projection, the records it was handed and its result."""
        conn = await self._db()
        decoded = {tp: decode_records(batch[tp]) for tp in sorted(batch)}
        ends = {tp: rs[-1].offset + 1 for tp, rs in batch.items()}
        results: dict[str, tuple[int, BatchResult]] = {}
        async with conn.transaction():
            if self.live:
                # Waits while a replay swaps the tables; released with the transaction.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock_shared(hashtext(k)) FROM unnest(%s::text[]) k",
                    ([lock_key(p) for p in self.projections],),
                )
            for projection in self.projections:
                own = self._positions[projection.name]
                for tp in sorted(ends):
                    if ends[tp] > own[tp]:
                        await self._claim(conn, projection, tp, ends[tp])
                # A projection ahead of the others skips the records it already has.
                mine = [
                    item
                    for tp, items in decoded.items()
                    for item in items
                    if item[0].offset >= own[tp]
                ]
                result = await self._apply(conn, projection, mine) if mine else BatchResult()
                results[projection.name] = (len(mine), result)
            await self._publish(results)
        for own in self._positions.values():
            for tp, end in ends.items():
                own[tp] = max(own[tp], end)
        return results

    async def _claim(
        self, conn: Connection, projection: Projection, tp: TopicPartition, next_offset: int
    ) -> None:
        expected = self._positions[projection.name][tp]
        cur = await conn.execute(
            _CLAIM_SQL,
            {
                "projection": projection.name,
                "topic": tp.topic,
                "partition": tp.partition,
                "next_offset": next_offset,
                "expected": expected,
            },
        )
        if await cur.fetchone() is None:
            raise PositionConflictError(f"{projection.name} {tp} moved past {expected} elsewhere")

    async def _apply(
        self, conn: Connection, projection: Projection, decoded: Sequence[Decoded]
    ) -> BatchResult:
        """Apply decoded records in a savepoint; one by one if the database refuses it."""
        try:
            async with conn.transaction():
                return await projection.apply(conn, decoded)
        except _POISON_ERRORS as exc:
            log.warning(
                "batch rejected by the database in %s (%s); applying one by one",
                projection.name,
                exc,
            )
        applied = skipped = 0
        rejected: list[Rejection] = []
        for item in decoded:
            try:
                async with conn.transaction():
                    one = await projection.apply(conn, [item])
            except _POISON_ERRORS as exc:
                rejected.append(Rejection(item[0], f"{type(exc).__name__}: {exc}"))
                continue
            applied += one.applied
            skipped += one.skipped
            rejected.extend(one.rejected)
        return BatchResult(applied, skipped, tuple(rejected))

    async def _publish(self, results: Mapping[str, tuple[int, BatchResult]]) -> None:
        """Log every rejection and send the first projection's dead letters, before the
        offsets commit: a crash repeats, never loses, them."""
        first = self.projections[0].name
        for name, (_, result) in results.items():
            for rejection in result.rejected:
                log.warning(
                    "dead letter (%s) %s[%d]@%d: %s",
                    name,
                    rejection.record.topic,
                    rejection.record.partition,
                    rejection.record.offset,
                    rejection.error,
                )
                if self._producer is not None and name == first:
                    await self._producer.send_and_wait(
                        self.settings.dead_letter_topic,
                        encode(dead_letter(rejection)),
                        key=rejection.record.key,
                    )

    async def _recover(self, exc: Exception) -> None:
        """Log a failed batch, back off, and seek back to the committed offsets."""
        for stats in self.stats.values():
            stats.errors += 1
        if isinstance(exc, PositionConflictError):
            log.info("projections %s: %s; resyncing", self.name, exc)
        else:
            delay = self._backoff.next_s()
            if isinstance(exc, CONNECTION_ERRORS):
                # PostgreSQL restarting is expected, not a bug: one line, no traceback.
                log.warning(
                    "projections %s lost PostgreSQL (%s); reconnecting in %.1fs",
                    self.name,
                    str(exc).strip(),
                    delay,
                )
            else:
                log.error("projections %s batch failed: %r", self.name, exc, exc_info=exc)
            await asyncio.sleep(delay)
        if self._conn is not None and self._conn.broken:
            await self._conn.close()
        await self._resync()

    async def _resync(self) -> None:
        """Seek every owned partition back to its stored offset, or retry on the next step."""
        try:
            await self.seek_to_stored(sorted(self._consumer.assignment()))
        except (psycopg.Error, OSError) as exc:
            delay = self._backoff.next_s()
            log.warning(
                "projections %s cannot read their stored offsets yet (%s); trying again in %.1fs",
                self.name,
                str(exc).strip(),
                delay,
            )
            # Nothing is projected until the offsets are known again.
            for own in self._positions.values():
                own.clear()
            self._resync_pending = True
            await asyncio.sleep(delay)
        else:
            self._resync_pending = False

    async def _commit_to_kafka(self, batch: dict[TopicPartition, list[LogRecord]]) -> None:
        offsets = {tp: rs[-1].offset + 1 for tp, rs in batch.items()}
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:  # informational only; PostgreSQL holds the truth
            log.debug("kafka offset commit skipped: %r", exc)
