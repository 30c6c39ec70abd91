"""The market feed: pool changes as market messages, drift, launches, restarts."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from adapters.settings import Settings
from adapters.venues.interface import PoolInfo, VenueError
from domain.pricing import market_of
from domain.tokens import LAUNCH_DECIMALS, TOKENS
from events.market import LiquidityAdded, MarketEvent, PoolCreated, PriceTick
from services.market.feed import (
    MarketFeed,
    changes,
    drift_moves,
    fold_pools,
    launch_symbols,
    message_id,
)
from services.venues.simulator import SimulatedVenue, default_venues

AT = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def pool(
    pool_id: str = "raydium:SOL-USDC",
    price: str = "150",
    liquidity: str = "20000000",
    launched: bool = False,
) -> PoolInfo:
    venue, pair = pool_id.split(":")
    market = market_of(*pair.split("-"))
    return PoolInfo(
        venue=venue,
        pool_id=pool_id,
        base=market.base,
        quote=market.quote,
        price=Decimal(price),
        liquidity_usd=Decimal(liquidity),
        launched=launched,
        base_mint="mint",
        base_decimals=LAUNCH_DECIMALS if launched else 9,
    )


def published(*pools: PoolInfo) -> dict[str, MarketEvent]:
    return fold_pools({}, changes({}, pools, AT))


# changes / fold_pools -----------------------------------------------------------------


def test_changes_unknown_pool_is_created_with_seq_one() -> None:
    [event] = changes({}, [pool()], AT)

    assert isinstance(event, PoolCreated)
    assert (event.pool_id, event.venue, event.base, event.quote) == (
        "raydium:SOL-USDC",
        "raydium",
        "SOL",
        "USDC",
    )
    assert (event.price, event.liquidity_usd, event.seq) == (Decimal(150), Decimal(20_000_000), 1)
    assert event.launched_token is None
    assert event.launched_decimals is None
    assert event.message_id == message_id("raydium:SOL-USDC", 1)
    assert event.occurred_at == AT


def test_changes_launched_pool_is_created_naming_its_token_and_decimals() -> None:
    [event] = changes({}, [pool("raydium:SOL-PEPE", "0.0001", "50000", launched=True)], AT)

    assert isinstance(event, PoolCreated)
    assert (event.base, event.quote) == ("PEPE", "SOL")
    assert (event.launched_token, event.launched_decimals) == ("PEPE", LAUNCH_DECIMALS)


def test_changes_unchanged_pool_publishes_nothing() -> None:
    assert changes(published(pool()), [pool()], AT) == []


def test_changes_price_move_publishes_a_price_tick_with_the_next_seq() -> None:
    [event] = changes(published(pool()), [pool(price="151.5")], AT)

    assert isinstance(event, PriceTick)
    assert (event.price, event.seq) == (Decimal("151.5"), 2)
    assert event.message_id == message_id("raydium:SOL-USDC", 2)


def test_changes_deposit_and_move_publish_liquidity_then_price() -> None:
    events = changes(published(pool()), [pool(price="149", liquidity="21000000")], AT)

    assert [type(e) for e in events] == [LiquidityAdded, PriceTick]
    added, tick = events
    assert isinstance(added, LiquidityAdded)
    assert (added.added_usd, added.liquidity_usd, added.seq) == (
        Decimal(1_000_000),
        Decimal(21_000_000),
        2,
    )
    assert (tick.price, tick.liquidity_usd, tick.seq) == (Decimal(149), Decimal(21_000_000), 3)


def test_changes_growth_under_the_step_is_not_a_liquidity_event_but_rides_along() -> None:
    # Fees kept in a constant-product pool: $100 on $20M, under 0.1 %.
    unchanged_price = changes(published(pool()), [pool(liquidity="20000100")], AT)
    [tick] = changes(published(pool()), [pool(price="150.1", liquidity="20000100")], AT)

    assert unchanged_price == []
    assert isinstance(tick, PriceTick)
    assert tick.liquidity_usd == Decimal("20000100")


def test_changes_shrinking_liquidity_is_no_liquidity_event() -> None:
    assert changes(published(pool()), [pool(liquidity="19000000")], AT) == []


def test_changes_reopened_pool_is_created_again_with_its_seq_continuing() -> None:
    last = fold_pools(published(pool()), changes(published(pool()), [pool(price="151")], AT))

    [event] = changes(last, [pool()], AT, reopened={"raydium:SOL-USDC"})

    assert isinstance(event, PoolCreated)
    assert event.seq == 3


def test_fold_keeps_the_highest_seq_of_each_pool() -> None:
    first = published(pool())
    [tick] = changes(first, [pool(price="151")], AT)

    assert fold_pools(first, [tick])["raydium:SOL-USDC"] == tick
    assert fold_pools({tick.pool_id: tick}, first.values())["raydium:SOL-USDC"] == tick


# drift / symbols ----------------------------------------------------------------


def test_drift_moves_are_within_the_bound_and_repeat_with_the_seed() -> None:
    pools = [pool(f"raydium:SOL-{q}") for q in ("USDC", "USDT")] * 50

    first = drift_moves(pools, random.Random(1), Decimal(5))
    again = drift_moves(pools, random.Random(1), Decimal(5))

    assert first == again
    assert len(first) > 90
    assert all(Decimal("-0.0005") <= f <= Decimal("0.0005") and f != 0 for _, f in first)
    assert min(f for _, f in first) < 0 < max(f for _, f in first)


def test_drift_moves_of_zero_bps_are_none() -> None:
    assert drift_moves([pool()], random.Random(1), Decimal(0)) == []


def test_launch_symbols_are_deterministic_distinct_and_never_listed() -> None:
    first = [s for s, _ in zip(launch_symbols(7), range(200), strict=False)]
    again = [s for s, _ in zip(launch_symbols(7), range(200), strict=False)]
    other = [s for s, _ in zip(launch_symbols(8), range(200), strict=False)]

    assert first == again != other
    assert len(set(first)) == 200
    assert not set(first) & set(TOKENS)
    assert all(s.isalpha() and s.isupper() and 4 <= len(s) <= 6 for s in first)


# MarketFeed against in-process venues ---------------------------------------------


class InProcess:
    """A ``SimulatedVenue`` behind the feed's venue port, without HTTP."""

    def __init__(self, venue: SimulatedVenue) -> None:
        self.venue = venue
        self.name = venue.name
        self.down = False

    async def pools(self) -> tuple[PoolInfo, ...]:
        if self.down:
            raise VenueError("NETWORK_ERROR", "down", transient=True)
        return self.venue.pools()

    async def launch(self, symbol: str) -> PoolInfo:
        price = self.venue.default_launch_price("SOL")
        return self.venue.launch(symbol, price=price, liquidity_usd=Decimal(50_000))

    async def drift(self, moves: Iterable[tuple[str, str, Decimal]]) -> None:
        for token_in, token_out, fraction in moves:
            self.venue.drift(token_in, token_out, fraction)


