"""The market feed: each change of a venue's pool becomes one market message.

The pure parts say what to publish and how the simulated market moves:
``changes`` compares the pools as published with the pools as they are now,
``drift_moves`` draws other traders' price steps, ``launch_symbols`` names the
tokens that launch. ``MarketFeed`` runs them against the venues and the log through
small ports, on an injected clock and sleep.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from adapters.venues.interface import PoolInfo, VenueError
from domain.tokens import TOKENS
from events.market import LiquidityAdded, MarketEvent, PoolCreated, PriceTick

log = logging.getLogger(__name__)

# Message ids are derived from (pool, seq): a message published again after a
# crash keeps its id, and replaying the same market gives the same ids.
MARKET_NAMESPACE = uuid.UUID("5f0c3e2a-7d4b-4f7e-9a51-3c2b1d0e8f64")
# Liquidity that grew by less than this fraction is not worth a LiquidityAdded of
# its own (fees kept by a constant-product pool grow it a little on every swap);
# the next message of the pool carries it.
LIQUIDITY_STEP = Decimal("0.001")
# Drift steps are drawn in hundredths of a basis point, like the venues' walk.
DRIFT_UNITS_PER_BPS = 100
# Codes a launch answers when the symbol or its pool exists already.
TAKEN_CODES = frozenset({"TOKEN_EXISTS", "POOL_EXISTS"})

Publish = Callable[[Sequence[MarketEvent]], Awaitable[None]]


class MarketVenue(Protocol):
    """What the feed needs of a venue (``adapters.venues.client.HttpVenue``)."""

    name: str

    async def pools(self) -> tuple[PoolInfo, ...]: ...

    async def launch(self, symbol: str) -> PoolInfo: ...

    async def drift(self, moves: Iterable[tuple[str, str, Decimal]]) -> None: ...


def message_id(pool_id: str, seq: int) -> uuid.UUID:
    """Return the id of a pool's message number ``seq``."""
    return uuid.uuid5(MARKET_NAMESPACE, f"{pool_id}:{seq}")


def changes(
    published: Mapping[str, MarketEvent],
    pools: Iterable[PoolInfo],
    at: datetime,
    *,
    reopened: Collection[str] = (),
) -> list[MarketEvent]:
    """Return the messages that bring ``published`` (last message per pool) up to ``pools``.

    A pool never published is created (seq 1); so is one in ``reopened``, a pool
    that had gone (its venue restarted) and is back, with its seq continuing. A
    known pool whose liquidity grew by ``LIQUIDITY_STEP`` or more gets a
    LiquidityAdded, one whose price changed a PriceTick (both, in that order, when
    both happened). Each message carries the pool's whole state; an unchanged pool
    gets none.
    """
    events: list[MarketEvent] = []
    for pool in pools:
        last = published.get(pool.pool_id)
        seq = 0 if last is None else last.seq
        state = {
            "occurred_at": at,
            "venue": pool.venue,
            "pool_id": pool.pool_id,
            "base": pool.base,
            "quote": pool.quote,
            "price": pool.price,
            "liquidity_usd": pool.liquidity_usd,
        }
        if last is None or pool.pool_id in reopened:
            events.append(
                PoolCreated(
                    message_id=message_id(pool.pool_id, seq + 1),
                    seq=seq + 1,
                    launched_token=pool.base if pool.launched else None,
                    launched_decimals=pool.base_decimals if pool.launched else None,
                    **state,
                )
            )
            continue
        added = pool.liquidity_usd - last.liquidity_usd
        if added > 0 and added >= last.liquidity_usd * LIQUIDITY_STEP:
            seq += 1
            events.append(
                LiquidityAdded(
                    message_id=message_id(pool.pool_id, seq), seq=seq, added_usd=added, **state
                )
            )
        if pool.price != last.price:
            seq += 1
            events.append(PriceTick(message_id=message_id(pool.pool_id, seq), seq=seq, **state))
    return events


def fold_pools(
    published: Mapping[str, MarketEvent], events: Iterable[MarketEvent]
) -> dict[str, MarketEvent]:
    """Return the last message per pool after ``events``: the highest seq wins."""
    last = dict(published)
    for event in events:
        known = last.get(event.pool_id)
        if known is None or event.seq > known.seq:
            last[event.pool_id] = event
    return last


def drift_moves(
    pools: Iterable[PoolInfo], rng: random.Random, max_bps: Decimal
) -> list[tuple[PoolInfo, Decimal]]:
    """Return a price step for each pool, uniform within ±``max_bps``, by pool id.

    One draw per pool, in pool-id order, even when it is zero, so the same pools
    and seed give the same steps. Zero steps are left out.
    """
    units = int(max_bps * DRIFT_UNITS_PER_BPS)
    if units <= 0:
        return []
    moves = []
    for pool in sorted(pools, key=lambda p: p.pool_id):
        step = rng.randint(-units, units)
        if step:
            moves.append((pool, Decimal(step) / (10_000 * DRIFT_UNITS_PER_BPS)))
    return moves


_CONSONANTS = "BCDFGHJKLMNPRSTVWZ"
_VOWELS = "AEIOU"


