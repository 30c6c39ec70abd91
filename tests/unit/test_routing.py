"""Routing decisions, slippage bounds and concurrent quoting, with numbers."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from adapters.venues.interface import Quote, SwapRequest, SwapResult, Venue, VenueError
from adapters.venues.quoting import quote_all
from domain.routing import NoRoute, RouteDecision, choose_route, min_amount_out
from events.messages import VenueQuote

AMOUNT_IN = Decimal("1")


def net_quote(venue: str, gross_out: str, fee_bps: int) -> VenueQuote:
    """Return the quote a venue gives: ``gross_out`` less its fee, fee in token_in units."""
    gross = Decimal(gross_out)
    return VenueQuote(
        venue=venue,
        amount_out=gross * (10_000 - fee_bps) / 10_000,
        fee=AMOUNT_IN * fee_bps / 10_000,
        price=gross / AMOUNT_IN,
    )


def failed_quote(venue: str, error: str) -> VenueQuote:
    return VenueQuote(venue=venue, error=error)


# choose_route ----------------------------------------------------------------


def test_choose_route_equal_gross_output_picks_lower_fee_venue() -> None:
    # 100 gross at 0.30 % nets 99.7; 100 gross at 0.20 % nets 99.8.
    quotes = [net_quote("raydium", "100", 30), net_quote("meteora", "100", 20)]

    decision = choose_route(quotes, token_out="USDC")

    assert decision == RouteDecision(
        venue="meteora",
        expected_out=Decimal("99.8"),
        reason="meteora: 99.8 USDC out vs raydium 99.7 (+0.10%)",
        runner_up="raydium",
        improvement_bps=Decimal("10.03"),  # 0.1 / 99.7 * 10^4
    )


def test_choose_route_higher_gross_output_outweighs_higher_fee() -> None:
    # 101 gross at 0.30 % nets 100.697; 100 gross at 0.20 % nets 99.8.
    quotes = [net_quote("raydium", "101", 30), net_quote("meteora", "100", 20)]

    decision = choose_route(quotes)

    assert decision.venue == "raydium"
    assert decision.expected_out == Decimal("100.697")
    assert decision.reason == "raydium: 100.697 out vs meteora 99.8 (+0.90%)"


def test_choose_route_failed_quote_is_skipped_and_reported() -> None:
    quotes = [net_quote("raydium", "200", 30), failed_quote("meteora", "TIMEOUT")]

    decision = choose_route(quotes, token_out="USDC")

    assert decision.venue == "raydium"
    assert decision.expected_out == Decimal("199.4")
    assert (
        decision.reason == "raydium: 199.4 USDC out (only usable quote); meteora skipped (TIMEOUT)"
    )
    assert (decision.runner_up, decision.improvement_bps) == (None, None)


def test_choose_route_better_quote_from_failed_venue_is_ignored() -> None:
    errored_but_large = VenueQuote(venue="meteora", amount_out=Decimal("1000"), error="POOL_BUSY")
    quotes = [net_quote("raydium", "100", 30), errored_but_large]

    assert choose_route(quotes).venue == "raydium"


def test_choose_route_equal_net_output_prefers_lower_fee() -> None:
    quotes = [
        VenueQuote(venue="aardvark", amount_out=Decimal("50"), fee=Decimal("0.003")),
        VenueQuote(venue="zebra", amount_out=Decimal("50"), fee=Decimal("0.002")),
    ]

    decision = choose_route(quotes)

    assert decision.venue == "zebra"
    assert "tie with aardvark broken by lower fee" in decision.reason


def test_choose_route_equal_net_output_and_fee_prefers_name_regardless_of_order() -> None:
    a = VenueQuote(venue="meteora", amount_out=Decimal("50"), fee=Decimal("0.002"))
    b = VenueQuote(venue="raydium", amount_out=Decimal("50"), fee=Decimal("0.002"))

    assert choose_route([a, b]).venue == "meteora"
    assert choose_route([b, a]).venue == "meteora"


def test_choose_route_all_failed_raises_no_route_with_reasons() -> None:
    quotes = [failed_quote("raydium", "NETWORK_ERROR"), failed_quote("meteora", "TIMEOUT")]

    with pytest.raises(NoRoute, match=r"meteora skipped \(TIMEOUT\); raydium skipped"):
        choose_route(quotes)


def test_choose_route_no_quotes_raises_no_route() -> None:
    with pytest.raises(NoRoute, match="no venues were quoted"):
        choose_route([])


def test_choose_route_zero_output_is_not_a_route() -> None:
    with pytest.raises(NoRoute, match="no output"):
        choose_route([VenueQuote(venue="raydium", amount_out=Decimal("0"), fee=Decimal("0"))])


def test_no_route_is_a_value_error() -> None:
    assert issubclass(NoRoute, ValueError)


# min_amount_out --------------------------------------------------------------


def test_min_amount_out_fifty_bps_rounds_down_to_token_decimals() -> None:
    # 14.987654 * 0.995 = 14.91271573 -> 14.912715 at 6 decimals (never up).
    assert min_amount_out(Decimal("14.987654"), 50, 6) == Decimal("14.912715")


def test_min_amount_out_result_has_exactly_token_decimals() -> None:
    bound = min_amount_out(Decimal("100"), 100, 9)

    assert bound == Decimal("99")
    assert bound.as_tuple().exponent == -9


def test_min_amount_out_tiny_amount_rounds_down_to_zero() -> None:
    assert min_amount_out(Decimal("0.00001"), 1, 5) == Decimal("0")


def test_min_amount_out_zero_slippage_keeps_expected() -> None:
    assert min_amount_out(Decimal("1.23456"), 0, 5) == Decimal("1.23456")


@pytest.mark.parametrize("bps", [-1, 10_001])
def test_min_amount_out_out_of_range_slippage_raises(bps: int) -> None:
    with pytest.raises(ValueError, match="slippage_bps"):
        min_amount_out(Decimal("1"), bps, 6)


# quote_all -------------------------------------------------------------------


class FakeVenue:
    """A test double answering quotes after ``delay_s`` with a fixed amount or error."""

    def __init__(
        self,
        name: str,
        amount_out: str = "10",
        delay_s: float = 0.0,
        error: VenueError | None = None,
    ) -> None:
        self.name = name
        self._amount_out = Decimal(amount_out)
        self._delay_s = delay_s
        self._error = error

    async def quote(self, token_in: str, token_out: str, amount_in: Decimal) -> Quote:
        await asyncio.sleep(self._delay_s)
        if self._error is not None:
            raise self._error
        return Quote(
            venue=self.name,
            token_in=token_in,
            token_out=token_out,
            amount_in=amount_in,
            amount_out=self._amount_out,
            fee=amount_in * 30 / 10_000,
            fee_bps=30,
            price=self._amount_out / amount_in,
        )

    async def submit(self, request: SwapRequest) -> SwapResult:
        raise NotImplementedError

    async def confirm(self, tx_hash: str) -> SwapResult:
        raise NotImplementedError

    async def find_swap(self, client_ref: str) -> SwapResult | None:
        raise NotImplementedError


async def test_quote_all_slow_venue_records_timeout_and_keeps_others() -> None:
    venues: list[Venue] = [FakeVenue("slow", delay_s=5.0), FakeVenue("fast", amount_out="149.55")]

    quotes = await quote_all(venues, "SOL", "USDC", Decimal("1"), timeout_s=0.05)

    slow, fast = quotes
    assert slow.venue == "slow"
    assert slow.error == "TIMEOUT"
    assert not slow.ok
    assert 40 <= slow.latency_ms < 1000
    assert fast.ok
    assert fast.amount_out == Decimal("149.55")
    assert fast.fee == Decimal("0.003")


async def test_quote_all_venue_error_becomes_error_code() -> None:
    busy = VenueError("POOL_BUSY", "write-locked", transient=True)
    venues: list[Venue] = [FakeVenue("raydium", error=busy), FakeVenue("meteora")]

    quotes = await quote_all(venues, "SOL", "USDC", Decimal("1"), timeout_s=1.0)

    assert [(q.venue, q.error) for q in quotes] == [("raydium", "POOL_BUSY"), ("meteora", None)]


async def test_quote_all_unexpected_exception_becomes_error_not_raise() -> None:
    class Broken(FakeVenue):
        async def quote(self, token_in: str, token_out: str, amount_in: Decimal) -> Quote:
            raise RuntimeError("bug in adapter")

    quotes = await quote_all([Broken("raydium")], "SOL", "USDC", Decimal("1"), timeout_s=1.0)

    assert quotes[0].error == "UNEXPECTED_ERROR"


async def test_quote_all_venues_are_quoted_concurrently() -> None:
    venues: list[Venue] = [FakeVenue(f"v{i}", delay_s=0.2) for i in range(5)]
    loop = asyncio.get_running_loop()

    started = loop.time()
    quotes = await quote_all(venues, "SOL", "USDC", Decimal("1"), timeout_s=2.0)

    assert all(q.ok for q in quotes)
    assert loop.time() - started < 0.6


async def test_quote_all_injected_clock_gives_latency_ms() -> None:
    ticks = iter([10.0, 10.25])

    quotes = await quote_all(
        [FakeVenue("raydium")],
        "SOL",
        "USDC",
        Decimal("1"),
        timeout_s=1.0,
        clock=lambda: next(ticks),
    )

    assert quotes[0].latency_ms == 250
