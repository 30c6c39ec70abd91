"""The gateway's market book: pools, recent prices and launches folded from market messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from events.market import LiquidityAdded, MarketEvent, PoolCreated, PriceTick
from services.gateway.market_view import MarketBook
from services.gateway.routes.market import plain
from services.market.feed import message_id

AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def created(pool_id: str = "raydium:SOL-USDC", price: str = "150", **extra: object) -> PoolCreated:
    venue, pair = pool_id.split(":")
    base, quote = pair.split("-")
    return PoolCreated(
        message_id=message_id(pool_id, 1),
        occurred_at=AT,
        venue=venue,
        pool_id=pool_id,
        base=base,
        quote=quote,
        price=Decimal(price),
        liquidity_usd=Decimal(1_000_000),
        seq=1,
        **extra,
    )


def tick(before: MarketEvent, price: str, seconds: int = 1) -> PriceTick:
    seq = before.seq + 1
    return PriceTick(
        message_id=message_id(before.pool_id, seq),
        occurred_at=before.occurred_at + timedelta(seconds=seconds),
        venue=before.venue,
        pool_id=before.pool_id,
        base=before.base,
        quote=before.quote,
        price=Decimal(price),
        liquidity_usd=before.liquidity_usd,
        seq=seq,
    )


def test_market_book_price_ticks_become_the_pairs_points_oldest_first() -> None:
    book = MarketBook()
    first = created()
    second = tick(first, "151")
    third = tick(second, "149.5")

    for event in (first, second, third):
        assert book.add(event)

    [(pool, points)] = book.prices("SOL", "USDC")
    assert pool == third
    assert [(p.price, p.seq) for p in points] == [
        (Decimal(150), 1),
        (Decimal(151), 2),
        (Decimal("149.5"), 3),
    ]


def test_market_book_pair_asked_either_way_round_gives_every_venues_pool() -> None:
    book = MarketBook()
    book.add(created("raydium:SOL-USDC"))
    book.add(created("meteora:SOL-USDC", "150.2"))
    book.add(created("raydium:BONK-SOL", "0.0000001"))

    pools = book.prices("USDC", "SOL")

    assert [pool.pool_id for pool, _ in pools] == ["meteora:SOL-USDC", "raydium:SOL-USDC"]
    assert book.prices("SOL", "JUP") == []


def test_market_book_repeated_or_older_message_is_a_no_op() -> None:
    book = MarketBook()
    first = created()
    second = tick(first, "151")
    book.add(first)
    book.add(second)

    assert not book.add(second)
    assert not book.add(first)

    [(pool, points)] = book.prices("SOL", "USDC")
    assert pool == second
    assert len(points) == 2


def test_market_book_keeps_only_the_last_points_of_a_pool() -> None:
    book = MarketBook(points=3)
    event: MarketEvent = created()
    book.add(event)
    for price in ("151", "152", "153", "154"):
        event = tick(event, price)
        book.add(event)

    [(_, points)] = book.prices("SOL", "USDC")
    assert [p.price for p in points] == [Decimal(152), Decimal(153), Decimal(154)]


def test_market_book_tokens_follow_the_pools_and_launches_are_newest_first() -> None:
    book = MarketBook()
    book.add(created("raydium:SOL-USDC"))
    early = created("raydium:PEPE-SOL", "0.001", launched_token="PEPE", launched_decimals=6)
    late = created("meteora:WIF-SOL", "0.002", launched_token="WIF", launched_decimals=6)
    book.add(early)
    book.add(late.model_copy(update={"occurred_at": AT + timedelta(minutes=1)}))
    # A later message of a launched pool is no second launch.
    book.add(
        LiquidityAdded(**tick(early, "0.001").model_dump(exclude={"type"}), added_usd=Decimal(5))
    )

    assert book.tokens() == ["PEPE", "SOL", "USDC", "WIF"]
    assert [(launch.token, launch.venue) for launch in book.launches()] == [
        ("WIF", "meteora"),
        ("PEPE", "raydium"),
    ]
    assert book.launches()[1].price == Decimal("0.001")


def test_plain_decimal_has_no_exponent() -> None:
    assert plain(Decimal("1.5E-7")) == "0.00000015"
    assert plain(Decimal("150.000")) == "150"
    assert plain(Decimal("2E+4")) == "20000"
