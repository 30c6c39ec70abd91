"""Simulated DEX venues: AMM pools, latency, slippage and injected failures.

Each ``SimulatedVenue`` implements the ``Venue`` protocol in-process over one pool
per token pair (``pools.py``: Raydium constant product or Meteora DLMM). Its
random numbers come from ``random.Random`` streams derived from (seed, venue
name, purpose), so the same seed and the same call sequence give the same quotes,
latencies and fills. A swap is recorded under its ``client_ref`` when submitted
and executes against the pool as it is when the swap lands (2-3 s later in the
realistic profile): the pool's random walk and other swaps in between are the
slippage. A venue can also list a new token and open its pool (``launch``),
deepen a pool (``add_liquidity``) and describe every pool (``pools``).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.settings import Settings
from adapters.venues.interface import (
    LedgerEntry,
    PoolInfo,
    Quote,
    SwapRequest,
    SwapResult,
    VenueError,
)
from domain.pricing import market_of
from domain.tokens import LAUNCH_DECIMALS, Token, find_token
from services.venues.pools import (
    ConstantProductSpec,
    DlmmPool,
    DlmmSpec,
    InsufficientLiquidity,
    Pool,
    PoolQuote,
    PoolSpec,
    PriceWalk,
    build_pool,
    build_pools,
    pair_key,
    value_usd,
    with_price_factor,
)

BPS = Decimal(10_000)

# Reference USD prices; SOL comes from settings.
USD_PRICES: Mapping[str, Decimal] = {
    "USDC": Decimal("1"),
    "USDT": Decimal("1"),
    "BONK": Decimal("0.00002"),
    "JUP": Decimal("0.9"),
    "RAY": Decimal("2.5"),
}


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

    @classmethod
    def evenly(cls, rate: float) -> FailureRates:
        """Return rates under which a quote or a submission fails with probability ``rate``.

        The failures are NETWORK_ERROR and POOL_BUSY in equal parts.
        """
        return cls(network_error=rate / 2, pool_busy=rate / 2)


NO_FAILURES = FailureRates()
TRANSIENT_CODES = frozenset({"NETWORK_ERROR", "BLOCKHASH_EXPIRED", "POOL_BUSY"})
DEFAULT_BAND = (Decimal("0.98"), Decimal("1.02"))

_FAILURE_MESSAGES: Mapping[str, str] = {
    "NETWORK_ERROR": "connection to the RPC node was reset",
    "BLOCKHASH_EXPIRED": "transaction blockhash expired before it was processed",
    "POOL_BUSY": "pool account is write-locked by other transactions",
}

Call = Literal["quote", "submit", "confirm"]

# A launched token's symbol: a letter, then 1 to 9 letters or digits (kept upper case).
SYMBOL_PATTERN = r"^[A-Za-z][A-Za-z0-9]{1,9}$"
# Without a price, a launched token is worth this much SOL (in any quote token).
DEFAULT_LAUNCH_PRICE_SOL = Decimal("0.0001")
# Pool snapshots give prices to this many significant digits: the rounding of
# reserves to token decimals (a deposit, say) must not read as a price move.
PRICE_DIGITS = 10
_PRICE_CONTEXT = Context(prec=PRICE_DIGITS, rounding=ROUND_HALF_EVEN)
CENT = Decimal("0.01")


def significant(value: Decimal) -> Decimal:
    """Return ``value`` rounded to ``PRICE_DIGITS`` significant digits, all of them shown."""
    rounded = _PRICE_CONTEXT.plus(value)
    return rounded.quantize(Decimal(1).scaleb(min(0, rounded.adjusted() - PRICE_DIGITS + 1)))


def launched_mint(symbol: str) -> str:
    """Return the deterministic, address-like (base58, 32 bytes) mint of a launched token."""
    return _base58(hashlib.sha256(f"launch:{symbol.upper()}".encode()).digest())


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


def effective_fee_bps(fee: Decimal, amount_in: Decimal) -> int:
    """Return ``fee / amount_in`` in whole basis points, rounded half up."""
    return int((fee / amount_in * BPS).to_integral_value(ROUND_HALF_UP))


class SimulatedVenue:
    """One in-process DEX venue implementing the ``Venue`` protocol over AMM pools.

    ``pools`` says how its pools are built (constant product or DLMM); without it
    the venue runs constant-product pools with fee ``fee_bps``. ``spread`` is the
    band, relative to the reference price, inside which the pools' random walk
    keeps their price; ``walk_bps`` is the walk's largest step.
    """

    def __init__(
        self,
        name: str,
        *,
        seed: int,
        prices: UsdPriceTable,
        pools: PoolSpec | None = None,
        fee_bps: int | None = None,
        spread: tuple[Decimal, Decimal] = DEFAULT_BAND,
        walk_bps: Decimal = Decimal(2),
        latency: LatencyProfile = INSTANT,
        failures: FailureRates = NO_FAILURES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        low, high = spread
        if not Decimal(0) < low <= 1 <= high:
            raise ValueError(f"spread must satisfy 0 < low <= 1 <= high, got {spread}")
        if pools is not None and fee_bps is not None:
            raise ValueError("give either pools or fee_bps, not both")
        spec = pools if pools is not None else ConstantProductSpec(fee_bps=fee_bps or 25)
        self.name = name
        self.fee_bps = spec.fee_bps if isinstance(spec, ConstantProductSpec) else spec.base_fee_bps
        self.spread = spread
        self.pool_spec = spec
        self._pools: dict[tuple[str, str], Pool] = build_pools(spec, prices.usd)
        self._reference = {(x, y): prices.usd[x] / prices.usd[y] for x, y in self._pools}
        # USD reference prices, launched tokens included (launch price x quote's USD price).
        self._usd: dict[str, Decimal] = dict(prices.usd)
        self._launched: dict[str, Token] = {}
        self._launched_by_mint: dict[str, Token] = {}
        # The part of a bin a DLMM pool's drift could not move yet, per pool.
        self._bin_carry: dict[tuple[str, str], Decimal] = {}
        self._walk = PriceWalk(step_bps=walk_bps, band=spread)
        self._latency = latency
        self._failures = failures
        self._clock = clock
        # Separate streams so enabling failures or latency does not shift the prices.
        self._price_rng = _stream(seed, name, "price")
        self._latency_rng = _stream(seed, name, "latency")
        self._failure_rng = _stream(seed, name, "failure")
        self._scripted: dict[Call, deque[str]] = {
            "quote": deque(),
            "submit": deque(),
            "confirm": deque(),
        }
        self._by_ref: dict[str, _Swap] = {}
        self._by_tx: dict[str, _Swap] = {}

    async def quote(self, token_in: str, token_out: str, amount_in: Decimal) -> Quote:
        """Quote a swap on the pool after one step of its walk; raise ``VenueError`` if unable."""
        await self._delay(self._latency.quote_s)
        self._maybe_fail("quote")
        tin, tout = self._pair(token_in, token_out, amount_in)
        key = self._walk_pool(tin, tout)
        quoted = self._pool_quote(key, tin, amount_in)
        return Quote(
            venue=self.name,
            token_in=tin.symbol,
            token_out=tout.symbol,
            amount_in=amount_in,
            amount_out=quoted.amount_out,
            fee=quoted.fee,
            fee_bps=effective_fee_bps(quoted.fee, amount_in),
            price=quoted.amount_out / amount_in,
        )

    def preview(self, token_in: str, token_out: str, amount_in: Decimal) -> PoolQuote:
        """Return what the pool would give right now (price impact, bins), moving nothing."""
        tin, tout = self._pair(token_in, token_out, amount_in)
        return self._pool_quote(self._key(tin, tout), tin, amount_in)

    def pool(self, token_a: str, token_b: str) -> Pool:
        """Return the current state of the pool trading ``token_a`` and ``token_b``."""
        tin, tout = self._pair(token_a, token_b, Decimal(1))
        return self._pools[self._key(tin, tout)]

    async def submit(self, request: SwapRequest) -> SwapResult:
        """Record the swap and return it ``pending``; a known ``client_ref`` returns the first."""
        await self._delay(self._latency.submit_s)
        existing = self._by_ref.get(request.client_ref)
        if existing is not None:
            self._settle_if_landed(existing)
            return existing.result
        self._maybe_fail("submit")
        tin, tout = self._pair(request.token_in, request.token_out, request.amount_in)
        self._key(tin, tout)
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

    def ledger(self) -> tuple[LedgerEntry, ...]:
        """Return every swap submitted here, oldest first.

        A swap settles at its first observation after it lands; the ledger is one, as
        ``find_swap`` is, so a swap that landed unobserved shows as it landed.
        """
        entries = []
        for swap in self._by_ref.values():
            self._settle_if_landed(swap)
            entries.append(
                LedgerEntry(
                    **swap.result.model_dump(),
                    venue=self.name,
                    token_in=swap.token_in.symbol,
                    token_out=swap.token_out.symbol,
                    amount_in=swap.request.amount_in,
                    min_amount_out=swap.request.min_amount_out,
                )
            )
        return tuple(entries)

    def script_failures(self, call: Call, codes: Sequence[str]) -> None:
        """Make the next calls of kind ``call`` fail with ``codes``, one each, in order.

        Quotes and submissions raise ``VenueError`` (transient for NETWORK_ERROR,
        BLOCKHASH_EXPIRED and POOL_BUSY); for ``confirm`` the next swaps to land
        fail with that error code and leave the pool untouched.
        """
        if call not in self._scripted:
            raise ValueError(f"call must be quote, submit or confirm, got {call!r}")
        self._scripted[call].extend(codes)

    def move_price(
        self, token_in: str, token_out: str, fraction: Decimal, *, market: bool = False
    ) -> None:
        """Move the pair's pool at once so one ``token_in`` buys ``1 + fraction`` times as much.

        A DLMM pool moves by the nearest whole number of bins. Alone, the move is a
        local dislocation that the walk's arbitrage pulls back into the band around
        the reference price; with ``market`` the wider market moved too, so the
        reference moves with the pool and the new price holds.
        """
        if fraction <= -1:
            raise ValueError(f"fraction must be > -1, got {fraction}")
        tin, tout = self._pair(token_in, token_out, Decimal(1))
        key = self._key(tin, tout)
        # The pool's price is X in Y; token_in may be either side.
        factor = 1 + fraction if tin.symbol == key[0] else 1 / (1 + fraction)
        self._pools[key] = with_price_factor(self._pools[key], factor)
        if market:
            self._reference[key] *= factor

    def drift(self, token_in: str, token_out: str, fraction: Decimal) -> None:
        """Move the pair's pool as ``move_price`` does, as other traders would, a little at a time.

        A DLMM pool moves whole bins only: the part of a bin a step could not move
        is kept and added to the next step, so steps smaller than a bin add up.
        """
        if fraction <= -1:
            raise ValueError(f"fraction must be > -1, got {fraction}")
        tin, tout = self._pair(token_in, token_out, Decimal(1))
        key = self._key(tin, tout)
        factor = 1 + fraction if tin.symbol == key[0] else 1 / (1 + fraction)
        pool = self._pools[key]
        if not isinstance(pool, DlmmPool):
            self._pools[key] = with_price_factor(pool, factor)
            return
        growth = 1 + Decimal(pool.bin_step_bps) / BPS
        exact = factor.ln() / growth.ln() + self._bin_carry.get(key, Decimal(0))
        bins = int(exact.to_integral_value(ROUND_HALF_EVEN))
        self._bin_carry[key] = exact - bins
        if bins:
            self._pools[key] = pool.shifted(bins)

    def launch(
        self, symbol: str, *, quote: str = "SOL", price: Decimal, liquidity_usd: Decimal
    ) -> PoolInfo:
        """List a new token and open its pool against ``quote``; return the pool.

        The pool is of the venue's kind, priced at ``price`` (``quote`` per token)
        and holding ``liquidity_usd``. The token gets a mint derived from its symbol
        and ``LAUNCH_DECIMALS``. A listed symbol or an existing pool is refused
        (``TOKEN_EXISTS``, ``POOL_EXISTS``). No random stream is drawn from.
        """
        symbol = symbol.upper()
        if not re.fullmatch(SYMBOL_PATTERN, symbol):
            raise VenueError(
                "INVALID_SYMBOL",
                f"symbol {symbol!r} must be a letter then 1 to 9 letters or digits",
                transient=False,
            )
        if find_token(symbol) is not None:
            raise VenueError("TOKEN_EXISTS", f"{symbol} is a listed token", transient=False)
        quote_token = self._launch_quote(quote)
        if price <= 0:
            raise VenueError("INVALID_PRICE", "price must be > 0", transient=False)
        if liquidity_usd <= 0:
            raise VenueError("INVALID_LIQUIDITY", "liquidity_usd must be > 0", transient=False)
        token = self._launched.get(symbol) or Token(symbol, launched_mint(symbol), LAUNCH_DECIMALS)
        key = pair_key(symbol, quote_token.symbol)
        if key in self._pools:
            raise VenueError(
                "POOL_EXISTS",
                f"{self.name} already has a {symbol}/{quote_token.symbol} pool",
                transient=False,
            )
        quote_usd = self._usd[quote_token.symbol]
        usd = {symbol: price * quote_usd, quote_token.symbol: quote_usd}
        spec = replace(self.pool_spec, depth_usd=liquidity_usd)
        x, y = (token, quote_token) if key[0] == symbol else (quote_token, token)
        try:
            pool = build_pool(spec, x, y, usd)
        except ValueError as exc:
            raise VenueError(
                "INVALID_PRICE", f"no {symbol} pool at that price: {exc}", transient=False
            ) from None
        self._launched[symbol] = token
        self._launched_by_mint[token.mint] = token
        # A second pool of the same token keeps the USD price of its first launch.
        self._usd.setdefault(symbol, usd[symbol])
        self._pools[key] = pool
        self._reference[key] = usd[key[0]] / usd[key[1]]
        return self._info(key)

    def default_launch_price(self, quote: str = "SOL") -> Decimal:
        """Return the price, in ``quote`` per token, of a launch that names none."""
        token = self._launch_quote(quote)
        return DEFAULT_LAUNCH_PRICE_SOL * self._usd["SOL"] / self._usd[token.symbol]

    def _launch_quote(self, quote: str) -> Token:
        # Only a listed token can quote a launch: the market never quotes in a launched one.
        token = find_token(quote)
        if token is None or token.symbol not in self._usd:
            code = "INVALID_QUOTE" if self._find(quote) is not None else "UNKNOWN_TOKEN"
            raise VenueError(code, f"{quote} cannot quote a launch", transient=False)
        return token

    def add_liquidity(self, token_a: str, token_b: str, usd: Decimal) -> PoolInfo:
        """Deepen the pair's pool by ``usd`` at its current price; return the pool."""
        if usd <= 0:
            raise VenueError("INVALID_AMOUNT", "usd must be > 0", transient=False)
        tin, tout = self._pair(token_a, token_b, Decimal(1))
        key = self._key(tin, tout)
        pool = self._pools[key]
        value = value_usd(pool, self._usd[key[0]], self._usd[key[1]])
        self._pools[key] = pool.deepened((value + usd) / value)
        return self._info(key)

    def pools(self) -> tuple[PoolInfo, ...]:
        """Return every pool of the venue as it is now, by pool id."""
        return tuple(self._info(key) for key in sorted(self._pools))

    def _info(self, key: tuple[str, str]) -> PoolInfo:
        x, y = key
        pool = self._pools[key]
        market = market_of(x, y)
        # The pool's spot is Y per X; the market's price is quote per base.
        price = pool.spot_price if market.base == x else 1 / pool.spot_price
        base = self._find(market.base)
        assert base is not None
        return PoolInfo(
            venue=self.name,
            pool_id=f"{self.name}:{x}-{y}",
            base=market.base,
            quote=market.quote,
            price=significant(price),
            liquidity_usd=value_usd(pool, self._usd[x], self._usd[y]).quantize(CENT),
            launched=market.base in self._launched,
            base_mint=base.mint,
            base_decimals=base.decimals,
        )

    def _find(self, symbol_or_mint: str) -> Token | None:
        return (
            find_token(symbol_or_mint)
            or self._launched.get(symbol_or_mint.upper())
            or self._launched_by_mint.get(symbol_or_mint)
        )

    def _pair(self, token_in: str, token_out: str, amount_in: Decimal) -> tuple[Token, Token]:
        tin, tout = self._find(token_in), self._find(token_out)
        if tin is None or tout is None:
            unknown = token_in if tin is None else token_out
            raise VenueError("UNKNOWN_TOKEN", f"unknown token {unknown}", transient=False)
        if tin == tout:
            raise VenueError("INVALID_PAIR", "token_in and token_out must differ", transient=False)
        if amount_in <= 0:
            raise VenueError("INVALID_AMOUNT", "amount_in must be > 0", transient=False)
        return tin, tout

    def _settle_if_landed(self, swap: _Swap) -> None:
        if self._clock() >= swap.land_at:
            self._settle(swap)

    def _settle(self, swap: _Swap) -> None:
        # Settlement is lazy (first observation after landing) but happens once:
        # no await between the status check and the update.
        if swap.result.status != "pending":
            return
        request = swap.request
        scripted = self._scripted["confirm"]
        if scripted:
            code = scripted.popleft()
            self._fail(swap, code, _FAILURE_MESSAGES.get(code, "scripted failure"))
            return
        key = self._walk_pool(swap.token_in, swap.token_out)
        try:
            quoted = self._pool_quote(key, swap.token_in, request.amount_in)
        except VenueError as exc:
            self._fail(swap, exc.code, str(exc))
            return
        if quoted.amount_out < request.min_amount_out:
            self._fail(
                swap,
                "SLIPPAGE_EXCEEDED",
                f"pool gives {quoted.amount_out} {swap.token_out.symbol}, "
                f"below min_amount_out {request.min_amount_out}",
            )
            return
        pool = self._pools[key]
        self._pools[key] = pool.apply_swap(request.amount_in, _direction(key, swap.token_in))
        swap.result = swap.result.model_copy(
            update={
                "status": "confirmed",
                "amount_out": quoted.amount_out,
                "executed_price": quoted.amount_out / request.amount_in,
            }
        )

    @staticmethod
    def _fail(swap: _Swap, code: str, message: str) -> None:
        swap.result = swap.result.model_copy(
            update={"status": "failed", "error_code": code, "error": message}
        )

    def _key(self, token_in: Token, token_out: Token) -> tuple[str, str]:
        key = pair_key(token_in.symbol, token_out.symbol)
        if key not in self._pools:
            raise VenueError(
                "UNSUPPORTED_PAIR",
                f"{self.name} has no {token_in.symbol}/{token_out.symbol} pool",
                transient=False,
            )
        return key

    def _walk_pool(self, token_in: Token, token_out: Token) -> tuple[str, str]:
        # One step per observation (quote or landing) rather than per second, so the
        # same seed and call sequence give the same prices whatever the wall clock.
        key = self._key(token_in, token_out)
        self._pools[key] = self._walk.step(self._pools[key], self._reference[key], self._price_rng)
        return key

    def _pool_quote(self, key: tuple[str, str], token_in: Token, amount_in: Decimal) -> PoolQuote:
        try:
            return self._pools[key].quote(amount_in, _direction(key, token_in))
        except InsufficientLiquidity as exc:
            raise VenueError("INSUFFICIENT_LIQUIDITY", str(exc), transient=False) from None

    async def _delay(self, bounds: tuple[float, float]) -> None:
        seconds = self._latency_rng.uniform(*bounds)
        if seconds > 0:
            await asyncio.sleep(seconds)

    def _maybe_fail(self, call: Literal["quote", "submit"]) -> None:
        scripted = self._scripted[call]
        if scripted:
            code = scripted.popleft()
            message = _FAILURE_MESSAGES.get(code, "scripted failure")
            raise VenueError(code, f"{self.name}: {message}", transient=code in TRANSIENT_CODES)
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


