"""AMM pool math: Raydium constant product and Meteora DLMM bins, pure and in Decimal.

Every pool is a frozen value: ``quote`` says what a swap would give, ``apply_swap``
returns the pool as it is after that swap. Amounts are in token units (not base
units) but are rounded to the tokens' decimals the way the programs round base
units: what the pool pays out is rounded down, what it charges is rounded up, so
rounding never favours the trader. See ``docs/venues.md`` for worked examples.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from itertools import combinations
from typing import Literal

from domain.tokens import TOKENS, Token

BPS = Decimal(10_000)
ONE = Decimal(1)
# Raydium's fee tiers: AMM v4 charges 25 bps; CPMM pools choose one of these.
RAYDIUM_AMM_V4_FEE_BPS = 25
RAYDIUM_CPMM_FEE_TIERS_BPS = (25, 100, 200, 400)
# Meteora counts the volatility accumulator in units of 1/10^4 bin.
VOLATILITY_PER_BIN = 10_000

Direction = Literal["x_to_y", "y_to_x"]


class InsufficientLiquidity(ValueError):
    """The pool's bins run out before the whole input is swapped."""


@dataclass(frozen=True, slots=True)
class PoolQuote:
    """What a swap of ``amount_in`` on a pool gives, before it is applied.

    ``fee`` is in units of the input token. ``price_impact`` is
    ``1 - effective / spot`` where effective = amount_out / (amount_in - fee): the
    cost of the curve alone, the fee being reported apart.
    """

    pool_id: str
    amount_in: Decimal
    amount_out: Decimal
    fee: Decimal
    price_impact: Decimal
    bins_crossed: int = 0


def round_down(amount: Decimal, token: Token) -> Decimal:
    """Return ``amount`` rounded down to ``token``'s decimals."""
    return amount.quantize(token.quantum, rounding=ROUND_DOWN)


def round_up(amount: Decimal, token: Token) -> Decimal:
    """Return ``amount`` rounded up to ``token``'s decimals."""
    return amount.quantize(token.quantum, rounding=ROUND_CEILING)


def _impact(amount_out: Decimal, net_in: Decimal, spot: Decimal) -> Decimal:
    if net_in <= 0:
        return Decimal(0)
    return 1 - (amount_out / net_in) / spot


# Constant product (Raydium AMM v4 / CPMM) ---------------------------------------


@dataclass(frozen=True, slots=True)
class ConstantProductPool:
    """A Raydium x·y = k pool; ``spot_price`` is Y per X; the fee stays in the pool."""

    pool_id: str
    token_x: Token
    token_y: Token
    reserve_x: Decimal
    reserve_y: Decimal
    fee_bps: int = RAYDIUM_AMM_V4_FEE_BPS

    def __post_init__(self) -> None:
        if self.reserve_x <= 0 or self.reserve_y <= 0:
            raise ValueError("reserves must be > 0")
        if not 0 <= self.fee_bps < BPS:
            raise ValueError(f"fee_bps must be within 0..9999, got {self.fee_bps}")

    @property
    def spot_price(self) -> Decimal:
        """Return the marginal price of X in Y (reserve_y / reserve_x)."""
        return self.reserve_y / self.reserve_x

    def quote(self, amount_in: Decimal, direction: Direction) -> PoolQuote:
        """Return the output of swapping ``amount_in``: fee off the input, then x·y = k."""
        tin, tout, r_in, r_out = self._sides(direction)
        fee = round_up(amount_in * self.fee_bps / BPS, tin)
        net_in = amount_in - fee
        amount_out = round_down(r_out * net_in / (r_in + net_in), tout)
        return PoolQuote(
            pool_id=self.pool_id,
            amount_in=amount_in,
            amount_out=amount_out,
            fee=fee,
            price_impact=_impact(amount_out, net_in, r_out / r_in),
        )

    def apply_swap(self, amount_in: Decimal, direction: Direction) -> ConstantProductPool:
        """Return the pool after the swap: the whole input (fee included) in, the output out."""
        amount_out = self.quote(amount_in, direction).amount_out
        if direction == "x_to_y":
            return replace(
                self, reserve_x=self.reserve_x + amount_in, reserve_y=self.reserve_y - amount_out
            )
        return replace(
            self, reserve_x=self.reserve_x - amount_out, reserve_y=self.reserve_y + amount_in
        )

    def with_price_factor(self, factor: Decimal) -> ConstantProductPool:
        """Return the pool with its spot price times ``factor`` and k (depth) unchanged.

        x' = x / √f and y' = y · √f keep x'·y' = x·y while y'/x' = f · y/x: the
        state an arbitrageur leaves behind when the outside market moved by f.
        """
        if factor <= 0:
            raise ValueError(f"factor must be > 0, got {factor}")
        root = factor.sqrt()
        return replace(
            self,
            reserve_x=round_down(self.reserve_x / root, self.token_x),
            reserve_y=round_down(self.reserve_y * root, self.token_y),
        )

    def deepened(self, factor: Decimal) -> ConstantProductPool:
        """Return the pool with both reserves times ``factor`` (> 1): more depth, same price."""
        if factor <= 0:
            raise ValueError(f"factor must be > 0, got {factor}")
        return replace(
            self,
            reserve_x=round_down(self.reserve_x * factor, self.token_x),
            reserve_y=round_down(self.reserve_y * factor, self.token_y),
        )

    def _sides(self, direction: Direction) -> tuple[Token, Token, Decimal, Decimal]:
        if direction == "x_to_y":
            return self.token_x, self.token_y, self.reserve_x, self.reserve_y
        return self.token_y, self.token_x, self.reserve_y, self.reserve_x


