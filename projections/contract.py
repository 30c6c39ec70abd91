"""What every read model is to the projector, and where its position is kept.

A projection turns records of the log, decoded, into rows (``Projection.apply``,
inside the caller's transaction). The log offsets its rows reflect live beside them in
``projection_offsets``, written in the same transaction, so the rows and their
position never disagree. The projector process runs every projection live and
rebuilds one from the start of the log on demand (``oee replay``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from aiokafka import TopicPartition

from adapters.postgres import Connection
from events.messages import DeadLetter, Event

TRACKING_DDL = """
CREATE TABLE IF NOT EXISTS projection_offsets (
    projection  text    NOT NULL,
    topic       text    NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint  NOT NULL CHECK (next_offset >= 0),
    PRIMARY KEY (projection, topic, partition)
);
"""


@dataclass(frozen=True)
class LogRecord:
    """One record from the log, with its position; independent of the Kafka client."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


# A record and its event, or the reason it is none (``projections.batch.decode_records``):
# the projector decodes a batch once and hands it to every projection.
Decoded = tuple[LogRecord, Event | str]


@dataclass(frozen=True)
class Rejection:
    """A record a projection refuses, and why."""

    record: LogRecord
    error: str


@dataclass(frozen=True)
class BatchResult:
    """What a projection did with a batch of records."""

    applied: int = 0
    skipped: int = 0
    rejected: tuple[Rejection, ...] = ()


@dataclass
class Stats:
    """Running totals of a projection run."""

    batches: int = 0
    applied: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    errors: int = 0

    def add(self, result: BatchResult) -> None:
        self.batches += 1
        self.applied += result.applied
        self.skipped += result.skipped
        self.dead_lettered += len(result.rejected)


class Projection(Protocol):
    """A read model built from the log."""

    name: str

    # Read-only, so a class attribute such as ``tables = ("a", "b")`` satisfies it.
    @property
    def tables(self) -> tuple[str, ...]:
        """Return every table ``ddl`` creates, in the order they can be dropped: a
        replay swaps (or checks) exactly these."""
        ...

    def ddl(self) -> str:
        """Return idempotent DDL creating the read-model tables."""
        ...

    def drop_ddl(self) -> str:
        """Return DDL dropping the read-model tables."""
        ...

    async def apply(self, conn: Connection, decoded: Sequence[Decoded]) -> BatchResult:
        """Write the decoded records' effects inside the caller's transaction."""
        ...


async def ensure_schema(conn: Connection, projection: Projection) -> None:
    """Create the tracking table and the projection's tables if missing."""
    async with conn.transaction():
        # Two processes starting together would race on CREATE ... IF NOT EXISTS.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('oee.schema'))")
        await conn.execute(TRACKING_DDL)
        await conn.execute(projection.ddl())


async def stored_offsets(
    conn: Connection, projection: str, partitions: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    """Return the next offset to project for each partition (0 when none is stored)."""
    cur = await conn.execute(
        "SELECT topic, partition, next_offset FROM projection_offsets WHERE projection = %s",
        (projection,),
    )
    stored = {TopicPartition(t, p): int(o) for t, p, o in await cur.fetchall()}
    return {tp: stored.get(tp, 0) for tp in partitions}


def dead_letter(rejection: Rejection) -> DeadLetter:
    """Build the dead letter of a rejected record; its time is the record's, not now."""
    record = rejection.record
    return DeadLetter(
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key.decode(errors="backslashreplace") if record.key is not None else None,
        value=record.value.decode(errors="backslashreplace") if record.value is not None else "",
        error=rejection.error,
        occurred_at=datetime.fromtimestamp(record.timestamp_ms / 1000, UTC),
    )
