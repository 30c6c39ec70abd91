"""Routing: pick the best net output among the venues' quotes, bound the slippage.

``choose_route`` and ``min_amount_out`` are pure and tested with numbers; the quotes
come from ``adapters.venues.quoting.quote_all``, which turns every venue failure
into a ``VenueQuote`` with ``error`` set so the decision sees all answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from events.messages import Frozen, VenueQuote

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


def price_improvement(
    quotes: tuple[VenueQuote, ...], venue: str
) -> tuple[str | None, Decimal | None]:
    """Return the best usable quote other than ``venue``'s and ``venue``'s gain over it in bps.

    Both are None when ``venue`` gave no usable quote or no other venue did.
    """
    usable = {q.venue: q.amount_out for q in quotes if q.ok and q.amount_out and q.amount_out > 0}
    chosen = usable.pop(venue, None)
    if chosen is None or not usable:
        return None, None
    # Highest output first, then the name, so the answer never depends on quote order.
    runner_up, other = min(usable.items(), key=lambda item: (-item[1], item[0]))
    gain = ((chosen - other) / other * BPS).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return runner_up, gain


def min_amount_out(expected_out: Decimal, slippage_bps: int, decimals: int) -> Decimal:
    """Return ``expected_out * (1 - slippage_bps / 10^4)`` rounded down to ``decimals``."""
    if not 0 <= slippage_bps <= BPS:
        raise ValueError(f"slippage_bps must be within 0..{BPS}, got {slippage_bps}")
    bound = expected_out * (BPS - slippage_bps) / BPS
    return bound.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_DOWN)