# DLMM (Meteora) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bin:
    """The reserves of one DLMM price bin."""

    reserve_x: Decimal = Decimal(0)
    reserve_y: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class DlmmFeeParams:
    """Meteora's dynamic-fee parameters (simplified: decay per swap, not per second).

    variable fee rate = variable_fee_control · (volatility_accumulator · bin_step)² / 10²⁰,
    Meteora's formula (it divides by 10¹¹ into units of 10⁻⁹). A swap starts from
    volatility_reference = accumulator · decay_bps / 10⁴ and adds 10⁴ per bin crossed.
    """

    variable_fee_control: int = 40_000
    decay_bps: int = 5_000
    max_volatility_accumulator: int = 350_000


@dataclass(frozen=True, slots=True)
class DlmmPool:
    """A Meteora DLMM pool: bins ``lowest_id ..`` of price (1 + bin_step/10⁴)^id Y per X.

    Bins below the active one hold only Y, bins above only X, the active one both.
    A swap consumes the active bin's output reserve at its fixed price, then moves
    the active id (down when X is sold, up when X is bought) until the input is used.
    """

    pool_id: str
    token_x: Token
    token_y: Token
    bin_step_bps: int
    base_fee_bps: int
    lowest_id: int
    bins: tuple[Bin, ...]
    active_id: int
    volatility_accumulator: int = 0
    fees: DlmmFeeParams = DlmmFeeParams()

    def __post_init__(self) -> None:
        if self.bin_step_bps <= 0:
            raise ValueError(f"bin_step_bps must be > 0, got {self.bin_step_bps}")
        if not self.lowest_id <= self.active_id < self.lowest_id + len(self.bins):
            raise ValueError("active_id must name one of the bins")

    def bin_price(self, bin_id: int) -> Decimal:
        """Return the price of X in Y in bin ``bin_id``."""
        return (ONE + Decimal(self.bin_step_bps) / BPS) ** bin_id

    @property
    def spot_price(self) -> Decimal:
        """Return the active bin's price of X in Y."""
        return self.bin_price(self.active_id)

    def bin(self, bin_id: int) -> Bin:
        """Return bin ``bin_id`` (empty outside the pool's range)."""
        index = bin_id - self.lowest_id
        return self.bins[index] if 0 <= index < len(self.bins) else Bin()

    def fee_rate(self, volatility_accumulator: int) -> Decimal:
        """Return base + variable fee as a fraction of the input, for an accumulator value."""
        variable = (
            Decimal(self.fees.variable_fee_control)
            * (Decimal(volatility_accumulator) * self.bin_step_bps) ** 2
            / Decimal(10) ** 20
        )
        return Decimal(self.base_fee_bps) / BPS + variable

    def quote(self, amount_in: Decimal, direction: Direction) -> PoolQuote:
        """Return the output of swapping ``amount_in`` across as many bins as it takes."""
        return self._swap(amount_in, direction)[0]

    def apply_swap(self, amount_in: Decimal, direction: Direction) -> DlmmPool:
        """Return the pool after the swap: bins moved, active id and accumulator updated."""
        return self._swap(amount_in, direction)[1]

    def shifted(self, bins: int) -> DlmmPool:
        """Return the pool with its whole liquidity shape moved ``bins`` bins up (or down).

        Token amounts per bin stay; only their prices change, as when the outside
        market moved and liquidity providers re-centred: depth stays the same.
        """
        return replace(self, lowest_id=self.lowest_id + bins, active_id=self.active_id + bins)

    def deepened(self, factor: Decimal) -> DlmmPool:
        """Return the pool with every bin's reserves times ``factor``: same shape and price."""
        if factor <= 0:
            raise ValueError(f"factor must be > 0, got {factor}")
        bins = tuple(
            Bin(
                round_down(b.reserve_x * factor, self.token_x),
                round_down(b.reserve_y * factor, self.token_y),
            )
            for b in self.bins
        )
        return replace(self, bins=bins)

    def _swap(self, amount_in: Decimal, direction: Direction) -> tuple[PoolQuote, DlmmPool]:
        selling_x = direction == "x_to_y"
        tin, tout = (self.token_x, self.token_y) if selling_x else (self.token_y, self.token_x)
        step = -1 if selling_x else 1
        spot = self.spot_price if selling_x else 1 / self.spot_price
        reference = self.volatility_accumulator * self.fees.decay_bps // 10_000
        bins = list(self.bins)
        active, remaining = self.active_id, amount_in
        accumulator = min(reference, self.fees.max_volatility_accumulator)
        total_out = total_fee = Decimal(0)
        while remaining > 0:
            index = active - self.lowest_id
            if not 0 <= index < len(bins):
                raise InsufficientLiquidity(
                    f"{self.pool_id}: bins exhausted with {remaining} {tin.symbol} left to swap"
                )
            current = bins[index]
            available = current.reserve_y if selling_x else current.reserve_x
            if available == 0:
                active += step
                continue
            crossed = abs(active - self.active_id)
            accumulator = min(
                reference + crossed * VOLATILITY_PER_BIN, self.fees.max_volatility_accumulator
            )
            rate = self.fee_rate(accumulator)
            price = self.bin_price(active)
            # Input (fee excluded) that takes the whole output reserve of this bin.
            capacity = round_up(available / price if selling_x else available * price, tin)
            capacity_fee = round_up(capacity * rate / (1 - rate), tin)
            if remaining >= capacity + capacity_fee:
                net_in, fee, out = capacity, capacity_fee, available
            else:
                fee = round_up(remaining * rate, tin)
                net_in = remaining - fee
                out = min(
                    round_down(net_in * price if selling_x else net_in / price, tout), available
                )
            bins[index] = (
                Bin(current.reserve_x + net_in, current.reserve_y - out)
                if selling_x
                else Bin(current.reserve_x - out, current.reserve_y + net_in)
            )
            total_out += out
            total_fee += fee
            remaining -= net_in + fee
            if remaining > 0:
                active += step
        quote = PoolQuote(
            pool_id=self.pool_id,
            amount_in=amount_in,
            amount_out=total_out,
            fee=total_fee,
            price_impact=_impact(total_out, amount_in - total_fee, spot),
            bins_crossed=abs(active - self.active_id),
        )
        after = replace(
            self, bins=tuple(bins), active_id=active, volatility_accumulator=accumulator
        )
        return quote, after


