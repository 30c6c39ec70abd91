"""Simulated DEX venues: seeded prices, latency, slippage and injected failures.

Each ``SimulatedVenue`` implements the ``Venue`` protocol in-process. Its numbers
come from ``random.Random`` streams derived from (seed, venue name, purpose), so
the same seed and the same call sequence give the same quotes, latencies and
fills. A swap is recorded under its ``client_ref`` when submitted and executes at
a freshly drawn price once it lands (2-3 s later in the realistic profile).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.common.settings import Settings
from services.domain.tokens import Token, find_token
from services.venues.interface import Quote, SwapRequest, SwapResult, VenueError

BPS = Decimal(10_000)

# Reference USD prices; SOL comes from settings.
USD_PRICES: Mapping[str, Decimal] = {
    "USDC": Decimal("1"),
    "USDT": Decimal("1"),
    "BONK": Decimal("0.00002"),
    "JUP": Decimal("0.9"),
    "RAY": Decimal("2.5"),
}


class PriceSource(Protocol):
    """Where a venue's mid price comes from, before its spread and fee."""

    def reference_price(self, token_in: Token, token_out: Token, amount_in: Decimal) -> Decimal:
        """Return how many ``token_out`` one ``token_in`` is worth for this trade size."""
        ...


@dataclass(frozen=True, slots=True)
class UsdPriceTable:
    """A fixed USD price per token symbol; a pair's price is usd(in) / usd(out)."""

    usd: Mapping[str, Decimal]

    def reference_price(self, token_in: Token, token_out: Token, amount_in: Decimal) -> Decimal:
        """Return usd(token_in) / usd(token_out), ignoring the trade size."""
        try:
            return self.usd[token_in.symbol] / self.usd[token_out.symbol]
        except KeyError as exc:
            raise VenueError(
                "UNSUPPORTED_PAIR", f"no price for {exc.args[0]}", transient=False
            ) from None


def default_price_table(sol_usd: Decimal) -> UsdPriceTable:
    """Return the built-in USD price table with SOL at ``sol_usd``."""
    return UsdPriceTable({"SOL": sol_usd, **USD_PRICES})


@dataclass(frozen=True, slots=True)
class LatencyProfile:
    """Ranges (seconds, drawn uniformly) for each venue call and for landing."""

    quote_s: tuple[float, float]
    submit_s: tuple[float, float]
    land_s: tuple[float, float]


LATENCY_PROFILES: Mapping[str, LatencyProfile] = {
    "realistic": LatencyProfile(quote_s=(0.15, 0.25), submit_s=(0.03, 0.07), land_s=(2.0, 3.0)),
    "instant": LatencyProfile(quote_s=(0.0, 0.0), submit_s=(0.0, 0.0), land_s=(0.0, 0.0)),
}
INSTANT = LATENCY_PROFILES["instant"]


