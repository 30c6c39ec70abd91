"""Launches on the simulated venues: new tokens, their pools, deposits and the pool snapshot."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from adapters.settings import Settings
from adapters.venues.interface import PoolInfo, SwapRequest, VenueError
from domain.tokens import LAUNCH_DECIMALS, TOKENS
from services.venues.pools import ConstantProductPool, DlmmPool, pair_key
from services.venues.simulator import (
    SimulatedVenue,
    default_price_table,
    default_venues,
    launched_mint,
)

PRICES = default_price_table(Decimal("150"))
PEPE_PRICE = Decimal("0.0001")  # SOL per PEPE: 0.015 USD
LIQUIDITY = Decimal(50_000)


def settings(seed: int, walk_bps: str) -> Settings:
    return Settings(venue_seed=seed, venue_walk_bps=Decimal(walk_bps), venue_profile="instant")


def raydium(seed: int = 7, walk_bps: str = "0") -> SimulatedVenue:
    """Return the default constant-product venue, pools still unless ``walk_bps`` says."""
    [venue, _] = default_venues(settings(seed, walk_bps))
    return venue


def meteora(seed: int = 7) -> SimulatedVenue:
    """Return the default DLMM venue (bin step 10 bps), pools still."""
    [_, venue] = default_venues(settings(seed, "0"))
    return venue


def launch_pepe(venue: SimulatedVenue, liquidity_usd: Decimal = LIQUIDITY) -> PoolInfo:
    return venue.launch("PEPE", price=PEPE_PRICE, liquidity_usd=liquidity_usd)


def by_id(venue: SimulatedVenue) -> dict[str, PoolInfo]:
    return {pool.pool_id: pool for pool in venue.pools()}


# Launching ---------------------------------------------------------------------


async def test_launch_on_constant_product_venue_opens_a_quotable_swappable_pool() -> None:
    venue = raydium()

    pool = launch_pepe(venue)
    quote = await venue.quote("SOL", "PEPE", Decimal("1"))
    submitted = await venue.submit(
        SwapRequest(
            client_ref="sniper-1:1",
            token_in="SOL",
            token_out="PEPE",
            amount_in=Decimal("1"),
            min_amount_out=quote.amount_out,
        )
    )
    confirmed = await venue.confirm(submitted.tx_hash)

    assert pool == PoolInfo(
        venue="raydium",
        pool_id="raydium:SOL-PEPE",
        base="PEPE",
        quote="SOL",
        price=Decimal("0.0001000000000"),
        liquidity_usd=Decimal("50000.00"),
        launched=True,
        base_mint=launched_mint("PEPE"),
        base_decimals=LAUNCH_DECIMALS,
    )
    assert isinstance(venue.pool("PEPE", "SOL"), ConstantProductPool)
    # 1 SOL less 25 bps buys a little under 10,000 PEPE from a $50k pool.
    assert Decimal(9_900) < quote.amount_out < Decimal(10_000)
    assert confirmed.status == "confirmed"
    assert confirmed.amount_out == quote.amount_out
    assert await venue.find_swap("sniper-1:1") == confirmed
    assert by_id(venue)["raydium:SOL-PEPE"].price > pool.price  # the buy lifted the price


async def test_launch_on_dlmm_venue_opens_bins_at_the_nearest_bin_price() -> None:
    venue = meteora()

    pool = launch_pepe(venue)
    quote = await venue.quote("PEPE", "SOL", Decimal("1000"))

    assert isinstance(venue.pool("PEPE", "SOL"), DlmmPool)
    assert pool.pool_id == "meteora:SOL-PEPE"
    # Within half a bin (5 bps) of the launch price.
    assert abs(pool.price / PEPE_PRICE - 1) <= Decimal("0.0005")
    assert pool.liquidity_usd == pytest.approx(LIQUIDITY, rel=Decimal("1e-6"))
    assert Decimal("0.099") < quote.amount_out < Decimal("0.1")


async def test_launch_token_is_found_by_mint_and_in_lower_case() -> None:
    venue = raydium()
    launch_pepe(venue)

    by_mint = await venue.quote(launched_mint("PEPE"), "SOL", Decimal("100"))
    lower = await venue.quote("pepe", "SOL", Decimal("100"))

    assert by_mint.token_in == lower.token_in == "PEPE"
    assert by_mint.amount_out == lower.amount_out


def test_launch_listed_symbol_is_refused_as_token_exists() -> None:
    with pytest.raises(VenueError) as caught:
        raydium().launch("BONK", price=PEPE_PRICE, liquidity_usd=LIQUIDITY)

    assert (caught.value.code, caught.value.transient) == ("TOKEN_EXISTS", False)


def test_launch_twice_is_refused_as_pool_exists() -> None:
    venue = raydium()
    launch_pepe(venue)

    with pytest.raises(VenueError) as caught:
        launch_pepe(venue)

    assert (caught.value.code, caught.value.transient) == ("POOL_EXISTS", False)


def test_launch_of_a_launched_token_against_another_quote_opens_a_second_pool() -> None:
    venue = raydium()
    launch_pepe(venue)

    second = venue.launch("PEPE", quote="USDC", price=Decimal("0.015"), liquidity_usd=LIQUIDITY)

    assert (second.pool_id, second.base, second.quote) == ("raydium:USDC-PEPE", "PEPE", "USDC")
    assert second.base_mint == launched_mint("PEPE")


@pytest.mark.parametrize(
    ("symbol", "quote", "price", "liquidity", "code"),
    [
        ("P", "SOL", "0.0001", "50000", "INVALID_SYMBOL"),
        ("PEPE-2", "SOL", "0.0001", "50000", "INVALID_SYMBOL"),
        ("PEPE", "DOGE", "0.0001", "50000", "UNKNOWN_TOKEN"),
        ("PEPE", "SOL", "0", "50000", "INVALID_PRICE"),
        ("PEPE", "SOL", "0.0001", "-1", "INVALID_LIQUIDITY"),
        # So dear that the pool's token side rounds to nothing.
        ("PEPE", "SOL", "1e12", "50000", "INVALID_PRICE"),
    ],
)
def test_launch_bad_input_raises_permanent_error(
    symbol: str, quote: str, price: str, liquidity: str, code: str
) -> None:
    with pytest.raises(VenueError) as caught:
        raydium().launch(
            symbol, quote=quote, price=Decimal(price), liquidity_usd=Decimal(liquidity)
        )

    assert (caught.value.code, caught.value.transient) == (code, False)


def test_launch_against_a_launched_token_is_refused_as_invalid_quote() -> None:
    venue = raydium()
    launch_pepe(venue)

    with pytest.raises(VenueError) as caught:
        venue.launch("WIF", quote="PEPE", price=Decimal(1), liquidity_usd=LIQUIDITY)

    assert caught.value.code == "INVALID_QUOTE"


def test_launched_token_is_not_tradable_on_a_venue_that_did_not_list_it() -> None:
    venue = raydium()
    launch_pepe(meteora())

    with pytest.raises(VenueError) as caught:
        venue.preview("SOL", "PEPE", Decimal(1))

    assert caught.value.code == "UNKNOWN_TOKEN"


def test_launched_mint_is_deterministic_base58_of_the_symbol() -> None:
    mint = launched_mint("PEPE")

    assert mint == launched_mint("pepe")
    assert mint != launched_mint("WIF")
    assert 32 <= len(mint) <= 44
    assert not set(mint) & set("0OIl")
    assert mint not in {token.mint for token in TOKENS.values()}


def test_default_launch_price_is_a_ten_thousandth_of_a_sol_in_any_quote() -> None:
    venue = raydium()

    assert venue.default_launch_price("SOL") == Decimal("0.0001")
    assert venue.default_launch_price("USDC") == Decimal("0.015")


def test_pair_key_puts_launched_tokens_after_the_listed_ones() -> None:
    assert pair_key("PEPE", "SOL") == ("SOL", "PEPE")
    assert pair_key("USDC", "PEPE") == ("USDC", "PEPE")
    assert pair_key("WIF", "PEPE") == ("PEPE", "WIF")
    assert pair_key("USDC", "SOL") == ("SOL", "USDC")


# Adding liquidity ---------------------------------------------------------------


@pytest.mark.parametrize("make", [raydium, meteora])
def test_add_liquidity_deepens_the_pool_at_its_price(make: Callable[[], SimulatedVenue]) -> None:
    venue = make()
    before = by_id(venue)[f"{venue.name}:SOL-USDC"]

    after = venue.add_liquidity("USDC", "SOL", Decimal(1_000_000))

    assert after.pool_id == before.pool_id
    assert after.price == before.price
    assert after.liquidity_usd - before.liquidity_usd == pytest.approx(
        Decimal(1_000_000), abs=Decimal("0.05")
    )


async def test_add_liquidity_lowers_the_price_impact_of_a_launched_pool() -> None:
    venue = raydium()
    launch_pepe(venue, liquidity_usd=Decimal(5_000))
    shallow = venue.preview("SOL", "PEPE", Decimal(10)).price_impact

    venue.add_liquidity("PEPE", "SOL", Decimal(45_000))

    assert venue.preview("SOL", "PEPE", Decimal(10)).price_impact < shallow / 5


def test_add_liquidity_non_positive_amount_is_refused() -> None:
    with pytest.raises(VenueError) as caught:
        raydium().add_liquidity("SOL", "USDC", Decimal(0))

    assert caught.value.code == "INVALID_AMOUNT"


# The snapshot -------------------------------------------------------------------


@pytest.mark.parametrize("make", [raydium, meteora])
def test_pools_snapshot_lists_every_pair_once_priced_in_quote_per_base(
    make: Callable[[], SimulatedVenue],
) -> None:
    venue = make()

    pools = by_id(venue)

    assert len(pools) == 15
    assert list(pools) == sorted(pools)
    # X is SOL and SOL is the base: the pool's own price, USDC per SOL.
    sol_usdc = pools[f"{venue.name}:SOL-USDC"]
    assert (sol_usdc.base, sol_usdc.quote) == ("SOL", "USDC")
    assert sol_usdc.price == pytest.approx(Decimal(150), rel=Decimal("0.0005"))
    # X is SOL but SOL is the quote: the inverse, SOL per BONK.
    bonk_sol = pools[f"{venue.name}:SOL-BONK"]
    assert (bonk_sol.base, bonk_sol.quote) == ("BONK", "SOL")
    assert bonk_sol.price == pytest.approx(Decimal("0.00002") / 150, rel=Decimal("0.0005"))
    # Neither is a quote token: the one listed first quotes the other.
    ray_jup = pools[f"{venue.name}:JUP-RAY"]
    assert (ray_jup.base, ray_jup.quote) == ("RAY", "JUP")
    assert ray_jup.price == pytest.approx(Decimal("2.5") / Decimal("0.9"), rel=Decimal("0.0005"))
    assert not any(pool.launched for pool in pools.values())


def test_pools_snapshot_price_follows_a_move_in_either_direction() -> None:
    venue = raydium()

    venue.move_price("SOL", "USDC", Decimal("0.01"))
    venue.move_price("SOL", "BONK", Decimal("0.01"))  # BONK gets cheaper in SOL
    pools = by_id(venue)

    assert pools["raydium:SOL-USDC"].price == pytest.approx(Decimal("151.5"), rel=Decimal("1e-8"))
    assert pools["raydium:SOL-BONK"].price == pytest.approx(
        Decimal("0.00002") / 150 / Decimal("1.01"), rel=Decimal("1e-8")
    )


def test_pools_snapshot_liquidity_is_the_depth_and_ignores_price_moves() -> None:
    for venue in (raydium(), meteora()):
        before = by_id(venue)
        venue.move_price("SOL", "USDC", Decimal("-0.05"))
        after = by_id(venue)
        key = f"{venue.name}:SOL-USDC"

        assert after[key].price < before[key].price
        assert after[key].liquidity_usd == before[key].liquidity_usd


def test_pools_snapshot_prices_keep_ten_significant_digits() -> None:
    pools = by_id(raydium())

    assert str(pools["raydium:SOL-USDC"].price) == "150.0000000"
    assert str(pools["raydium:USDC-BONK"].price) == "0.00002000000000"


# Drift --------------------------------------------------------------------------


def test_drift_on_dlmm_adds_steps_smaller_than_a_bin_up() -> None:
    venue = meteora()
    start = venue.pool("SOL", "USDC")
    assert isinstance(start, DlmmPool)

    for _ in range(10):
        venue.drift("SOL", "USDC", Decimal("0.0003"))  # 3 bps, under a 10 bps bin
    moved = venue.pool("SOL", "USDC")

    assert isinstance(moved, DlmmPool)
    assert moved.active_id - start.active_id == 3


def test_drift_on_constant_product_moves_the_price_like_move_price() -> None:
    drifted, moved = raydium(), raydium()

    drifted.drift("USDC", "SOL", Decimal("0.0005"))
    moved.move_price("USDC", "SOL", Decimal("0.0005"))

    assert drifted.pool("SOL", "USDC") == moved.pool("SOL", "USDC")


# Determinism --------------------------------------------------------------------


async def test_launch_does_not_shift_the_random_walk_of_other_pools() -> None:
    plain, launching = raydium(walk_bps="2"), raydium(walk_bps="2")

    launch_pepe(launching)
    quotes_plain = [await plain.quote("SOL", "USDC", Decimal(1)) for _ in range(5)]
    quotes_launching = [await launching.quote("SOL", "USDC", Decimal(1)) for _ in range(5)]

    assert quotes_plain == quotes_launching


async def test_same_seed_and_calls_give_the_same_pools() -> None:
    async def play(seed: int) -> tuple[PoolInfo, ...]:
        venue = raydium(seed=seed, walk_bps="2")
        launch_pepe(venue)
        await venue.quote("SOL", "PEPE", Decimal(2))
        request = SwapRequest(
            client_ref="r:1",
            token_in="SOL",
            token_out="PEPE",
            amount_in=Decimal(2),
            min_amount_out=Decimal(0),
        )
        await venue.confirm((await venue.submit(request)).tx_hash)
        venue.add_liquidity("PEPE", "SOL", Decimal(1_000))
        venue.drift("SOL", "USDC", Decimal("0.0004"))
        return venue.pools()

    first, again, other = await play(3), await play(3), await play(4)

    assert first == again
    assert first != other