# Building pools from a USD price table ---------------------------------------

Pool = ConstantProductPool | DlmmPool


@dataclass(frozen=True, slots=True)
class ConstantProductSpec:
    """How to build a venue's Raydium pools: fee tier and USD value locked per pool."""

    fee_bps: int = RAYDIUM_AMM_V4_FEE_BPS
    depth_usd: Decimal = Decimal(10_000_000)


@dataclass(frozen=True, slots=True)
class DlmmSpec:
    """How to build a venue's Meteora pools: bins, fees and USD value spread over the bins."""

    bin_step_bps: int = 10
    base_fee_bps: int = 10
    depth_usd: Decimal = Decimal(1_000_000)
    bins_per_side: int = 50
    fees: DlmmFeeParams = DlmmFeeParams()


PoolSpec = ConstantProductSpec | DlmmSpec


def pair_key(a: str, b: str) -> tuple[str, str]:
    """Return the (X, Y) symbols of the pool trading ``a`` and ``b``, in token-list order.

    Tokens that are not in the list (launched ones) come after the listed ones, by
    symbol: SOL and a launched token make the pool SOL/<token>.
    """
    first, second = sorted((a, b), key=_list_rank)
    return first, second


def _list_rank(symbol: str) -> tuple[int, str]:
    order = list(TOKENS)
    return (order.index(symbol) if symbol in TOKENS else len(order), symbol)


