"""AMM pool math: constant product and DLMM bins, checked against hand-computed numbers."""

from __future__ import annotations

import random
from decimal import ROUND_DOWN, Decimal

import pytest

from domain.tokens import TOKENS
from services.venues.pools import (
    Bin,
    ConstantProductPool,
    ConstantProductSpec,
    DlmmFeeParams,
    DlmmPool,
    DlmmSpec,
    InsufficientLiquidity,
    Pool,
    PriceWalk,
    build_pools,
    pair_key,
    with_price_factor,
)

SOL, USDC, USDT = TOKENS["SOL"], TOKENS["USDC"], TOKENS["USDT"]
USD = {
    "SOL": Decimal(150),
    "USDC": Decimal(1),
    "USDT": Decimal(1),
    "BONK": Decimal("0.00002"),
    "JUP": Decimal("0.9"),
    "RAY": Decimal("2.5"),
}
NO_FEES = DlmmFeeParams(variable_fee_control=0)


def cpmm(fee_bps: int = 25) -> ConstantProductPool:
    return ConstantProductPool(
        pool_id="SOL-USDC",
        token_x=SOL,
        token_y=USDC,
        reserve_x=Decimal(1000),
        reserve_y=Decimal(150_000),
        fee_bps=fee_bps,
    )


def dlmm(base_fee_bps: int = 0, fees: DlmmFeeParams = NO_FEES, accumulator: int = 0) -> DlmmPool:
    """Return a USDC/USDT pool, bin step 1 %: bins -2 and -1 hold 100 USDT, bin 0 100 of each,
    bin 1 100 USDC; bin id 0 is active at price 1."""
    return DlmmPool(
        pool_id="USDC-USDT",
        token_x=USDC,
        token_y=USDT,
        bin_step_bps=100,
        base_fee_bps=base_fee_bps,
        lowest_id=-2,
        bins=(
            Bin(reserve_y=Decimal(100)),
            Bin(reserve_y=Decimal(100)),
            Bin(Decimal(100), Decimal(100)),
            Bin(reserve_x=Decimal(100)),
        ),
        active_id=0,
        volatility_accumulator=accumulator,
        fees=fees,
    )


def down6(amount: Decimal) -> Decimal:
    return amount.quantize(Decimal("0.000001"), rounding=ROUND_DOWN)


# Constant product ------------------------------------------------------------


def test_cpmm_quote_known_reserves_and_fee_gives_constant_product_output() -> None:
    quote = cpmm().quote(Decimal(10), "x_to_y")

    # 25 bps of 10 SOL stay in the pool; 9.975 SOL meet x·y = k.
    assert quote.fee == Decimal("0.025")
    assert quote.amount_out == down6(Decimal(150_000) * Decimal("9.975") / Decimal("1009.975"))
    assert quote.amount_out == Decimal("1481.472313")
    # Impact 1 - (out / 9.975) / 150, about 9.975 / 1009.975 = 0.99 %.
    assert quote.price_impact == 1 - (quote.amount_out / Decimal("9.975")) / 150
    assert abs(quote.price_impact - Decimal("9.975") / Decimal("1009.975")) < Decimal("1e-8")


def test_cpmm_quote_y_to_x_uses_the_same_reserves_the_other_way() -> None:
    quote = cpmm().quote(Decimal(1500), "y_to_x")

    # 1500 USDC less 3.75 fee: 1000 * 1496.25 / (150000 + 1496.25) SOL, 9 decimals.
    expected = (Decimal(1000) * Decimal("1496.25") / Decimal("151496.25")).quantize(
        Decimal("1e-9"), rounding=ROUND_DOWN
    )
    assert quote.fee == Decimal("3.75")
    assert quote.amount_out == expected == Decimal("9.876482091")


def test_cpmm_quote_higher_fee_tier_takes_more_fee() -> None:
    quote = cpmm(fee_bps=100).quote(Decimal(10), "x_to_y")

    assert quote.fee == Decimal("0.1")
    assert quote.amount_out == down6(Decimal(150_000) * Decimal("9.9") / Decimal("1009.9"))


def test_cpmm_quote_larger_order_has_larger_price_impact() -> None:
    small = cpmm().quote(Decimal(1), "x_to_y")
    large = cpmm().quote(Decimal(100), "x_to_y")

    assert Decimal(0) < small.price_impact < large.price_impact
    assert large.amount_out / 100 < small.amount_out


def test_cpmm_apply_swap_selling_x_moves_reserves_and_lowers_price() -> None:
    pool = cpmm()
    quote = pool.quote(Decimal(10), "x_to_y")

    after = pool.apply_swap(Decimal(10), "x_to_y")

    assert after.reserve_x == Decimal(1010)  # the fee stays in the pool
    assert after.reserve_y == Decimal(150_000) - quote.amount_out
    assert after.spot_price < pool.spot_price
    assert after.reserve_x * after.reserve_y > pool.reserve_x * pool.reserve_y
    assert pool.reserve_x == Decimal(1000)  # the original value is untouched