def _direction(key: tuple[str, str], token_in: Token) -> Literal["x_to_y", "y_to_x"]:
    return "x_to_y" if token_in.symbol == key[0] else "y_to_x"


def default_venues(
    settings: Settings,
    *,
    failures: Mapping[str, FailureRates] | None = None,
    prices: UsdPriceTable | None = None,
) -> list[SimulatedVenue]:
    """Return the two simulated venues, Raydium (constant product) and Meteora (DLMM)."""
    failures = failures or {}
    prices = prices or default_price_table(settings.venue_base_price_sol_usdc)
    specs: tuple[tuple[str, PoolSpec], ...] = (
        (
            "raydium",
            ConstantProductSpec(
                fee_bps=settings.venue_raydium_fee_bps, depth_usd=settings.venue_raydium_depth_usd
            ),
        ),
        (
            "meteora",
            DlmmSpec(
                bin_step_bps=settings.venue_meteora_bin_step_bps,
                base_fee_bps=settings.venue_meteora_base_fee_bps,
                depth_usd=settings.venue_meteora_depth_usd,
                bins_per_side=settings.venue_meteora_bins_per_side,
            ),
        ),
    )
    return [
        SimulatedVenue(
            name,
            seed=settings.venue_seed,
            prices=prices,
            pools=spec,
            walk_bps=settings.venue_walk_bps,
            latency=LATENCY_PROFILES[settings.venue_profile],
            failures=failures.get(name, FailureRates.evenly(settings.venue_failure_rate)),
        )
        for name, spec in specs
    ]
