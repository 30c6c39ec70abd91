"""Read topics as they stand: every partition from its start to its end offset taken now.

No consumer group: nothing is committed and no live consumer's partitions move, so
any number of readers can run beside the system. Records come in batches, each
partition's in log order; a reader of tens of thousands of messages pays for round
trips, not for messages.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from adapters.kafka import client_options
from adapters.settings import Settings

# Records handed over per batch, and bytes fetched per partition and request: large,
# so that reading a whole topic takes few round trips.
BATCH_RECORDS = 10_000
FETCH_BYTES_PER_PARTITION = 8 * 1024 * 1024


class MissingTopicError(RuntimeError):
    """A topic to read does not exist on the broker."""


class ReadStalledError(TimeoutError):
    """The broker stopped handing out records before the end offsets were reached."""


# A record as the broker gave it: its position, key, value and timestamp (ms since the epoch).
TopicRecord: TypeAlias = ConsumerRecord[bytes, bytes]


class TopicSnapshot:
    """The records of some topics up to the end offsets taken when it was opened."""

    def __init__(self, consumer: Any, ends: Mapping[TopicPartition, int], idle_s: float) -> None:
        self._consumer = consumer
        self._idle_s = idle_s
        self.ends: dict[TopicPartition, int] = dict(ends)

    async def batches(self) -> AsyncIterator[list[TopicRecord]]:
        """Yield every record before the end offsets, in batches.

        Raise ``ReadStalledError`` when no record arrives for the idle time while
        some partition is short of its end.
        """
        consumer = self._consumer
        pending = {tp for tp, end in self.ends.items() if await consumer.position(tp) < end}
        consumer.pause(*(set(self.ends) - pending))
        last_progress = time.monotonic()
        while pending:
            fetched: dict[TopicPartition, list[TopicRecord]] = await consumer.getmany(
                timeout_ms=500, max_records=BATCH_RECORDS
            )
            batch = [
                r for tp, records in fetched.items() for r in records if r.offset < self.ends[tp]
            ]
            done = {tp for tp in pending if await consumer.position(tp) >= self.ends[tp]}
            if done:
                # Stop fetching what lies past the end: records written since the start.
                consumer.pause(*done)
                pending -= done
            if batch or done:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > self._idle_s:
                short = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(pending))
                raise ReadStalledError(f"no records for {self._idle_s:.0f}s from {short}")
            if batch:
                yield batch


async def _partitions(settings: Settings, topics: Sequence[str]) -> list[TopicPartition]:
    """Return every partition of ``topics``; raise ``MissingTopicError`` if one is absent."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        described: list[dict[str, Any]] = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    found = {t["topic"]: t["partitions"] for t in described if not t["error_code"]}
    missing = [topic for topic in topics if not found.get(topic)]
    if missing:
        raise MissingTopicError(f"no topic {', '.join(missing)} on {settings.bootstrap}")
    return [
        TopicPartition(topic, number)
        for topic in topics
        for number in sorted(p["partition"] for p in found[topic])
    ]


@asynccontextmanager
async def read_topics(
    settings: Settings, topics: Sequence[str], *, idle_s: float = 30.0
) -> AsyncIterator[TopicSnapshot]:
    """Open a snapshot of ``topics``: every partition from its first record to the end
    offset it has now. Raise ``MissingTopicError`` if one does not exist."""
    partitions = await _partitions(settings, topics)
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=FETCH_BYTES_PER_PARTITION,
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        yield TopicSnapshot(consumer, ends, idle_s)
    finally:
        await consumer.stop()