def build_pool(spec: PoolSpec, x: Token, y: Token, usd: Mapping[str, Decimal]) -> Pool:
    """Return a pool of ``x``/``y`` priced at usd(x)/usd(y) holding ``spec.depth_usd``."""
    pool_id = f"{x.symbol}-{y.symbol}"
    usd_x, usd_y = usd[x.symbol], usd[y.symbol]
    if isinstance(spec, ConstantProductSpec):
        half = spec.depth_usd / 2
        return ConstantProductPool(
            pool_id=pool_id,
            token_x=x,
            token_y=y,
            reserve_x=round_down(half / usd_x, x),
            reserve_y=round_down(half / usd_y, y),
            fee_bps=spec.fee_bps,
        )
    growth = ONE + Decimal(spec.bin_step_bps) / BPS
    active = int(((usd_x / usd_y).ln() / growth.ln()).to_integral_value(ROUND_HALF_EVEN))
    per_bin = spec.depth_usd / (2 * spec.bins_per_side + 1)
    bins = tuple(
        Bin(reserve_y=round_down(per_bin / usd_y, y))
        if offset < 0
        else Bin(reserve_x=round_down(per_bin / usd_x, x))
        if offset > 0
        else Bin(round_down(per_bin / 2 / usd_x, x), round_down(per_bin / 2 / usd_y, y))
        for offset in range(-spec.bins_per_side, spec.bins_per_side + 1)
    )
    return DlmmPool(
        pool_id=pool_id,
        token_x=x,
        token_y=y,
        bin_step_bps=spec.bin_step_bps,
        base_fee_bps=spec.base_fee_bps,
        lowest_id=active - spec.bins_per_side,
        bins=bins,
        active_id=active,
        fees=spec.fees,
    )


def build_pools(
    spec: PoolSpec, usd: Mapping[str, Decimal], tokens: Mapping[str, Token] = TOKENS
) -> dict[tuple[str, str], Pool]:
    """Return one pool per pair of ``tokens`` that ``usd`` prices, keyed by ``pair_key``."""
    priced = [t for t in tokens.values() if t.symbol in usd]
    return {
        pair_key(x.symbol, y.symbol): build_pool(spec, *_ordered(x, y), usd)
        for x, y in combinations(priced, 2)
    }


def _ordered(a: Token, b: Token) -> tuple[Token, Token]:
    first, _ = pair_key(a.symbol, b.symbol)
    return (a, b) if first == a.symbol else (b, a)


def value_usd(pool: Pool, usd_x: Decimal, usd_y: Decimal) -> Decimal:
    """Return the USD value locked in ``pool`` at the USD prices of its two tokens.

    A DLMM pool's bins are valued at those prices token by token. A constant-product
    pool is valued as if it stood at the price usd_x / usd_y (2·√(x·y·usd_x·usd_y)),
    which a price move (k kept) leaves unchanged; only deposits and the fees that
    stay in the pool make it grow. Moving a DLMM pool's bins changes no amounts, so
    its value does not move with the price either.
    """
    if isinstance(pool, ConstantProductPool):
        return 2 * (pool.reserve_x * pool.reserve_y * usd_x * usd_y).sqrt()
    return sum((b.reserve_x * usd_x + b.reserve_y * usd_y for b in pool.bins), start=Decimal(0))


def with_price_factor(pool: Pool, factor: Decimal) -> Pool:
    """Return ``pool`` with the price of X in Y times ``factor`` (nearest bin for DLMM)."""
    if isinstance(pool, ConstantProductPool):
        return pool.with_price_factor(factor)
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    growth = ONE + Decimal(pool.bin_step_bps) / BPS
    return pool.shifted(int((factor.ln() / growth.ln()).to_integral_value(ROUND_HALF_EVEN)))


# The random walk -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PriceWalk:
    """A bounded random walk of a pool's price, relative to its reference price.

    Each step moves a constant-product pool by a factor 1 + u with u uniform in
    ±``step_bps`` (k kept), and a DLMM pool by one bin up or down with probability
    step_bps / bin_step (so both drift alike). A step that would leave the band
    [low, high] times the reference while moving away from it goes the other way instead,
    as arbitrage against the wider market would push it back.
    """

    step_bps: Decimal
    band: tuple[Decimal, Decimal]

    def step(self, pool: Pool, reference: Decimal, rng: random.Random) -> Pool:
        """Return ``pool`` moved by one step drawn from ``rng``."""
        if self.step_bps <= 0:
            return pool
        ratio = pool.spot_price / reference
        if isinstance(pool, ConstantProductPool):
            units = int(self.step_bps * 100)
            move = Decimal(rng.randint(-units, units)) / 1_000_000
            factor = self._bounded(ratio, ONE + move, ONE - move)
            return pool.with_price_factor(factor) if factor != ONE else pool
        chance = min(ONE, self.step_bps / pool.bin_step_bps)
        if Decimal(rng.random()) >= chance:
            return pool
        growth = ONE + Decimal(pool.bin_step_bps) / BPS
        up = rng.random() < 0.5  # a fair coin
        factor = self._bounded(ratio, growth if up else 1 / growth, 1 / growth if up else growth)
        if factor == ONE:
            return pool
        return pool.shifted(1 if factor > 1 else -1)

    def _bounded(self, ratio: Decimal, factor: Decimal, opposite: Decimal) -> Decimal:
        low, high = self.band
        for candidate in (factor, opposite):
            moved = ratio * candidate
            if low <= moved <= high or abs(moved - 1) < abs(ratio - 1):
                return candidate
        return ONE