class Log:
    """The market topic as a list."""

    def __init__(self) -> None:
        self.events: list[MarketEvent] = []

    async def __call__(self, events: Sequence[MarketEvent]) -> None:
        self.events.extend(events)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def venues(seed: int = 7) -> list[InProcess]:
    settings = Settings(venue_seed=seed, venue_walk_bps=Decimal(0), venue_profile="instant")
    return [InProcess(v) for v in default_venues(settings)]


def feed(
    places: Sequence[InProcess],
    log: Log,
    clock: Clock,
    prior: dict[str, MarketEvent] | None = None,
    *,
    drift_bps: Decimal = Decimal(0),
    launch_every_s: float = 0.0,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> MarketFeed:
    return MarketFeed(
        places,
        log,
        seed=7,
        published=prior,
        drift_bps=drift_bps,
        drift_every_s=1.0,
        launch_every_s=launch_every_s,
        clock=clock,
        sleep=sleep or clock.sleep,
        now=lambda: AT,
    )


async def test_market_feed_first_poll_creates_every_pool_of_every_venue() -> None:
    log = Log()

    events = await feed(venues(), log, Clock()).poll()

    assert len(events) == 30
    assert all(isinstance(e, PoolCreated) and e.seq == 1 for e in events)
    assert {e.venue for e in events} == {"raydium", "meteora"}
    assert log.events == events


async def test_market_feed_price_move_is_published_as_one_tick() -> None:
    places, log = venues(), Log()
    market = feed(places, log, Clock())
    await market.poll()

    places[0].venue.move_price("SOL", "USDC", Decimal("0.01"))
    [tick] = await market.poll()

    assert isinstance(tick, PriceTick)
    assert (tick.pool_id, tick.seq) == ("raydium:SOL-USDC", 2)
    assert tick.price == pytest.approx(Decimal("151.5"), rel=Decimal("1e-8"))


async def test_market_feed_restarted_from_the_log_publishes_only_changes() -> None:
    places, log = venues(), Log()
    await feed(places, log, Clock()).poll()
    places[1].venue.move_price("SOL", "USDC", Decimal("0.01"))

    restarted = feed(places, Log(), Clock(), prior=fold_pools({}, log.events))
    [tick] = await restarted.poll()

    assert (tick.pool_id, tick.seq, tick.type) == ("meteora:SOL-USDC", 2, "PriceTick")
    assert await restarted.poll() == []


async def test_market_feed_venue_down_skips_it_and_back_publishes_nothing_new() -> None:
    places, log = venues(), Log()
    market = feed(places, log, Clock())
    await market.poll()

    places[0].down = True
    while_down = await market.poll()
    places[0].down = False

    assert while_down == []
    assert await market.poll() == []


async def test_market_feed_pool_gone_and_back_is_created_again() -> None:
    places, log = venues(), Log()
    market = feed(places, log, Clock())
    await market.poll()

    # The venue service restarted: its launched pools are gone, then launched again.
    await places[0].launch("WIF")
    await market.poll()
    places[0].venue = default_venues(Settings(venue_walk_bps=Decimal(0), venue_profile="instant"))[
        0
    ]
    assert await market.poll() == []
    await places[0].launch("WIF")
    [created] = await market.poll()

    assert isinstance(created, PoolCreated)
    assert (created.pool_id, created.seq, created.launched_token) == ("raydium:SOL-WIF", 2, "WIF")


async def test_market_feed_drifts_every_pool_on_schedule() -> None:
    places, log, clock = venues(), Log(), Clock()
    market = feed(places, log, clock, drift_bps=Decimal(50))
    await market.step()  # first read; nothing is due yet

    clock.now = 0.5
    early = await market.step()
    clock.now = 1.0
    drifted = await market.step()

    assert early == []
    assert all(isinstance(e, PriceTick) for e in drifted)
    # 50 bps steps move every constant-product pool and most DLMM ones (5 bins max).
    assert len({e.pool_id for e in drifted if e.venue == "raydium"}) == 15
    assert len({e.pool_id for e in drifted if e.venue == "meteora"}) >= 5


async def test_market_feed_same_seed_drifts_the_same_way() -> None:
    async def play() -> list[MarketEvent]:
        places, log, clock = venues(), Log(), Clock()
        stop = asyncio.Event()

        async def sleep(seconds: float) -> None:
            await clock.sleep(seconds)
            if clock.now >= 10:
                stop.set()

        market = feed(places, log, clock, drift_bps=Decimal(5), sleep=sleep)
        await market.run(stop, 0.25)
        return log.events

    first = await play()

    assert first == await play()
    assert len(first) > 30  # the pools' creation, then ticks


async def test_market_feed_launches_the_next_free_symbol_on_schedule() -> None:
    places, log, clock = venues(), Log(), Clock()
    market = feed(places, log, clock, launch_every_s=60.0)
    await market.step()
    symbols = launch_symbols(7)
    first, second = next(symbols), next(symbols)
    # Someone launched the first symbol by hand already: the feed moves on.
    await places[0].launch(first)

    clock.now = 59
    assert [e.pool_id for e in await market.step()] == [f"raydium:SOL-{first}"]
    clock.now = 60
    [created] = await market.step()

    assert isinstance(created, PoolCreated)
    assert (created.pool_id, created.launched_token) == (f"raydium:SOL-{second}", second)
    assert created.liquidity_usd == pytest.approx(Decimal(50_000), abs=Decimal(1))