def test_cpmm_apply_swap_buying_x_raises_price() -> None:
    pool = cpmm()

    after = pool.apply_swap(Decimal(1500), "y_to_x")

    assert after.spot_price > pool.spot_price


def test_cpmm_with_price_factor_moves_spot_and_keeps_k() -> None:
    pool = cpmm()

    moved = pool.with_price_factor(Decimal("1.01"))

    assert abs(moved.spot_price / pool.spot_price - Decimal("1.01")) < Decimal("1e-9")
    k, k_moved = pool.reserve_x * pool.reserve_y, moved.reserve_x * moved.reserve_y
    assert abs(k_moved / k - 1) < Decimal("1e-9")


# DLMM ------------------------------------------------------------------------


def test_dlmm_bin_price_is_one_plus_step_to_the_id() -> None:
    pool = dlmm()

    assert pool.bin_price(0) == 1
    assert pool.bin_price(1) == Decimal("1.01")
    assert pool.bin_price(-2) * Decimal("1.0201") == pytest.approx(1)


def test_dlmm_swap_within_active_bin_pays_the_bin_price_less_fee() -> None:
    quote = dlmm(base_fee_bps=10).quote(Decimal(50), "x_to_y")

    # 0.05 USDC fee; 49.95 USDC at price 1 in bin 0.
    assert (quote.fee, quote.amount_out, quote.bins_crossed) == (
        Decimal("0.05"),
        Decimal("49.95"),
        0,
    )
    assert quote.price_impact == 0


def test_dlmm_swap_walks_down_across_bins_until_the_input_is_used() -> None:
    pool = dlmm()

    quote = pool.quote(Decimal(250), "x_to_y")
    after = pool.apply_swap(Decimal(250), "x_to_y")

    # Bin 0 (price 1): 100 X buy 100 Y. Bin -1 (price 1/1.01): 101 X buy 100 Y.
    # Bin -2 (price 1/1.0201): the last 49 X buy 49 / 1.0201 = 48.034506 Y.
    assert quote.amount_out == Decimal("248.034506")
    assert quote.bins_crossed == 2
    assert after.active_id == -2
    assert after.bin(0) == Bin(Decimal(200), Decimal(0))
    assert after.bin(-1) == Bin(Decimal(101), Decimal(0))
    assert after.bin(-2) == Bin(Decimal(49), Decimal(100) - Decimal("48.034506"))
    assert after.spot_price < pool.spot_price
    # Effective price 248.034506 / 250 against spot 1.
    assert quote.price_impact == 1 - Decimal("248.034506") / 250


def test_dlmm_swap_buying_x_walks_up() -> None:
    pool = dlmm()

    quote = pool.quote(Decimal(150), "y_to_x")
    after = pool.apply_swap(Decimal(150), "y_to_x")

    # Bin 0: 100 Y buy 100 X; bin 1 (price 1.01): 50 Y buy 50 / 1.01 = 49.504950 X.
    assert quote.amount_out == Decimal("149.504950")
    assert (quote.bins_crossed, after.active_id) == (2 - 1, 1)
    assert after.spot_price > pool.spot_price


def test_dlmm_crossing_bins_raises_the_variable_fee() -> None:
    fees = DlmmFeeParams(variable_fee_control=40_000, decay_bps=5_000)
    pool = dlmm(base_fee_bps=10, fees=fees)

    after = pool.apply_swap(Decimal(250), "x_to_y")

    # Two bins crossed: accumulator 2 * 10^4; variable fee
    # 40000 * (20000 * 100)^2 / 10^20 = 0.0016 (16 bps) on top of the 10 bps base.
    assert after.volatility_accumulator == 20_000
    assert pool.fee_rate(0) == Decimal("0.001")
    assert after.fee_rate(20_000) == Decimal("0.0026")
    # The next swap starts from half the accumulator (decay 50 %): 10^4, so
    # 40000 * (10000 * 100)^2 / 10^20 = 4 bps variable: 14 bps of 10 X = 0.014.
    assert after.quote(Decimal(10), "y_to_x").fee == Decimal("0.014")
    assert pool.quote(Decimal(10), "y_to_x").fee == Decimal("0.01")


def test_dlmm_swap_beyond_the_last_bin_raises_insufficient_liquidity() -> None:
    with pytest.raises(InsufficientLiquidity):
        dlmm().quote(Decimal(1000), "x_to_y")


