"""Prices of pairs, the way traders quote them: quote token per one base token. Pure.

Every pair has a base and a quote token. The quote is the first of USDC, USDT and
SOL that the pair holds (so SOL/USDC is priced in USDC, BONK/SOL in SOL); a pair
of two other tokens is quoted in the one listed first. A launched token is never
the quote. A limit price and a sniper's maximum price are in these units, whatever
the direction of the order:

* selling the base (tokenIn = base) executes at ``amount_out / amount_in`` and a
  limit is reached when that price is at or above it;
* buying the base (tokenIn = quote) executes at ``amount_in / amount_out`` and a
  limit (or a sniper's maximum) is reached when that price is at or below it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Literal

from domain.tokens import TOKENS

QUOTE_PRIORITY = ("USDC", "USDT", "SOL")
Side = Literal["buy", "sell"]


@dataclass(frozen=True, slots=True)
class Market:
    """A pair as traders name it: ``base/quote``, priced in quote per base."""

    base: str
    quote: str

    @property
    def name(self) -> str:
        return f"{self.base}/{self.quote}"


def _rank(symbol: str) -> int:
    if symbol in QUOTE_PRIORITY:
        return QUOTE_PRIORITY.index(symbol)
    listed = list(TOKENS)
    return len(QUOTE_PRIORITY) + (listed.index(symbol) if symbol in listed else len(listed))


def market_of(token_a: str, token_b: str) -> Market:
    """Return the market of two token symbols (the better-ranked one is the quote)."""
    quote, base = sorted((token_a, token_b), key=lambda s: (_rank(s), s))
    return Market(base=base, quote=quote)


def side_of(token_in: str, token_out: str) -> Side:
    """Return whether an order selling ``token_in`` for ``token_out`` buys or sells the base."""
    return "sell" if market_of(token_in, token_out).base == token_in else "buy"


def executable_price(side: Side, amount_in: Decimal, amount_out: Decimal) -> Decimal:
    """Return the price (quote per base) of swapping ``amount_in`` for ``amount_out``."""
    if amount_in <= 0 or amount_out <= 0:
        raise ValueError("amounts must be positive")
    return amount_out / amount_in if side == "sell" else amount_in / amount_out


def reaches(side: Side, price: Decimal, limit: Decimal) -> bool:
    """Tell whether executing at ``price`` honours ``limit`` (sell: at least, buy: at most)."""
    return price >= limit if side == "sell" else price <= limit


def min_out_at(side: Side, amount_in: Decimal, limit: Decimal, decimals: int) -> Decimal:
    """Return the least output that honours ``limit``, rounded up to ``decimals``."""
    exact = amount_in * limit if side == "sell" else amount_in / limit
    quantum = Decimal(1).scaleb(-decimals)
    floored = exact.quantize(quantum, rounding=ROUND_DOWN)
    return floored if floored == exact else floored + quantum
