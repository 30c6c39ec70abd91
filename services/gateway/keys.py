"""Who is calling: the API keys this gateway knows, read from the accounts topic.

The gateway never writes a database, and the log is the truth: ``oee keys create``
writes a key's record (its hash, account, name and role) to the compacted accounts
topic, and every gateway reads that topic from the beginning at start-up, then
tails it, holding the map in memory. A key created while the gateway runs works
as soon as the tail reads it (within a fetch, well under a second).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from adapters.settings import Settings
from domain.accounts import DEV_ACCOUNT, Caller, TokenBucket, hash_key
from events.accounts import KeyCreated, decode_key_record
from events.messages import DecodeError
from services.gateway.tail import fetch_forever, read_from_start, stop_reader

log = logging.getLogger(__name__)

# Buckets kept at most; the least recently used account's is dropped first (it
# starts full again, which only ever lets an idle account through).
_MAX_BUCKETS = 100_000


class KeyRing:
    """The keys known, by hash: the accounts topic read whole and tailed."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._callers: dict[str, Caller] = {}
        if settings.dev_api_key:
            self._callers[hash_key(settings.dev_api_key)] = Caller(DEV_ACCOUNT, "admin", "dev")
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    def caller(self, key: str) -> Caller | None:
        """Return whom ``key`` belongs to, or None for a key nobody created."""
        return self._callers.get(hash_key(key))

    def add(self, record: KeyCreated) -> None:
        """Take a key record read from the accounts topic."""
        self._callers[record.key_hash] = Caller(record.account, record.role, record.name)

    async def start(self, partitions: Iterable[int]) -> None:
        """Read every key on the accounts topic, then keep tailing it."""
        consumer, assigned = await read_from_start(
            self._settings, self._settings.accounts_topic, partitions
        )
        self._consumer = consumer
        # Serve no request before the keys that exist are known.
        ends = await consumer.end_offsets(assigned)
        for tp, end in ends.items():
            while await consumer.position(tp) < end:
                self._take(await consumer.getmany(tp, timeout_ms=500))
        log.info("%d API keys known", len(self._callers))
        self._task = asyncio.create_task(self._run(), name="key-ring")

    async def stop(self) -> None:
        await stop_reader(self._task, self._consumer, "the key ring")

    async def _run(self) -> None:
        assert self._consumer is not None
        async for batches in fetch_forever(self._consumer, "the key ring"):
            self._take(batches)

    def _take(self, batches: dict[TopicPartition, list[object]]) -> None:
        for records in batches.values():
            for record in records:
                value = getattr(record, "value", None)
                if value is None:
                    continue
                try:
                    self.add(decode_key_record(value))
                except DecodeError:
                    log.warning("an accounts record does not decode; ignored")


class RateLimits:
    """A token bucket per account; ``check`` answers how long to wait, 0 when allowed."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, account: str) -> float:
        now = self._clock()
        bucket = self._buckets.pop(account, None)
        if bucket is None:
            bucket = TokenBucket(self._rate, self._burst, now)
            if len(self._buckets) >= _MAX_BUCKETS:
                self._buckets.pop(next(iter(self._buckets)))
        self._buckets[account] = bucket  # most recently used last
        return bucket.take(now)
