"""Quote every venue at once: each answer, or why there is none, as a ``VenueQuote``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from decimal import Decimal

from adapters.venues.interface import Venue, VenueError
from events.messages import VenueQuote

log = logging.getLogger(__name__)


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
