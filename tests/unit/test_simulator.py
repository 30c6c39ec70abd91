"""The simulated venues: quote math, determinism, idempotency, slippage, failures."""

from __future__ import annotations

import asyncio
import itertools
from decimal import Decimal

import pytest

from services.common.settings import Settings
from services.domain.tokens import TOKENS
from services.venues.interface import SwapRequest, Venue, VenueError
from services.venues.simulator import (
    INSTANT,
    LATENCY_PROFILES,
    FailureRates,
    LatencyProfile,
    SimulatedVenue,
    default_price_table,
    default_venues,
    swap_amount_out,
    tx_hash_for,
)

PRICES = default_price_table(Decimal("150"))


def venue(
    seed: int = 7,
    failures: FailureRates | None = None,
    spread: tuple[str, str] = ("0.98", "1.02"),
) -> SimulatedVenue:
    return SimulatedVenue(
        "raydium",
        fee_bps=30,
        spread=(Decimal(spread[0]), Decimal(spread[1])),
        seed=seed,
        prices=PRICES,
        failures=failures or FailureRates(),
    )


def swap(client_ref: str = "order-1:1", min_out: str = "0", amount_in: str = "1") -> SwapRequest:
    return SwapRequest(
        client_ref=client_ref,
        token_in="SOL",
        token_out="USDC",
        amount_in=Decimal(amount_in),
        min_amount_out=Decimal(min_out),
    )


def landing_venue(now: list[float]) -> SimulatedVenue:
    """Return a no-spread venue on a hand-moved clock whose swaps land 2-3 s after submission."""
    return SimulatedVenue(
        "meteora",
        fee_bps=20,
        spread=(Decimal("1"), Decimal("1")),
        seed=7,
        prices=PRICES,
        latency=LatencyProfile(quote_s=(0.0, 0.0), submit_s=(0.0, 0.0), land_s=(2.0, 3.0)),
        clock=lambda: now[0],
    )


# Pure pieces -----------------------------------------------------------------


def test_swap_amount_out_one_sol_at_150_with_30_bps_fee() -> None:
    amount_out, fee = swap_amount_out(Decimal("1"), Decimal("150"), 30, 6)

    assert fee == Decimal("0.003")  # in SOL
    assert amount_out == Decimal("149.550000")


def test_swap_amount_out_rounds_down_to_out_decimals() -> None:
    # (0.1234567 - 0.0002469134) * 1.5 = 0.18481469... -> 0.18 at 2 decimals.
    amount_out, _ = swap_amount_out(Decimal("0.1234567"), Decimal("1.5"), 20, 2)

    assert amount_out == Decimal("0.18")


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


# Quotes ----------------------------------------------------------------------


async def test_simulated_venue_quote_within_spread_net_of_fee() -> None:
    quote = await venue().quote("SOL", "USDC", Decimal("2"))

    # 2 SOL at 150 * U(0.98, 1.02), less 0.30 % of the input.
    assert quote.fee == Decimal("0.006")
    assert Decimal("2") * 150 * Decimal("0.98") * Decimal("0.997") <= quote.amount_out
    assert quote.amount_out <= Decimal("2") * 150 * Decimal("1.02") * Decimal("0.997")
    assert quote.amount_out.as_tuple().exponent == -6
    assert quote.price == quote.amount_out / Decimal("2")
    assert (quote.venue, quote.token_in, quote.token_out, quote.fee_bps) == (
        "raydium",
        "SOL",
        "USDC",
        30,
    )


async def test_simulated_venue_fixed_spread_gives_exact_amount() -> None:
    quote = await venue(spread=("1", "1")).quote("USDC", "SOL", Decimal("150"))

    # 150 USDC less 0.45 USDC fee, at 1/150 SOL per USDC: 0.997 SOL.
    assert quote.amount_out == Decimal("0.997000000")


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
    assert confirmed.amount_out == Decimal("149.700000")
    assert third == confirmed
    assert await v.find_swap("order-1:1") == confirmed


async def test_simulated_venue_find_swap_unknown_ref_returns_none() -> None:
    assert await venue().find_swap("never-sent") is None


