"""The simulated venues: pool quotes, determinism, idempotency, slippage, failures."""

from __future__ import annotations

import asyncio
import itertools
from decimal import Decimal

import pytest

from adapters.settings import Settings
from adapters.venues.interface import SwapRequest, Venue, VenueError
from domain.tokens import TOKENS
from services.venues.pools import ConstantProductPool, DlmmPool
from services.venues.simulator import (
    INSTANT,
    LATENCY_PROFILES,
    FailureRates,
    LatencyProfile,
    SimulatedVenue,
    default_price_table,
    default_venues,
    effective_fee_bps,
    tx_hash_for,
)

PRICES = default_price_table(Decimal("150"))


def venue(
    seed: int = 7, failures: FailureRates | None = None, walk_bps: str = "2"
) -> SimulatedVenue:
    """Return a constant-product venue, 30 bps fee, $10M pools (5,000,000 USDC a side)."""
    return SimulatedVenue(
        "raydium",
        fee_bps=30,
        seed=seed,
        prices=PRICES,
        walk_bps=Decimal(walk_bps),
        failures=failures or FailureRates(),
    )


def still() -> SimulatedVenue:
    """Return a venue whose pools do not walk, so numbers are exact."""
    return venue(walk_bps="0")


def cpmm_out(amount_in: str, fee_bps: int, r_in: Decimal, r_out: Decimal, places: int) -> Decimal:
    """Return x·y = k output by hand: fee off the input, rounded down."""
    net = Decimal(amount_in) * (10_000 - fee_bps) / 10_000
    return (r_out * net / (r_in + net)).quantize(Decimal(1).scaleb(-places), rounding="ROUND_DOWN")


# The SOL/USDC pool of every constant-product venue built from PRICES with $10M.
SOL_RESERVE, USDC_RESERVE = Decimal("33333.333333333"), Decimal(5_000_000)


def swap(client_ref: str = "order-1:1", min_out: str = "0", amount_in: str = "1") -> SwapRequest:
    return SwapRequest(
        client_ref=client_ref,
        token_in="SOL",
        token_out="USDC",
        amount_in=Decimal(amount_in),
        min_amount_out=Decimal(min_out),
    )


def landing_venue(now: list[float]) -> SimulatedVenue:
    """Return a still venue on a hand-moved clock whose swaps land 2-3 s after submission."""
    return SimulatedVenue(
        "meteora",
        fee_bps=20,
        walk_bps=Decimal(0),
        seed=7,
        prices=PRICES,
        latency=LatencyProfile(quote_s=(0.0, 0.0), submit_s=(0.0, 0.0), land_s=(2.0, 3.0)),
        clock=lambda: now[0],
    )


# Pure pieces -----------------------------------------------------------------


def test_effective_fee_bps_rounds_half_up() -> None:
    assert effective_fee_bps(Decimal("0.006"), Decimal("2")) == 30
    assert effective_fee_bps(Decimal("0.00125"), Decimal("1")) == 13


def test_price_table_pair_price_is_usd_ratio() -> None:
    sol, usdc, bonk = TOKENS["SOL"], TOKENS["USDC"], TOKENS["BONK"]

    assert PRICES.reference_price(sol, usdc, Decimal(1)) == Decimal("150")
    assert PRICES.reference_price(sol, bonk, Decimal(1)) == Decimal("7500000")


def test_tx_hash_is_deterministic_base58_and_venue_specific() -> None:
    first = tx_hash_for("raydium", "order-1:1")

    assert first == tx_hash_for("raydium", "order-1:1")
    assert first != tx_hash_for("meteora", "order-1:1")
    assert 80 <= len(first) <= 88
    assert not set(first) & set("0OIl")


def test_failure_rates_summing_above_one_are_rejected() -> None:
    with pytest.raises(ValueError, match="sum to at most 1"):
        FailureRates(network_error=0.6, pool_busy=0.6)


def test_failure_rates_evenly_splits_the_rate_over_quote_failures() -> None:
    assert FailureRates.evenly(0.2) == FailureRates(network_error=0.1, pool_busy=0.1)


# Quotes ----------------------------------------------------------------------


