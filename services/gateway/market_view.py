"""What the gateway knows of the market: the market topic read whole, then tailed.

The market service publishes each change of a venue's pool to the compacted market
topic (``events.market``). ``MarketBook`` folds those messages into what the web
page shows: every pool as it stands, the recent prices of each pool for a chart,
and the tokens that launched. It is pure; ``MarketWatch`` feeds it from the log.
Nothing here grows with time: each pool keeps its last ``points`` prices.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from aiokafka import AIOKafkaConsumer

from adapters.settings import Settings
from events.market import MarketEvent, PoolCreated, decode_market
from events.messages import DecodeError
from services.gateway.tail import fetch_forever, read_from_start, stop_reader

log = logging.getLogger(__name__)

# Prices kept per pool: two minutes of a market that moves every second.
POINTS_PER_POOL = 120


@dataclass(frozen=True, slots=True)
class PricePoint:
    """A pool's price (quote per base) as of a market message."""

    at: datetime
    price: Decimal
    seq: int


@dataclass(frozen=True, slots=True)
class Launch:
    """A token that launched: the pool that listed it first."""

    token: str
    venue: str
    pool_id: str
    quote: str
    price: Decimal
    at: datetime


class MarketBook:
    """Every pool's last message, its recent prices, and the launches, folded from the log."""

    def __init__(self, points: int = POINTS_PER_POOL) -> None:
        self._points = points
        self._pools: dict[str, MarketEvent] = {}
        self._prices: dict[str, deque[PricePoint]] = {}
        self._launches: dict[str, Launch] = {}

    def add(self, event: MarketEvent) -> bool:
        """Fold one market message; return False for one already seen (its seq or older)."""
        last = self._pools.get(event.pool_id)
        if last is not None and event.seq <= last.seq:
            return False  # at-least-once: a re-published message, or one out of date
        self._pools[event.pool_id] = event
        prices = self._prices.setdefault(event.pool_id, deque(maxlen=self._points))
        prices.append(PricePoint(event.occurred_at, event.price, event.seq))
        token = event.launched_token if isinstance(event, PoolCreated) else None
        if token is not None and token not in self._launches:
            self._launches[token] = Launch(
                token, event.venue, event.pool_id, event.quote, event.price, event.occurred_at
            )
        return True

    def pools(self) -> list[MarketEvent]:
        """Return every pool's last message, by pool id."""
        return [self._pools[pool_id] for pool_id in sorted(self._pools)]

    def tokens(self) -> list[str]:
        """Return every token some venue's pool lists, by symbol."""
        return sorted({t for pool in self._pools.values() for t in (pool.base, pool.quote)})

    def launches(self) -> list[Launch]:
        """Return the tokens that launched, newest first."""
        return sorted(self._launches.values(), key=lambda launch: launch.at, reverse=True)

    def prices(self, token_a: str, token_b: str) -> list[tuple[MarketEvent, list[PricePoint]]]:
        """Return each pool of the pair of ``token_a`` and ``token_b`` (either way round)
        with its recent prices, oldest first, by pool id."""
        pair = {token_a, token_b}
        return [
            (pool, list(self._prices[pool.pool_id]))
            for pool in self.pools()
            if {pool.base, pool.quote} == pair
        ]


class MarketWatch:
    """Reads the market topic from the beginning and keeps tailing it into a ``MarketBook``."""

    def __init__(self, settings: Settings, book: MarketBook | None = None) -> None:
        self._settings = settings
        self.book = book or MarketBook()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, partitions: Iterable[int]) -> None:
        """Start reading every partition of the market topic from its beginning.

        It does not wait to have read it: the topic is compacted to about one message
        per pool, so the book is whole within a fetch or two.
        """
        consumer, _ = await read_from_start(self._settings, self._settings.market_topic, partitions)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name="market-watch")

    async def stop(self) -> None:
        await stop_reader(self._task, self._consumer, "the market watch")

    async def _run(self) -> None:
        assert self._consumer is not None
        async for batches in fetch_forever(self._consumer, "the market watch", max_records=2000):
            for records in batches.values():
                for record in records:
                    if record.value is None:
                        continue  # a tombstone of the compacted topic
                    try:
                        self.book.add(decode_market(record.value))
                    except DecodeError as exc:
                        log.warning("a market message does not decode; ignored: %s", exc)
