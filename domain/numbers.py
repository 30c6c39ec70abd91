"""What counts as an amount or a price at the edge: plain decimals within sane bounds. Pure.

Every number a client sends ends up in an event on the log and in a PostgreSQL
``numeric`` column, and goes through pool math on the way. ``Decimal`` takes
``1e-100000``, ``1_000`` and ``١٢`` without a word; the pool math and the read
models do not. So a number is accepted only as ASCII digits with an optional
fraction (no sign, exponent, underscore or whitespace), and only within the
bounds below.
"""

from __future__ import annotations

import re
from decimal import Decimal

# The text of an amount or a price: at most 16 integer digits and 18 decimals.
DECIMAL_PATTERN = r"^[0-9]{1,16}(\.[0-9]{1,18})?$"
_DECIMAL_TEXT = re.compile(r"[0-9]{1,16}(?:\.[0-9]{1,18})?")

# An amount of a token sold, in whole tokens.
MAX_AMOUNT = Decimal("1e15")
# A price (limit, sniper maximum, launch), in one token per another.
MIN_PRICE = Decimal("1e-18")
MAX_PRICE = Decimal("1e15")
# The USD value locked in a launched pool.
MIN_LIQUIDITY_USD = Decimal(1)
MAX_LIQUIDITY_USD = Decimal("1e12")


class NotADecimal(ValueError):
    """The text is not a plain, bounded decimal; the message says why."""


def parse_decimal(
    text: str, name: str, *, maximum: Decimal, minimum: Decimal = Decimal(0)
) -> Decimal:
    """Return ``text`` as a positive ``Decimal`` from ``minimum`` to ``maximum``, or raise.

    Raise ``NotADecimal`` for anything but ASCII digits with an optional fraction,
    for zero, and for a number out of bounds (``minimum`` itself is accepted).
    """
    if _DECIMAL_TEXT.fullmatch(text) is None:
        if text.startswith("-") and _DECIMAL_TEXT.fullmatch(text[1:]):
            raise NotADecimal(f"{name} must be greater than zero, not {shown(text)}")
        raise NotADecimal(
            f"{name} must be a plain decimal such as '1.5' (ASCII digits, an optional "
            f"fraction, no sign, exponent, underscore or space), not {shown(text)}"
        )
    return check_bounds(Decimal(text), name, minimum=minimum, maximum=maximum)


def check_bounds(
    number: Decimal, name: str, *, maximum: Decimal, minimum: Decimal = Decimal(0)
) -> Decimal:
    """Return ``number`` when finite, above zero and within the bounds, or raise ``NotADecimal``."""
    if not number.is_finite() or number <= 0:
        raise NotADecimal(f"{name} must be greater than zero")
    if number < minimum:
        raise NotADecimal(f"{name} must be at least {minimum}")
    if number > maximum:
        raise NotADecimal(f"{name} must be at most {maximum:f}")
    return number


def decimal_places(number: Decimal) -> int:
    """Return how many digits ``number`` has after the point, trailing zeros excluded."""
    exponent = number.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def shown(value: object, limit: int = 40) -> str:
    """Return ``value`` as an error message shows it: its ``repr``, ASCII only, shortened."""
    text = ascii(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