async def test_simulated_venue_quote_is_the_constant_product_output_net_of_fee() -> None:
    quote = await still().quote("SOL", "USDC", Decimal("2"))

    # 2 SOL less 0.30 % (0.006 SOL) into 33,333.33 SOL / 5,000,000 USDC.
    assert quote.fee == Decimal("0.006")
    assert quote.amount_out == cpmm_out("2", 30, SOL_RESERVE, USDC_RESERVE, 6)
    assert quote.amount_out == Decimal("299.082108")
    assert quote.price == quote.amount_out / Decimal("2")
    assert (quote.venue, quote.token_in, quote.token_out, quote.fee_bps) == (
        "raydium",
        "SOL",
        "USDC",
        30,
    )


async def test_simulated_venue_reverse_direction_uses_the_same_pool() -> None:
    quote = await still().quote("USDC", "SOL", Decimal("150"))

    # 150 USDC less 0.45 USDC fee into the same pool, SOL has 9 decimals.
    assert quote.amount_out == cpmm_out("150", 30, USDC_RESERVE, SOL_RESERVE, 9)
    assert quote.amount_out == Decimal("0.996970180")


async def test_simulated_venue_preview_exposes_price_impact_without_moving() -> None:
    v = still()

    small = v.preview("SOL", "USDC", Decimal("1"))
    large = v.preview("SOL", "USDC", Decimal("1000"))

    assert Decimal(0) < small.price_impact < large.price_impact
    # 997 SOL net into 33,333.33: impact 997 / 34,330.33 = 2.9 %.
    assert abs(large.price_impact - Decimal("0.0290414")) < Decimal("1e-6")
    assert v.preview("SOL", "USDC", Decimal("1")) == small


async def test_simulated_venue_same_seed_same_calls_give_same_numbers() -> None:
    a, b = venue(seed=42), venue(seed=42)

    quotes_a = [await a.quote("SOL", "USDC", Decimal("1")) for _ in range(5)]
    quotes_b = [await b.quote("SOL", "USDC", Decimal("1")) for _ in range(5)]

    assert quotes_a == quotes_b
    assert len({q.amount_out for q in quotes_a}) > 1  # fresh draw on every quote


async def test_simulated_venue_other_seed_gives_other_numbers() -> None:
    a, b = venue(seed=1), venue(seed=2)

    quotes_a = [(await a.quote("SOL", "USDC", Decimal("1"))).amount_out for _ in range(5)]
    quotes_b = [(await b.quote("SOL", "USDC", Decimal("1"))).amount_out for _ in range(5)]

    assert quotes_a != quotes_b


async def test_simulated_venue_same_seed_same_fills() -> None:
    results = []
    for _ in range(2):
        v = venue(seed=3)
        submitted = await v.submit(swap())
        results.append(await v.confirm(submitted.tx_hash))

    assert results[0] == results[1]
    assert results[0].status == "confirmed"


@pytest.mark.parametrize(
    ("token_in", "token_out", "amount", "code"),
    [
        ("SOL", "DOGE", "1", "UNKNOWN_TOKEN"),
        ("SOL", "SOL", "1", "INVALID_PAIR"),
        ("SOL", "USDC", "0", "INVALID_AMOUNT"),
    ],
)
async def test_simulated_venue_bad_quote_request_raises_permanent_error(
    token_in: str, token_out: str, amount: str, code: str
) -> None:
    with pytest.raises(VenueError) as caught:
        await venue().quote(token_in, token_out, Decimal(amount))

    assert caught.value.code == code
    assert caught.value.transient is False


# Swaps -----------------------------------------------------------------------


async def test_simulated_venue_submit_is_pending_then_confirmed() -> None:
    v = venue()

    submitted = await v.submit(swap(min_out="140"))
    result = await v.confirm(submitted.tx_hash)

    assert submitted.status == "pending"
    assert submitted.tx_hash == tx_hash_for("raydium", "order-1:1")
    assert result.status == "confirmed"
    assert result.amount_out is not None
    assert Decimal("140") <= result.amount_out <= Decimal("153")
    assert result.executed_price == result.amount_out / Decimal("1")
    assert result.error_code is None


async def test_simulated_venue_same_client_ref_twice_returns_first_submission() -> None:
    now = [100.0]
    v = landing_venue(now)

    first = await v.submit(swap("order-1:1", amount_in="1"))
    second = await v.submit(swap("order-1:1", amount_in="5"))
    now[0] = 103.0
    confirmed = await v.confirm(first.tx_hash)
    third = await v.submit(swap("order-1:1"))

    assert second == first
    assert first.status == "pending"
    # One swap of 1 SOL executed, not a second one of 5 SOL.
    assert confirmed.amount_out == cpmm_out("1", 20, SOL_RESERVE, USDC_RESERVE, 6)
    assert third == confirmed
    assert await v.find_swap("order-1:1") == confirmed


