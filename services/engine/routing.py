"""Routing: quote every venue, pick the best net output, bound the slippage.

``choose_route`` and ``min_amount_out`` are pure and tested with numbers;
``quote_all`` is the one helper that talks to venues, and it turns every failure
into a ``VenueQuote`` with ``error`` set so the routing decision sees all answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from adapters.venues.interface import Venue, VenueError
from events.messages import Frozen, VenueQuote, price_improvement

log = logging.getLogger(__name__)

BPS = 10_000
_NO_FEE = Decimal("Infinity")


class NoRoute(ValueError):
    """No venue gave a usable quote."""


class RouteDecision(Frozen):
    """The chosen venue, what it is expected to give, and why it was chosen."""

    venue: str
    expected_out: Decimal
    reason: str
    runner_up: str | None = None
    improvement_bps: Decimal | None = None


def _rank_key(quote: VenueQuote) -> tuple[Decimal, Decimal, str]:
    # Best net output first; on a tie the lower fee, then the name, so the choice
    # never depends on the order in which venues answered.
    assert quote.amount_out is not None
    fee = quote.fee if quote.fee is not None else _NO_FEE
    return (-quote.amount_out, fee, quote.venue)


def _fmt(amount: Decimal) -> str:
    return f"{amount.normalize():f}"


def choose_route(quotes: Sequence[VenueQuote], *, token_out: str | None = None) -> RouteDecision:
    """Pick the ok quote with the greatest ``amount_out`` (venues quote it net of fees).

    Ties go to the lower fee, then to the alphabetically first venue. Raise
    ``NoRoute`` when no quote is ok with a positive amount out.
    """
    usable = sorted(
        (q for q in quotes if q.ok and q.amount_out is not None and q.amount_out > 0),
        key=_rank_key,
    )
    skipped = [
        f"{q.venue} skipped ({q.error if q.error is not None else 'no output'})"
        for q in sorted(quotes, key=lambda q: q.venue)
        if q not in usable
    ]
    if not usable:
        detail = "; ".join(skipped) if skipped else "no venues were quoted"
        raise NoRoute(f"no venue gave a usable quote: {detail}")

    best = usable[0]
    assert best.amount_out is not None
    unit = f" {token_out}" if token_out else ""
    reason = f"{best.venue}: {_fmt(best.amount_out)}{unit} out"
    if len(usable) == 1:
        reason += " (only usable quote)"
    else:
        runner = usable[1]
        assert runner.amount_out is not None
        if runner.amount_out == best.amount_out:
            broken_by = "name" if runner.fee == best.fee else "lower fee"
            reason += f", tie with {runner.venue} broken by {broken_by}"
        else:
            gain = ((best.amount_out - runner.amount_out) / runner.amount_out * 100).quantize(
                Decimal("0.01"), rounding=ROUND_HALF_UP
            )
            reason += f" vs {runner.venue} {_fmt(runner.amount_out)} (+{gain}%)"
    if skipped:
        reason += "; " + "; ".join(skipped)
    runner_up, improvement = price_improvement(tuple(quotes), best.venue)
    return RouteDecision(
        venue=best.venue,
        expected_out=best.amount_out,
        reason=reason,
        runner_up=runner_up,
        improvement_bps=improvement,
    )


def min_amount_out(expected_out: Decimal, slippage_bps: int, decimals: int) -> Decimal:
    """Return ``expected_out * (1 - slippage_bps / 10^4)`` rounded down to ``decimals``."""
    if not 0 <= slippage_bps <= BPS:
        raise ValueError(f"slippage_bps must be within 0..{BPS}, got {slippage_bps}")
    bound = expected_out * (BPS - slippage_bps) / BPS
    return bound.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_DOWN)


async def quote_all(
    venues: Sequence[Venue],
    token_in: str,
    token_out: str,
    amount_in: Decimal,
    timeout_s: float,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[VenueQuote, ...]:
    """Quote every venue concurrently, each within ``timeout_s``, in the order given.

    A venue that fails or times out yields a ``VenueQuote`` whose ``error`` is the
    ``VenueError`` code or ``"TIMEOUT"``; this function never raises for a venue.
    """

    async def one(venue: Venue) -> VenueQuote:
        started = clock()
        error: str
        try:
            quote = await asyncio.wait_for(
                venue.quote(token_in, token_out, amount_in), timeout=timeout_s
            )
        except TimeoutError:
            error = "TIMEOUT"
        except VenueError as exc:
            error = exc.code
        except Exception:
            # A broken venue adapter must not take the whole order down with it.
            log.exception("quote from %s failed unexpectedly", venue.name)
            error = "UNEXPECTED_ERROR"
        else:
            return VenueQuote(
                venue=venue.name,
                amount_out=quote.amount_out,
                fee=quote.fee,
                price=quote.price,
                latency_ms=_elapsed_ms(started, clock()),
            )
        return VenueQuote(venue=venue.name, error=error, latency_ms=_elapsed_ms(started, clock()))

    return tuple(await asyncio.gather(*(one(venue) for venue in venues)))


def _elapsed_ms(started: float, ended: float) -> int:
    return max(0, round((ended - started) * 1000))