def test_dlmm_shifted_moves_price_by_whole_bins_and_keeps_reserves() -> None:
    pool = dlmm()

    moved = pool.shifted(-3)

    assert moved.active_id == -3
    assert moved.bin(-3) == pool.bin(0)
    assert moved.spot_price == pool.bin_price(-3)


def test_with_price_factor_on_dlmm_rounds_to_the_nearest_bin() -> None:
    moved = with_price_factor(dlmm(), Decimal("0.95"))

    # ln(0.95) / ln(1.01) = -5.15 bins -> 5 bins down.
    assert isinstance(moved, DlmmPool)
    assert moved.active_id == -5


# Building pools ----------------------------------------------------------------


def test_build_pools_makes_one_pool_per_pair_for_both_directions() -> None:
    pools = build_pools(ConstantProductSpec(depth_usd=Decimal(2_000_000)), USD)

    assert len(pools) == 15  # 6 tokens, 6 * 5 / 2 pairs
    assert pair_key("USDC", "SOL") == pair_key("SOL", "USDC") == ("SOL", "USDC")
    sol_usdc = pools[("SOL", "USDC")]
    assert isinstance(sol_usdc, ConstantProductPool)
    # $1M a side: 6666.666666666 SOL against 1,000,000 USDC.
    assert sol_usdc.reserve_x == Decimal("6666.666666666")
    assert sol_usdc.reserve_y == Decimal(1_000_000)
    assert abs(sol_usdc.spot_price - 150) < Decimal("1e-6")


def test_build_pools_dlmm_active_bin_is_nearest_the_reference_price() -> None:
    pools = build_pools(DlmmSpec(bin_step_bps=10, depth_usd=Decimal(1_010_000)), USD)

    pool = pools[("SOL", "USDC")]
    assert isinstance(pool, DlmmPool)
    # ln(150) / ln(1.001) = 5012.87 -> bin 5013; its price is within half a bin of 150.
    assert pool.active_id == 5013
    assert abs(pool.spot_price / 150 - 1) < Decimal("0.0005")
    # $1.01M over 101 bins: $10,000 per bin, split half and half in the active bin.
    assert pool.bin(5013) == Bin(Decimal("33.333333333"), Decimal(5000))
    assert pool.bin(5012) == Bin(reserve_y=Decimal(10_000))
    assert pool.bin(5014).reserve_x == Decimal("66.666666666")


# The random walk ---------------------------------------------------------------


def walk_prices(seed: int, steps: int) -> list[Decimal]:
    walk = PriceWalk(step_bps=Decimal(2), band=(Decimal("0.98"), Decimal("1.02")))
    rng = random.Random(seed)
    pool: Pool = cpmm()
    prices = []
    for _ in range(steps):
        pool = walk.step(pool, Decimal(150), rng)
        prices.append(pool.spot_price)
    return prices


def test_price_walk_same_seed_gives_same_path() -> None:
    assert walk_prices(1, 50) == walk_prices(1, 50)
    assert walk_prices(1, 50) != walk_prices(2, 50)


def test_price_walk_cpmm_steps_at_most_step_bps_and_stays_in_band() -> None:
    prices = walk_prices(3, 3000)
    steps = [abs(b / a - 1) for a, b in zip([Decimal(150), *prices], prices, strict=False)]

    assert max(steps) <= Decimal("0.00020001")
    assert all(Decimal(147) <= p <= Decimal(153) for p in prices)
    assert len(set(prices)) > 2500


def test_price_walk_dlmm_shifts_by_one_bin_sometimes() -> None:
    walk = PriceWalk(step_bps=Decimal(20), band=(Decimal("0.9"), Decimal("1.1")))
    rng = random.Random(4)
    pool: Pool = dlmm()
    ids = []
    for _ in range(200):
        pool = walk.step(pool, Decimal(1), rng)
        assert isinstance(pool, DlmmPool)
        ids.append(pool.active_id)

    moves = [b - a for a, b in zip([0, *ids], ids, strict=False)]
    assert set(moves) == {-1, 0, 1}
    # Step 20 bps on bins of 100 bps: a shift on about one step in five.
    assert 20 <= sum(m != 0 for m in moves) <= 60


def test_price_walk_outside_band_steps_back_toward_it() -> None:
    walk = PriceWalk(step_bps=Decimal(2), band=(Decimal("0.98"), Decimal("1.02")))
    rng = random.Random(5)
    pool: Pool = cpmm().with_price_factor(Decimal("0.95"))

    for _ in range(20):
        before = pool.spot_price
        pool = walk.step(pool, Decimal(150), rng)
        assert pool.spot_price >= before


def test_price_walk_zero_step_leaves_pool_unchanged() -> None:
    walk = PriceWalk(step_bps=Decimal(0), band=(Decimal(1), Decimal(1)))
    pool = cpmm()

    assert walk.step(pool, Decimal(150), random.Random(0)) is pool