async def test_simulated_venue_find_swap_unknown_ref_returns_none() -> None:
    assert await venue().find_swap("never-sent") is None


async def test_simulated_venue_confirm_unknown_tx_raises_permanent_error() -> None:
    with pytest.raises(VenueError) as caught:
        await venue().confirm("nope")

    assert (caught.value.code, caught.value.transient) == ("UNKNOWN_TX", False)


async def test_simulated_venue_min_out_at_pool_output_confirms() -> None:
    v = still()
    quote = await v.quote("SOL", "USDC", Decimal("1"))

    submitted = await v.submit(swap(min_out=str(quote.amount_out)))
    result = await v.confirm(submitted.tx_hash)

    assert (result.status, result.amount_out) == ("confirmed", quote.amount_out)


async def test_simulated_venue_min_out_above_pool_fails_with_slippage_exceeded() -> None:
    v = still()
    quote = await v.quote("SOL", "USDC", Decimal("1"))
    too_much = quote.amount_out + Decimal("0.000001")
    pool_before = v.pool("SOL", "USDC")

    submitted = await v.submit(swap(min_out=str(too_much)))
    result = await v.confirm(submitted.tx_hash)

    assert result.status == "failed"
    assert result.error_code == "SLIPPAGE_EXCEEDED"
    assert result.amount_out is None
    assert result.error is not None
    assert str(too_much) in result.error
    assert v.pool("SOL", "USDC") == pool_before


async def test_simulated_venue_executed_swap_moves_the_pool() -> None:
    v = still()
    before = v.preview("SOL", "USDC", Decimal("1")).amount_out

    submitted = await v.submit(swap(amount_in="100"))
    await v.confirm(submitted.tx_hash)

    pool = v.pool("SOL", "USDC")
    assert isinstance(pool, ConstantProductPool)
    assert pool.reserve_x == SOL_RESERVE + 100
    assert v.preview("SOL", "USDC", Decimal("1")).amount_out < before


async def test_simulated_venue_swap_settles_only_after_landing_time() -> None:
    now = [100.0]
    v = landing_venue(now)

    await v.submit(swap("order-2:1"))
    before = await v.find_swap("order-2:1")
    now[0] = 103.0
    after = await v.find_swap("order-2:1")

    assert before is not None
    assert before.status == "pending"
    assert after is not None
    assert after.status == "confirmed"
    # 1 SOL less 0.20 % into the untouched pool.
    assert after.amount_out == cpmm_out("1", 20, SOL_RESERVE, USDC_RESERVE, 6)


async def test_simulated_venue_confirm_waits_for_landing() -> None:
    v = SimulatedVenue(
        "meteora",
        fee_bps=20,
        seed=7,
        prices=PRICES,
        latency=LatencyProfile(quote_s=(0.0, 0.0), submit_s=(0.0, 0.0), land_s=(0.1, 0.1)),
    )
    loop = asyncio.get_running_loop()

    submitted = await v.submit(swap())
    started = loop.time()
    result = await v.confirm(submitted.tx_hash)

    assert result.status == "confirmed"
    assert loop.time() - started >= 0.09


# Failure injection -----------------------------------------------------------


@pytest.mark.parametrize(
    ("rates", "code"),
    [
        (FailureRates(network_error=1.0), "NETWORK_ERROR"),
        (FailureRates(pool_busy=1.0), "POOL_BUSY"),
    ],
)
async def test_simulated_venue_injected_quote_failure_raises_transient(
    rates: FailureRates, code: str
) -> None:
    with pytest.raises(VenueError) as caught:
        await venue(failures=rates).quote("SOL", "USDC", Decimal("1"))

    assert (caught.value.code, caught.value.transient) == (code, True)


async def test_simulated_venue_injected_blockhash_expiry_fails_submit_without_swap() -> None:
    v = venue(failures=FailureRates(blockhash_expired=1.0))

    with pytest.raises(VenueError) as caught:
        await v.submit(swap())

    assert (caught.value.code, caught.value.transient) == ("BLOCKHASH_EXPIRED", True)
    assert await v.find_swap("order-1:1") is None
    # Quotes do not suffer blockhash expiry.
    assert (await v.quote("SOL", "USDC", Decimal("1"))).amount_out > 0