class FailureRates(BaseModel):
    """Probability per call of each injected transient failure (default: none).

    Quotes can fail with NETWORK_ERROR or POOL_BUSY; submissions with any of the
    three. A failed submission is not recorded: the swap did not happen.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    network_error: float = Field(default=0.0, ge=0.0, le=1.0)
    blockhash_expired: float = Field(default=0.0, ge=0.0, le=1.0)
    pool_busy: float = Field(default=0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _at_most_one(self) -> FailureRates:
        if self.network_error + self.blockhash_expired + self.pool_busy > 1.0:
            raise ValueError("failure probabilities must sum to at most 1")
        return self


NO_FAILURES = FailureRates()

_FAILURE_MESSAGES: Mapping[str, str] = {
    "NETWORK_ERROR": "connection to the RPC node was reset",
    "BLOCKHASH_EXPIRED": "transaction blockhash expired before it was processed",
    "POOL_BUSY": "pool account is write-locked by other transactions",
}


def swap_amount_out(
    amount_in: Decimal, price: Decimal, fee_bps: int, out_decimals: int
) -> tuple[Decimal, Decimal]:
    """Return (amount_out, fee): the fee in token_in units, amount_out rounded down."""
    fee = amount_in * fee_bps / BPS
    amount_out = ((amount_in - fee) * price).quantize(
        Decimal(1).scaleb(-out_decimals), rounding=ROUND_DOWN
    )
    return amount_out, fee


def tx_hash_for(venue: str, client_ref: str) -> str:
    """Return the deterministic, signature-like (base58, 64 bytes) hash of a swap."""
    return _base58(hashlib.sha512(f"{venue}:{client_ref}".encode()).digest())


_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _base58(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, rest = divmod(number, 58)
        digits.append(_B58_ALPHABET[rest])
    leading_zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * leading_zeros + "".join(reversed(digits))


def _stream(seed: int, venue: str, purpose: str) -> random.Random:
    # String seeds are hashed with SHA-512, so streams are stable across processes
    # (unlike hash(), which is randomised per interpreter).
    return random.Random(f"{seed}:{venue}:{purpose}")


@dataclass(slots=True)
class _Swap:
    request: SwapRequest
    token_in: Token
    token_out: Token
    land_at: float
    result: SwapResult


class SimulatedVenue:
    """One in-process DEX venue implementing the ``Venue`` protocol."""

    def __init__(
        self,
        name: str,
        *,
        fee_bps: int,
        spread: tuple[Decimal, Decimal],
        seed: int,
        prices: PriceSource,
        latency: LatencyProfile = INSTANT,
        failures: FailureRates = NO_FAILURES,
        clock: Callable[[], float] = time.monotonic,
        execution_drift: Decimal = Decimal("0.002"),
        walk_step: Decimal = Decimal("0.0005"),
    ) -> None:
        low, high = spread
        if not Decimal(0) < low <= high:
            raise ValueError(f"spread must satisfy 0 < low <= high, got {spread}")
        self.name = name
        self.fee_bps = fee_bps
        self.spread = spread
        self._prices = prices
        self._latency = latency
        self._failures = failures
        self._clock = clock
        # Separate streams so enabling failures or latency does not shift the prices.
        self._price_rng = _stream(seed, name, "price")
        self._latency_rng = _stream(seed, name, "latency")
        self._failure_rng = _stream(seed, name, "failure")
        self._by_ref: dict[str, _Swap] = {}
        self._by_tx: dict[str, _Swap] = {}
        # The price a swap lands at is the last quoted one, moved by at most this
        # fraction: a swap lands seconds after its quote, not at an unrelated price.
        self._execution_drift = execution_drift
        self._walk_step = walk_step
        self._last_factor: dict[tuple[str, str], Decimal] = {}

    async def quote(self, token_in: str, token_out: str, amount_in: Decimal) -> Quote:
        """Quote a swap at a freshly drawn price; raise ``VenueError`` when the venue cannot."""
        await self._delay(self._latency.quote_s)
        self._maybe_fail("quote")
        tin, tout = _pair(token_in, token_out, amount_in)
        amount_out, fee = swap_amount_out(
            amount_in, self._draw_price(tin, tout, amount_in), self.fee_bps, tout.decimals
        )
        return Quote(
            venue=self.name,
            token_in=tin.symbol,
            token_out=tout.symbol,
            amount_in=amount_in,
            amount_out=amount_out,
            fee=fee,
            fee_bps=self.fee_bps,
            price=amount_out / amount_in,
        )

    async def submit(self, request: SwapRequest) -> SwapResult:
        """Record the swap and return it ``pending``; a known ``client_ref`` returns the first."""
        await self._delay(self._latency.submit_s)
        existing = self._by_ref.get(request.client_ref)
        if existing is not None:
            self._settle_if_landed(existing)
            return existing.result
        self._maybe_fail("submit")
        tin, tout = _pair(request.token_in, request.token_out, request.amount_in)
        if request.min_amount_out < 0:
            raise VenueError("INVALID_AMOUNT", "min_amount_out must be >= 0", transient=False)
        tx_hash = tx_hash_for(self.name, request.client_ref)
        swap = _Swap(
            request=request,
            token_in=tin,
            token_out=tout,
            land_at=self._clock() + self._latency_rng.uniform(*self._latency.land_s),
            result=SwapResult(client_ref=request.client_ref, tx_hash=tx_hash, status="pending"),
        )
        self._by_ref[request.client_ref] = swap
        self._by_tx[tx_hash] = swap
        return swap.result

    async def confirm(self, tx_hash: str) -> SwapResult:
        """Wait until the swap has landed, execute it, and return the outcome."""
        swap = self._by_tx.get(tx_hash)
        if swap is None:
            raise VenueError("UNKNOWN_TX", f"no swap with tx hash {tx_hash}", transient=False)
        wait = swap.land_at - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)
        # The event loop may fire a timer a hair before the clock reads land_at;
        # having waited, treat the swap as landed rather than re-checking the clock.
        self._settle(swap)
        return swap.result

    async def find_swap(self, client_ref: str) -> SwapResult | None:
        """Return the swap submitted under ``client_ref`` (settled if landed), or None."""
        swap = self._by_ref.get(client_ref)
        if swap is None:
            return None
        self._settle_if_landed(swap)
        return swap.result

    def _settle_if_landed(self, swap: _Swap) -> None:
        if self._clock() >= swap.land_at:
            self._settle(swap)

    def _settle(self, swap: _Swap) -> None:
        # Settlement is lazy (first observation after landing) but happens once:
        # no await between the status check and the update.
        if swap.result.status != "pending":
            return
        request = swap.request
        price = self._execution_price(swap.token_in, swap.token_out, request.amount_in)
        amount_out, _ = swap_amount_out(
            request.amount_in, price, self.fee_bps, swap.token_out.decimals
        )
        if amount_out < request.min_amount_out:
            swap.result = swap.result.model_copy(
                update={
                    "status": "failed",
                    "error_code": "SLIPPAGE_EXCEEDED",
                    "error": (
                        f"pool gives {amount_out} {swap.token_out.symbol}, "
                        f"below min_amount_out {request.min_amount_out}"
                    ),
                }
            )
        else:
            swap.result = swap.result.model_copy(
                update={
                    "status": "confirmed",
                    "amount_out": amount_out,
                    "executed_price": amount_out / request.amount_in,
                }
            )

    def _draw_price(self, token_in: Token, token_out: Token, amount_in: Decimal) -> Decimal:
        # The venue's price for a pair walks inside its spread band, a small step per
        # quote, so two quotes a moment apart are close, as on a real pool.
        low, high = self.spread
        pair = (token_in.symbol, token_out.symbol)
        factor = self._last_factor.get(pair)
        if factor is None:
            factor = self._uniform(low, high)
        else:
            factor = min(high, max(low, factor + self._uniform(-self._walk_step, self._walk_step)))
        self._last_factor[pair] = factor
        return self._prices.reference_price(token_in, token_out, amount_in) * factor

    def _execution_price(self, token_in: Token, token_out: Token, amount_in: Decimal) -> Decimal:
        quoted = self._last_factor.get((token_in.symbol, token_out.symbol))
        if quoted is None:
            return self._draw_price(token_in, token_out, amount_in)
        drift = self._uniform(-self._execution_drift, self._execution_drift)
        return self._prices.reference_price(token_in, token_out, amount_in) * quoted * (1 + drift)

    def _uniform(self, low: Decimal, high: Decimal) -> Decimal:
        return Decimal(self._price_rng.randint(int(low * 1_000_000), int(high * 1_000_000))) / (
            1_000_000
        )

    async def _delay(self, bounds: tuple[float, float]) -> None:
        seconds = self._latency_rng.uniform(*bounds)
        if seconds > 0:
            await asyncio.sleep(seconds)

    def _maybe_fail(self, call: Literal["quote", "submit"]) -> None:
        rates = self._failures
        candidates = [("NETWORK_ERROR", rates.network_error), ("POOL_BUSY", rates.pool_busy)]
        if call == "submit":
            candidates.append(("BLOCKHASH_EXPIRED", rates.blockhash_expired))
        draw = self._failure_rng.random()
        threshold = 0.0
        for code, probability in candidates:
            threshold += probability
            if draw < threshold:
                raise VenueError(code, f"{self.name}: {_FAILURE_MESSAGES[code]}", transient=True)


def _pair(token_in: str, token_out: str, amount_in: Decimal) -> tuple[Token, Token]:
    tin, tout = find_token(token_in), find_token(token_out)
    if tin is None or tout is None:
        unknown = token_in if tin is None else token_out
        raise VenueError("UNKNOWN_TOKEN", f"unknown token {unknown}", transient=False)
    if tin == tout:
        raise VenueError("INVALID_PAIR", "token_in and token_out must differ", transient=False)
    if amount_in <= 0:
        raise VenueError("INVALID_AMOUNT", "amount_in must be > 0", transient=False)
    return tin, tout


def default_venues(
    settings: Settings,
    *,
    failures: Mapping[str, FailureRates] | None = None,
    prices: PriceSource | None = None,
) -> list[SimulatedVenue]:
    """Return the two simulated venues, Raydium and Meteora, configured from settings."""
    failures = failures or {}
    prices = prices or default_price_table(settings.venue_base_price_sol_usdc)
    latency = LATENCY_PROFILES[settings.venue_profile]
    specs = (
        ("raydium", 30, (Decimal("0.98"), Decimal("1.02"))),
        ("meteora", 20, (Decimal("0.97"), Decimal("1.02"))),
    )
    return [
        SimulatedVenue(
            name,
            fee_bps=fee_bps,
            spread=spread,
            seed=settings.venue_seed,
            prices=prices,
            latency=latency,
            failures=failures.get(name, NO_FAILURES),
        )
        for name, fee_bps, spread in specs
    ]
