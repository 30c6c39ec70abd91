"""The async interface through which the engine reaches a DEX venue.

A simulator implements it today; a real connector could replace it later. Every
swap carries a ``client_ref`` chosen by the engine, so after a crash or a retry
the engine can ask ``find_swap`` whether the swap already happened instead of
sending it twice.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal, Protocol

from events.messages import Frozen


class Quote(Frozen):
    """What a venue would give for ``amount_in`` right now."""

    venue: str
    token_in: str
    token_out: str
    amount_in: Decimal
    amount_out: Decimal  # net of the venue fee
    fee: Decimal  # in units of token_in
    fee_bps: int
    price: Decimal  # amount_out / amount_in


class SwapRequest(Frozen):
    """A swap to execute, bounded by ``min_amount_out``."""

    client_ref: str
    token_in: str
    token_out: str
    amount_in: Decimal
    min_amount_out: Decimal


class SwapResult(Frozen):
    """What became of a submitted swap."""

    client_ref: str
    tx_hash: str
    status: Literal["pending", "confirmed", "failed"]
    amount_out: Decimal | None = None
    executed_price: Decimal | None = None
    error_code: str | None = None
    error: str | None = None


class LedgerEntry(SwapResult):
    """One swap as the venue's ledger lists it: what was asked, and what became of it."""

    venue: str
    token_in: str
    token_out: str
    amount_in: Decimal
    min_amount_out: Decimal


class Ledger(Frozen):
    """Every swap one venue knows, oldest first."""

    swaps: tuple[LedgerEntry, ...]


class PoolInfo(Frozen):
    """One pool of a venue as the market sees it: priced in quote per base.

    ``base``/``quote`` follow ``domain.pricing.market_of``; ``price`` is
    the pool's spot price (10 significant digits) in quote per one base, whichever
    token the pool holds as its X; ``liquidity_usd`` is the USD value locked at the
    venue's reference prices, which moves with deposits (and fees kept in the pool)
    but not with the price. ``launched`` says the base is a token the venue listed
    after start-up.
    """

    venue: str
    pool_id: str  # "<venue>:<X>-<Y>"
    base: str
    quote: str
    price: Decimal
    liquidity_usd: Decimal
    launched: bool
    base_mint: str
    base_decimals: int


class PoolList(Frozen):
    """Every pool of one venue."""

    pools: tuple[PoolInfo, ...]


class VenueError(Exception):
    """A venue call that failed; ``transient`` ones may succeed if retried."""

    def __init__(self, code: str, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.code = code
        self.transient = transient


class Venue(Protocol):
    """One DEX venue as the engine sees it."""

    name: str

    async def quote(self, token_in: str, token_out: str, amount_in: Decimal) -> Quote:
        """Quote a swap; raise ``VenueError`` when the venue cannot."""
        ...

    async def submit(self, request: SwapRequest) -> SwapResult:
        """Submit a swap and return at once with its tx hash (status ``pending``).

        Submitting the same ``client_ref`` twice returns the first submission.
        """
        ...

    async def confirm(self, tx_hash: str) -> SwapResult:
        """Wait until the swap has landed or failed, and return the outcome."""
        ...

    async def find_swap(self, client_ref: str) -> SwapResult | None:
        """Return the swap submitted under ``client_ref``, or None if there is none."""
        ...