async def test_simulated_venue_partial_failure_rate_fails_some_calls() -> None:
    v = venue(failures=FailureRates(network_error=0.5))
    outcomes = []
    for _ in range(40):
        try:
            await v.quote("SOL", "USDC", Decimal("1"))
            outcomes.append("ok")
        except VenueError as exc:
            outcomes.append(exc.code)

    assert set(outcomes) == {"ok", "NETWORK_ERROR"}


# Factory ---------------------------------------------------------------------


def test_default_venues_are_raydium_cpmm_and_meteora_dlmm() -> None:
    venues = default_venues(Settings(venue_profile="instant"))
    as_protocol: list[Venue] = list(venues)

    assert [(v.name, v.fee_bps) for v in venues] == [("raydium", 25), ("meteora", 10)]
    assert isinstance(venues[0].pool("SOL", "USDC"), ConstantProductPool)
    assert isinstance(venues[1].pool("SOL", "USDC"), DlmmPool)
    assert len(as_protocol) == 2


def test_default_venues_use_settings_sol_price_and_depth() -> None:
    raydium, meteora = default_venues(
        Settings(
            venue_profile="instant",
            venue_base_price_sol_usdc=Decimal("200"),
            venue_raydium_depth_usd=Decimal(4_000_000),
        )
    )

    pool = raydium.pool("SOL", "USDC")
    assert isinstance(pool, ConstantProductPool)
    assert (pool.reserve_x, pool.reserve_y) == (Decimal(10_000), Decimal(2_000_000))
    assert abs(meteora.pool("USDC", "SOL").spot_price / 200 - 1) < Decimal("0.0005")


def test_latency_profiles_instant_is_zero_and_realistic_lands_in_two_to_three_s() -> None:
    assert INSTANT.quote_s == INSTANT.submit_s == INSTANT.land_s == (0.0, 0.0)
    assert LATENCY_PROFILES["realistic"].land_s == (2.0, 3.0)


async def test_default_venues_small_order_prefers_meteora_large_order_raydium() -> None:
    raydium, meteora = default_venues(Settings(venue_profile="instant"))

    async def outs(amount: str) -> tuple[Decimal, Decimal]:
        r = await raydium.quote("SOL", "USDC", Decimal(amount))
        m = await meteora.quote("SOL", "USDC", Decimal(amount))
        return r.amount_out, m.amount_out

    small_r, small_m = await outs("1.5")
    large_r, large_m = await outs("1000")

    # 1.5 SOL: Meteora's 10 bps beats Raydium's 25 bps; no bin is crossed.
    assert small_m > small_r
    # 1000 SOL ($150k) crosses ~70 of Meteora's $2k bins; Raydium's $20M pool is deeper.
    assert large_r > large_m


async def test_default_venues_one_and_a_half_sol_at_50_bps_always_confirms() -> None:
    settings = Settings(venue_profile="instant", venue_seed=3)
    for venue in default_venues(settings):
        for n in range(100):
            quote = await venue.quote("SOL", "USDC", Decimal("1.5"))
            request = SwapRequest(
                client_ref=f"drift-{n}",
                token_in="SOL",
                token_out="USDC",
                amount_in=Decimal("1.5"),
                min_amount_out=quote.amount_out * Decimal("0.995"),  # 50 bps
            )
            submitted = await venue.submit(request)
            result = await venue.confirm(submitted.tx_hash)
            assert result.status == "confirmed", result


async def test_quotes_walk_in_small_steps_inside_the_band() -> None:
    settings = Settings(
        venue_profile="instant", venue_seed=5, venue_base_price_sol_usdc=Decimal(100)
    )
    raydium = next(v for v in default_venues(settings) if v.name == "raydium")
    prices = [(await raydium.quote("SOL", "USDC", Decimal(1))).price for _ in range(400)]

    assert all(Decimal("97.5") <= p <= Decimal("102") for p in prices)
    steps = [abs(b / a - 1) for a, b in itertools.pairwise(prices)]
    assert max(steps) <= Decimal("0.00021")  # 2 bps walk, plus rounding
    assert len(set(prices)) > 300  # it moves


# Scripted failures and price moves ---------------------------------------------


async def test_script_failures_quote_fails_in_order_then_recovers() -> None:
    v = still()
    v.script_failures("quote", ["POOL_BUSY", "UNSUPPORTED_PAIR"])

    with pytest.raises(VenueError) as first:
        await v.quote("SOL", "USDC", Decimal("1"))
    with pytest.raises(VenueError) as second:
        await v.quote("SOL", "USDC", Decimal("1"))
    third = await v.quote("SOL", "USDC", Decimal("1"))

    assert (first.value.code, first.value.transient) == ("POOL_BUSY", True)
    assert (second.value.code, second.value.transient) == ("UNSUPPORTED_PAIR", False)
    assert third.amount_out > 0