async def test_simulated_venue_confirm_unknown_tx_raises_permanent_error() -> None:
    with pytest.raises(VenueError) as caught:
        await venue().confirm("nope")

    assert (caught.value.code, caught.value.transient) == ("UNKNOWN_TX", False)


async def test_simulated_venue_min_out_above_pool_fails_with_slippage_exceeded() -> None:
    v = venue()

    # At most 1 * 150 * 1.02 * 0.997 = 152.541 USDC can come out of this pool.
    submitted = await v.submit(swap(min_out="152.542"))
    result = await v.confirm(submitted.tx_hash)

    assert result.status == "failed"
    assert result.error_code == "SLIPPAGE_EXCEEDED"
    assert result.amount_out is None
    assert result.error is not None and "152.542" in result.error


async def test_simulated_venue_swap_settles_only_after_landing_time() -> None:
    now = [100.0]
    v = landing_venue(now)

    await v.submit(swap("order-2:1"))
    before = await v.find_swap("order-2:1")
    now[0] = 103.0
    after = await v.find_swap("order-2:1")

    assert before is not None and before.status == "pending"
    assert after is not None and after.status == "confirmed"
    assert after.amount_out == Decimal("149.700000")  # 1 SOL at 150, 0.20 % fee


async def test_simulated_venue_confirm_waits_for_landing() -> None:
    v = SimulatedVenue(
        "meteora",
        fee_bps=20,
        spread=(Decimal("1"), Decimal("1")),
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


def test_default_venues_are_raydium_and_meteora_with_their_fees() -> None:
    venues = default_venues(Settings(venue_profile="instant"))
    as_protocol: list[Venue] = list(venues)

    assert [(v.name, v.fee_bps) for v in venues] == [("raydium", 30), ("meteora", 20)]
    assert [v.spread for v in venues] == [
        (Decimal("0.98"), Decimal("1.02")),
        (Decimal("0.97"), Decimal("1.02")),
    ]
    assert len(as_protocol) == 2


async def test_default_venues_use_settings_sol_price() -> None:
    raydium, _ = default_venues(
        Settings(venue_profile="instant", venue_base_price_sol_usdc=Decimal("200"))
    )

    quote = await raydium.quote("SOL", "USDC", Decimal("1"))

    assert Decimal("200") * Decimal("0.98") * Decimal("0.997") <= quote.amount_out
    assert quote.amount_out <= Decimal("200") * Decimal("1.02") * Decimal("0.997")


def test_latency_profiles_instant_is_zero_and_realistic_lands_in_two_to_three_s() -> None:
    assert INSTANT.quote_s == INSTANT.submit_s == INSTANT.land_s == (0.0, 0.0)
    assert LATENCY_PROFILES["realistic"].land_s == (2.0, 3.0)


async def test_swap_after_quote_lands_within_the_execution_drift_of_the_quote() -> None:
    settings = Settings(venue_profile="instant", venue_seed=3)
    for venue in default_venues(settings):
        for n in range(50):
            quote = await venue.quote("SOL", "USDC", Decimal("2"))
            request = SwapRequest(
                client_ref=f"drift-{n}",
                token_in="SOL",
                token_out="USDC",
                amount_in=Decimal("2"),
                min_amount_out=quote.amount_out * Decimal("0.995"),  # 50 bps
            )
            submitted = await venue.submit(request)
            result = await venue.confirm(submitted.tx_hash)
            assert result.status == "confirmed", result
            assert result.amount_out is not None
            assert abs(result.amount_out / quote.amount_out - 1) <= Decimal("0.0021")


async def test_quotes_walk_in_small_steps_inside_the_spread_band() -> None:
    settings = Settings(
        venue_profile="instant", venue_seed=5, venue_base_price_sol_usdc=Decimal(100)
    )
    raydium = next(v for v in default_venues(settings) if v.name == "raydium")
    prices = [(await raydium.quote("SOL", "USDC", Decimal(1))).price for _ in range(400)]
    gross = [p / Decimal("0.997") for p in prices]  # undo the 30 bps fee
    assert all(Decimal("97.99") <= g <= Decimal("102.01") for g in gross)
    steps = [abs(b / a - 1) for a, b in itertools.pairwise(gross)]
    assert max(steps) <= Decimal("0.00052")
    assert len(set(prices)) > 300  # it moves
