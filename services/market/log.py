"""The market topic: read the last message of every pool, and publish new ones."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from adapters.kafka import client_options, producer_options
from adapters.metrics import count_written
from adapters.settings import Settings
from events.market import MarketEvent, decode_market, encode_market, pool_key
from events.messages import DecodeError
from services.market.feed import fold_pools

log = logging.getLogger(__name__)


async def _partitions(settings: Settings) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        [described] = await admin.describe_topics([settings.market_topic])
    finally:
        await admin.close()
    if described["error_code"] or not described["partitions"]:
        raise RuntimeError(f"topic {settings.market_topic!r} is not available")
    numbers = sorted(p["partition"] for p in described["partitions"])
    return [TopicPartition(settings.market_topic, number) for number in numbers]


async def read_market(settings: Settings) -> dict[str, MarketEvent]:
    """Return the last message of every pool on the market topic, as of now.

    Reads every partition from the beginning to the end offsets taken at the start,
    without a consumer group. The topic is compacted, so this is about one message
    per pool. Messages that do not decode are logged and skipped.
    """
    partitions = await _partitions(settings)
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        last: dict[str, MarketEvent] = {}
        while True:
            positions = {tp: await consumer.position(tp) for tp in partitions}
            if all(positions[tp] >= ends[tp] for tp in partitions):
                return last
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp] or record.value is None:
                        continue
                    try:
                        event = decode_market(record.value)
                    except DecodeError as exc:
                        log.warning("skipping %s@%d: %s", tp, record.offset, exc)
                        continue
                    last = fold_pools(last, [event])
    finally:
        await consumer.stop()


class MarketPublisher:
    """Publishes market messages keyed by pool (acks=all, idempotent producer)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Connect to the broker."""
        self._producer = AIOKafkaProducer(**producer_options(self._settings))
        await self._producer.start()

    async def stop(self) -> None:
        """Flush and disconnect."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def __call__(self, events: Sequence[MarketEvent]) -> None:
        """Publish ``events`` in order and return once the broker has them all."""
        assert self._producer is not None, "start the publisher first"
        # A pool's messages share a key, hence a partition: the idempotent producer
        # keeps them in order while the sends of all pools are in flight together.
        sent = [
            await self._producer.send(
                self._settings.market_topic, encode_market(event), key=pool_key(event.pool_id)
            )
            for event in events
        ]
        await asyncio.gather(*sent)
        count_written(event.type for event in events)