def launch_symbols(seed: int) -> Iterator[str]:
    """Yield the symbols of scheduled launches: pronounceable, distinct, never listed."""
    rng = random.Random(f"{seed}:market:launch")
    seen: set[str] = set(TOKENS)
    while True:
        syllables = 2 + (rng.random() < 0.5)
        symbol = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables))
        if symbol not in seen:
            seen.add(symbol)
            yield symbol


def _utc_now() -> datetime:
    return datetime.now(UTC)


class MarketFeed:
    """Reads every venue's pools each step and publishes what changed.

    Every ``drift_every_s`` (when ``drift_bps`` > 0) it first moves each pool by a
    random step; every ``launch_every_s`` (when > 0) it launches the next token of
    ``launch_symbols`` on ``launch_venue``. ``published`` is the last message of
    every pool already on the log, so seqs continue across restarts.
    """

    def __init__(
        self,
        venues: Sequence[MarketVenue],
        publish: Publish,
        *,
        seed: int,
        published: Mapping[str, MarketEvent] | None = None,
        drift_bps: Decimal = Decimal(0),
        drift_every_s: float = 1.0,
        launch_every_s: float = 0.0,
        launch_venue: str = "raydium",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._venues = venues
        self._publish = publish
        self.published: dict[str, MarketEvent] = dict(published or {})
        self._drift_bps = drift_bps
        self._drift_every_s = drift_every_s
        self._launch_every_s = launch_every_s
        self._launch_venue = launch_venue
        self._clock = clock
        self._sleep = sleep
        self._now = now
        self._drift_rng = random.Random(f"{seed}:market:drift")
        self._symbols = launch_symbols(seed)
        # The symbol to launch next, kept until it launches or turns out taken.
        self._symbol: str | None = None
        # Pools each venue listed when it last answered. Until it has, every pool on
        # the log counts as still there.
        self._live: dict[str, set[str]] = {}
        self._snapshot: dict[str, tuple[PoolInfo, ...]] = {}
        self._next_drift: float | None = None
        self._next_launch: float | None = None

    async def run(self, stop: asyncio.Event, poll_s: float) -> None:
        """Step, then sleep ``poll_s``, until ``stop`` is set."""
        while not stop.is_set():
            await self.step()
            await self._sleep(poll_s)

    async def step(self) -> list[MarketEvent]:
        """Drift and launch when due, then publish what changed; return what was published."""
        now = self._clock()
        if self._next_drift is None:
            self._next_drift = now + self._drift_every_s
            self._next_launch = now + self._launch_every_s
        if self._drift_bps > 0 and now >= self._next_drift:
            self._next_drift = now + self._drift_every_s
            await self.drift()
        assert self._next_launch is not None
        if self._launch_every_s > 0 and now >= self._next_launch:
            self._next_launch = now + self._launch_every_s
            await self.launch()
        return await self.poll()

    async def poll(self) -> list[MarketEvent]:
        """Read every venue's pools, publish what changed, and return it."""
        pools: list[PoolInfo] = []
        reopened: set[str] = set()
        for venue in self._venues:
            try:
                listed = await venue.pools()
            except VenueError as exc:
                log.warning("cannot read the pools of %s: %s %s", venue.name, exc.code, exc)
                continue
            ids = {pool.pool_id for pool in listed}
            before = self._live.get(venue.name)
            if before is not None:
                reopened |= {i for i in ids - before if i in self.published}
            self._live[venue.name] = ids
            self._snapshot[venue.name] = listed
            pools.extend(listed)
        events = changes(self.published, pools, self._now(), reopened=reopened)
        if events:
            await self._publish(events)
            self.published = fold_pools(self.published, events)
            for event in events:
                if isinstance(event, PoolCreated) and event.launched_token is not None:
                    log.info("new pool %s at %s %s", event.pool_id, event.price, event.quote)
        return events

    async def drift(self) -> None:
        """Move every pool last read by one random step, one request per venue."""
        for venue in self._venues:
            moves = drift_moves(
                self._snapshot.get(venue.name, ()), self._drift_rng, self._drift_bps
            )
            if not moves:
                continue
            try:
                await venue.drift((pool.base, pool.quote, fraction) for pool, fraction in moves)
            except VenueError as exc:
                log.warning("cannot drift the pools of %s: %s %s", venue.name, exc.code, exc)

    async def launch(self) -> PoolInfo | None:
        """Launch the next unused symbol on the launch venue; return its pool, if opened."""
        venue = next((v for v in self._venues if v.name == self._launch_venue), None)
        if venue is None:
            log.warning("no venue %s to launch tokens on", self._launch_venue)
            return None
        taken = {event.base for event in self.published.values()} | {
            pool.base for listed in self._snapshot.values() for pool in listed
        }
        while True:
            if self._symbol is None or self._symbol in taken:
                self._symbol = next(self._symbols)
                continue
            try:
                pool = await venue.launch(self._symbol)
            except VenueError as exc:
                if exc.code in TAKEN_CODES:
                    taken.add(self._symbol)
                    continue
                # Kept for the next launch: the venue may answer then.
                log.warning(
                    "cannot launch %s on %s: %s %s", self._symbol, venue.name, exc.code, exc
                )
                return None
            self._symbol = None
            log.info("launched %s on %s at %s %s", pool.base, venue.name, pool.price, pool.quote)
            return pool