async def test_script_failures_submit_raises_and_records_nothing() -> None:
    v = still()
    v.script_failures("submit", ["BLOCKHASH_EXPIRED"])

    with pytest.raises(VenueError) as caught:
        await v.submit(swap())
    retried = await v.submit(swap())

    assert (caught.value.code, caught.value.transient) == ("BLOCKHASH_EXPIRED", True)
    assert retried.status == "pending"


async def test_script_failures_confirm_lands_failed_without_moving_the_pool() -> None:
    v = still()
    pool_before = v.pool("SOL", "USDC")
    v.script_failures("confirm", ["INSUFFICIENT_FUNDS"])

    failed = await v.confirm((await v.submit(swap("order-1:1"))).tx_hash)
    ok = await v.confirm((await v.submit(swap("order-2:1"))).tx_hash)

    assert (failed.status, failed.error_code, failed.amount_out) == (
        "failed",
        "INSUFFICIENT_FUNDS",
        None,
    )
    assert ok.status == "confirmed"
    assert ok.amount_out == cpmm_out("1", 30, SOL_RESERVE, USDC_RESERVE, 6)
    assert pool_before != v.pool("SOL", "USDC")


async def test_move_price_down_five_percent_gives_five_percent_less_out() -> None:
    v = still()
    before = await v.quote("SOL", "USDC", Decimal("1"))

    v.move_price("SOL", "USDC", Decimal("-0.05"))
    after = await v.quote("SOL", "USDC", Decimal("1"))

    assert abs(after.amount_out / before.amount_out - Decimal("0.95")) < Decimal("0.00001")


async def test_move_price_from_the_other_side_inverts_the_factor() -> None:
    v = still()
    before = await v.quote("USDC", "SOL", Decimal("150"))

    v.move_price("USDC", "SOL", Decimal("0.02"))
    after = await v.quote("USDC", "SOL", Decimal("150"))

    assert abs(after.amount_out / before.amount_out - Decimal("1.02")) < Decimal("0.00001")


async def test_move_price_on_dlmm_moves_by_whole_bins() -> None:
    _, meteora = default_venues(Settings(venue_profile="instant", venue_walk_bps=Decimal(0)))
    before = meteora.pool("SOL", "USDC")

    meteora.move_price("SOL", "USDC", Decimal("-0.05"))

    after = meteora.pool("SOL", "USDC")
    assert isinstance(before, DlmmPool)
    assert isinstance(after, DlmmPool)
    # ln(0.95) / ln(1.001) = -51.3 bins -> 51 bins down, 4.97 % lower.
    assert after.active_id == before.active_id - 51


async def test_move_price_between_quote_and_landing_fails_with_slippage_exceeded() -> None:
    now = [100.0]
    v = landing_venue(now)
    quote = await v.quote("SOL", "USDC", Decimal("1"))
    tolerance = quote.amount_out * Decimal("0.995")  # 50 bps

    submitted = await v.submit(swap(min_out=str(tolerance)))
    v.move_price("SOL", "USDC", Decimal("-0.01"))
    now[0] = 103.0
    result = await v.confirm(submitted.tx_hash)

    assert (result.status, result.error_code) == ("failed", "SLIPPAGE_EXCEEDED")


def test_move_price_rejects_a_fall_of_everything() -> None:
    with pytest.raises(ValueError, match="fraction"):
        still().move_price("SOL", "USDC", Decimal("-1"))


async def test_move_price_alone_is_pulled_back_into_the_band_by_the_walk() -> None:
    v = venue(walk_bps="20")
    v.move_price("SOL", "USDC", Decimal("0.10"))
    for _ in range(200):
        quote = await v.quote("SOL", "USDC", Decimal("0.001"))
    # Arbitrage against the wider market: back within 2 % of 150 (less the fee).
    assert quote.price < Decimal(153)


async def test_move_price_of_the_market_holds_around_the_new_price() -> None:
    v = venue(walk_bps="20")
    v.move_price("SOL", "USDC", Decimal("0.10"), market=True)
    prices = [(await v.quote("SOL", "USDC", Decimal("0.001"))).price for _ in range(200)]
    # The band follows the reference: within 2 % of 165, less the 30 bps fee.
    assert all(Decimal("161.2") < p < Decimal("168.3") for p in prices)
