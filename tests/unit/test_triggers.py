"""The trigger service's pure core: the armed book, candidates, verdicts, the gate, the fold."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest

from domain.lifecycle import EnvelopeFields, IllegalTransition, envelope_after, evolve
from domain.pricing import market_of
from events.market import LiquidityAdded, PoolCreated, PoolState, PriceTick
from events.messages import (
    Event,
    OrderRouted,
    OrderSpec,
    VenueQuote,
)
from projections.orders.snapshot import waiting_from_row
from services.triggers.book import Armed, ArmedBook
from services.triggers.core import Candidate, Gate, TriggerState, judge
from tests.unit.factories import T0, OrderHistory

SOL_USDC = market_of("SOL", "USDC")


def limit(token_in: str, token_out: str, amount: str, price: str, **extra) -> OrderSpec:
    return OrderSpec(
        order_type="limit",
        token_in=token_in,
        token_out=token_out,
        amount=Decimal(amount),
        slippage_bps=50,
        limit_price=Decimal(price),
        **extra,
    )


def sell(price: str, **extra) -> OrderSpec:
    """Sell 1 SOL for USDC at ``price`` USDC per SOL or more."""
    return limit("SOL", "USDC", "1", price, **extra)


def buy(price: str, **extra) -> OrderSpec:
    """Buy SOL with 150 USDC at ``price`` USDC per SOL or less."""
    return limit("USDC", "SOL", "150", price, **extra)


def sniper(token: str = "NEWT", max_price: str | None = None) -> OrderSpec:
    return OrderSpec(
        order_type="sniper",
        token_in="USDC",
        token_out=token,
        amount=Decimal("100"),
        slippage_bps=500,
        max_price=None if max_price is None else Decimal(max_price),
    )


def armed(spec: OrderSpec, seq: int = 2, order_id: uuid.UUID | None = None) -> Armed:
    return Armed.of(order_id or uuid.uuid4(), seq, uuid.uuid4(), spec)


def pool(
    price: str,
    *,
    venue: str = "raydium",
    base: str = "SOL",
    quote: str = "USDC",
    liquidity: str = "1000000",
    seq: int = 1,
    kind: type[PoolState] = PriceTick,
) -> PoolState:
    extra = {"added_usd": Decimal(1)} if kind is LiquidityAdded else {}
    return kind(
        message_id=uuid.uuid4(),
        occurred_at=T0,
        venue=venue,
        pool_id=f"{venue}:{base}-{quote}",
        base=base,
        quote=quote,
        price=Decimal(price),
        liquidity_usd=Decimal(liquidity),
        seq=seq,
        **extra,
    )


def routed(envelope: EnvelopeFields) -> OrderRouted:
    return OrderRouted(
        **envelope,
        quotes=(),
        venue="raydium",
        expected_out=Decimal(150),
        reason="r",
        runner_up=None,
        improvement_bps=None,
    )


class History(OrderHistory):
    """An order's events, with the routing step these tests need."""

    def routed(self) -> Event:
        return self.add(routed)


def new_state(cap: int = 200, min_liquidity: str = "10000") -> TriggerState:
    return TriggerState(max_in_flight=cap, sniper_min_liquidity_usd=Decimal(min_liquidity))


def ids(orders) -> list[uuid.UUID]:
    return [o.order_id for o in orders]


def quote(venue: str, amount_out: str) -> VenueQuote:
    return VenueQuote(venue=venue, amount_out=Decimal(amount_out), fee=Decimal(0))


# The book ---------------------------------------------------------------------------


def test_book_sell_limits_at_or_below_the_price_are_reached_lowest_limit_first():
    book = ArmedBook()
    high, exact, low = armed(sell("160")), armed(sell("150")), armed(sell("140"))
    for order in (high, exact, low):
        book.arm(order)
    assert ids(book.reached(SOL_USDC, "sell", Decimal("150"))) == ids([low, exact])


def test_book_buy_limits_at_or_above_the_price_are_reached_highest_limit_first():
    book = ArmedBook()
    low, exact, high = armed(buy("140")), armed(buy("150")), armed(buy("160"))
    for order in (low, exact, high):
        book.arm(order)
    assert ids(book.reached(SOL_USDC, "buy", Decimal("150"))) == ids([high, exact])


def test_book_crossed_price_returns_both_sides_it_reaches():
    book = ArmedBook()
    s, b = armed(sell("149")), armed(buy("151"))
    book.arm(s)
    book.arm(b)
    book.arm(armed(sell("152")))
    book.arm(armed(buy("148")))
    assert ids(book.crossed(SOL_USDC, Decimal("150"))) == ids([s, b])


def test_book_equal_limits_are_reached_first_armed_first():
    book = ArmedBook()
    orders = [armed(sell("150")) for _ in range(5)]
    for order in orders:
        book.arm(order)
    assert ids(book.reached(SOL_USDC, "sell", Decimal("151"))) == ids(orders)


def test_book_price_reaching_no_limit_returns_nothing():
    book = ArmedBook()
    book.arm(armed(sell("160")))
    book.arm(armed(buy("140")))
    assert book.crossed(SOL_USDC, Decimal("150")) == []
    assert book.crossed(market_of("BONK", "USDC"), Decimal("150")) == []


def test_book_orders_of_another_market_are_not_reached():
    book = ArmedBook()
    book.arm(armed(limit("JUP", "USDC", "10", "0.5")))
    assert book.crossed(SOL_USDC, Decimal("1000")) == []
    assert len(book.crossed(market_of("JUP", "USDC"), Decimal("1"))) == 1


def test_book_removed_order_is_no_longer_reached():
    book = ArmedBook()
    kept, removed = armed(sell("140")), armed(sell("140"))
    book.arm(kept)
    book.arm(removed)
    assert book.remove(removed.order_id) == removed
    assert book.remove(removed.order_id) is None
    assert ids(book.crossed(SOL_USDC, Decimal("150"))) == ids([kept])
    assert removed.order_id not in book


def test_book_rearm_at_a_later_seq_replaces_the_earlier_arming():
    book = ArmedBook()
    order_id = uuid.uuid4()
    book.arm(armed(sell("140"), seq=2, order_id=order_id))
    assert book.arm(armed(sell("140"), seq=4, order_id=order_id))
    [found] = book.crossed(SOL_USDC, Decimal("150"))
    assert found.seq == 4
    assert book.is_armed(order_id, 4)
    assert not book.is_armed(order_id, 2)
    assert len(book) == 1


def test_book_rearm_at_the_same_or_an_earlier_seq_changes_nothing():
    book = ArmedBook()
    order_id = uuid.uuid4()
    book.arm(armed(sell("140"), seq=4, order_id=order_id))
    assert not book.arm(armed(sell("140"), seq=4, order_id=order_id))
    assert not book.arm(armed(sell("140"), seq=2, order_id=order_id))
    assert book.is_armed(order_id, 4)


def test_book_snipers_are_found_by_the_token_they_buy():
    book = ArmedBook()
    first, second, other = armed(sniper("NEWT")), armed(sniper("NEWT")), armed(sniper("OTHR"))
    for order in (first, second, other):
        book.arm(order)
    assert ids(book.snipers("NEWT")) == ids([first, second])
    book.remove(first.order_id)
    assert ids(book.snipers("NEWT")) == ids([second])
    assert book.snipers("SOL") == []
    assert book.crossed(market_of("USDC", "NEWT"), Decimal(1)) == []


def test_book_expire_returns_due_orders_earliest_first_and_each_once():
    book = ArmedBook()
    later = armed(sell("200", expires_at=T0 + timedelta(seconds=30)))
    sooner = armed(sell("200", expires_at=T0 + timedelta(seconds=10)))
    never = armed(sell("200"))
    for order in (later, sooner, never):
        book.arm(order)
    assert book.next_expiry() == T0 + timedelta(seconds=10)
    assert book.expire(T0 + timedelta(seconds=5)) == []
    assert ids(book.expire(T0 + timedelta(seconds=30))) == ids([sooner, later])
    assert book.expire(T0 + timedelta(seconds=60)) == []
    assert ids(book.orders()) == ids([never])
    assert book.next_expiry() is None


def test_book_expire_skips_orders_removed_since_and_uses_the_latest_arming():
    book = ArmedBook()
    gone = armed(sell("200", expires_at=T0))
    order_id = uuid.uuid4()
    book.arm(gone)
    book.arm(armed(sell("200", expires_at=T0), seq=2, order_id=order_id))
    book.remove(gone.order_id)
    book.arm(armed(sell("200", expires_at=T0), seq=4, order_id=order_id))
    [due] = book.expire(T0)
    assert (due.order_id, due.seq) == (order_id, 4)


def test_book_expire_sets_aside_another_replicas_orders_until_reclaimed():
    book = ArmedBook()
    mine = armed(sell("200", expires_at=T0))
    theirs = armed(sell("200", expires_at=T0))
    for order in (mine, theirs):
        book.arm(order)

    assert ids(book.expire(T0, lambda order_id: order_id == mine.order_id)) == ids([mine])
    # The other replica's order stays armed here, and its expiry no longer wakes us.
    assert ids(book.orders()) == ids([theirs])
    assert book.next_expiry() is None
    assert book.expire(T0 + timedelta(seconds=1), lambda _order_id: True) == []

    # Its partition comes to this replica: the expiry is due again, once.
    book.reclaim()
    assert ids(book.expire(T0 + timedelta(seconds=1))) == ids([theirs])
    book.reclaim()
    assert book.expire(T0 + timedelta(seconds=2)) == []


def test_book_many_orders_reached_matches_a_linear_scan():
    rng = random.Random(3)
    book = ArmedBook()
    orders = []
    for _ in range(2000):
        spec = (
            sell(str(rng.randint(100, 200)))
            if rng.random() < 0.5
            else buy(str(rng.randint(100, 200)))
        )
        order = armed(spec)
        orders.append(order)
        book.arm(order)
    for order in rng.sample(orders, 500):
        book.remove(order.order_id)
    for price in (Decimal(99), Decimal("150.5"), Decimal(150), Decimal(201)):
        expected = {o.order_id for o in orders if o.order_id in book and o.reached_by(price)}
        assert set(ids(book.crossed(SOL_USDC, price))) == expected


# Candidates from a pool's spot price ----------------------------------------------------


def test_state_pool_spot_reaching_limits_makes_those_orders_candidates():
    state = new_state()
    s, b = armed(sell("149")), armed(buy("151"))
    state.book.arm(s)
    state.book.arm(b)
    state.book.arm(armed(sell("151")))
    tick = pool("150")
    state.observe(tick)
    candidates = state.candidates_at(tick)
    assert [(c.order.order_id, c.pool_id) for c in candidates] == [
        (s.order_id, "raydium:SOL-USDC"),
        (b.order_id, "raydium:SOL-USDC"),
    ]


def test_state_pool_named_the_other_way_round_has_its_price_inverted():
    state = new_state()
    order = armed(sell("149"))
    state.book.arm(order)
    inverted = pool(str(Decimal(1) / Decimal(150)), base="USDC", quote="SOL")
    assert ids(c.order for c in state.candidates_at(inverted)) == ids([order])


def test_state_failed_verification_is_not_quoted_again_until_the_spot_moves_in_favour():
    state = new_state()
    s, b = armed(sell("149")), armed(buy("151"))
    state.book.arm(s)
    state.book.arm(b)
    for c in state.candidates_at(pool("150")):
        state.failed_at(c, Decimal("150"))
    assert state.candidates_at(pool("150", seq=2)) == []
    assert ids(c.order for c in state.candidates_at(pool("150.1", seq=3))) == ids([s])
    assert ids(c.order for c in state.candidates_at(pool("149.9", seq=4))) == ids([b])
    # Another pool of the market has not failed these orders yet.
    assert len(state.candidates_at(pool("150", venue="meteora"))) == 2


def test_state_rearmed_order_forgets_its_failed_verifications():
    state = new_state()
    history = History(sell("149"))
    state.apply(history.accepted())
    state.apply(history.armed())
    [candidate] = state.candidates_at(pool("150"))
    state.failed_at(candidate, Decimal("150"))
    state.fired(candidate.order)
    state.apply(history.triggered())
    state.apply(history.armed())
    assert len(state.candidates_at(pool("150", seq=2))) == 1


def test_state_order_already_verifying_or_queued_is_not_a_candidate_again():
    state = new_state(cap=1)
    first, second = armed(sell("140")), armed(sell("141"))
    state.book.arm(first)
    state.book.arm(second)
    for c in state.candidates_at(pool("150")):
        state.gate.request(c)
    assert state.candidates_at(pool("151", seq=2)) == []
    state.gate.abandon(first.order_id)
    assert ids(c.order for c in state.candidates_at(pool("151", seq=3))) == ids([first])


def test_state_sniper_pool_with_enough_liquidity_makes_it_a_candidate():
    state = new_state(min_liquidity="10000")
    order = armed(sniper("NEWT"))
    state.book.arm(order)
    created = pool("0.01", base="NEWT", liquidity="50000", kind=PoolCreated)
    assert ids(c.order for c in state.candidates_at(created)) == ids([order])


def test_state_sniper_pool_with_too_little_liquidity_is_not_a_candidate_until_added():
    state = new_state(min_liquidity="10000")
    order = armed(sniper("NEWT"))
    state.book.arm(order)
    assert state.candidates_at(pool("0.01", base="NEWT", liquidity="1000", kind=PoolCreated)) == []
    added = pool("0.01", base="NEWT", liquidity="10000", seq=2, kind=LiquidityAdded)
    assert ids(c.order for c in state.candidates_at(added)) == ids([order])


def test_state_sniper_spot_above_its_max_price_is_not_a_candidate():
    state = new_state()
    order = armed(sniper("NEWT", max_price="0.02"))
    state.book.arm(order)
    assert state.candidates_at(pool("0.03", base="NEWT", kind=PoolCreated)) == []
    assert len(state.candidates_at(pool("0.02", base="NEWT", seq=2))) == 1


def test_state_sniper_pool_of_another_pair_is_not_a_candidate():
    state = new_state()
    state.book.arm(armed(sniper("NEWT")))  # pays USDC
    assert state.candidates_at(pool("0.0001", base="NEWT", quote="SOL", kind=PoolCreated)) == []


def test_state_old_or_repeated_pool_state_is_ignored():
    state = new_state()
    assert state.observe(pool("150", seq=2))
    assert not state.observe(pool("160", seq=2))
    assert not state.observe(pool("170", seq=1))
    assert state.spot("raydium:SOL-USDC") == Decimal("150")


def test_state_new_armed_order_is_a_candidate_at_the_most_favourable_pool():
    state = new_state()
    state.observe(pool("150", venue="raydium"))
    state.observe(pool("151", venue="meteora"))
    s, b = armed(sell("149")), armed(buy("150.5"))
    assert [c.pool_id for c in state.candidates_for(s)] == [
        "meteora:SOL-USDC",
        "raydium:SOL-USDC",
    ]
    assert [c.pool_id for c in state.candidates_for(b)] == ["raydium:SOL-USDC"]
    assert state.candidates_for(armed(sell("152"))) == []


def test_state_sweep_returns_every_reachable_armed_order_once():
    state = new_state()
    state.observe(pool("150", venue="raydium"))
    state.observe(pool("151", venue="meteora"))
    reachable = armed(sell("140"))
    for order in (reachable, armed(sell("160"))):
        state.book.arm(order)
    assert [(c.order.order_id, c.pool_id) for c in state.sweep()] == [
        (reachable.order_id, "meteora:SOL-USDC")
    ]


# Verdicts from quotes ------------------------------------------------------------------


def test_judge_sell_whose_best_executable_price_reaches_the_limit_fires_there():
    order = armed(sell("150.5"))
    verdict = judge(order, [quote("raydium", "151.2"), quote("meteora", "150.9")])
    assert verdict.fire
    assert (verdict.price, verdict.venue) == (Decimal("151.2"), "raydium")
    assert verdict.reason == "raydium executable 151.2 ≥ limit 150.5"


def test_judge_buy_whose_best_executable_price_is_above_the_limit_does_not_fire():
    order = armed(buy("149"))  # 150 USDC in: at most 149 USDC per SOL
    verdict = judge(order, [quote("raydium", "1.0"), quote("meteora", "1.005")])
    assert not verdict.fire
    assert verdict.quoted
    assert verdict.venue == "meteora"
    assert verdict.price == Decimal(150) / Decimal("1.005")


def test_judge_buy_whose_executable_price_is_under_the_limit_fires():
    order = armed(buy("151"))
    verdict = judge(order, [quote("raydium", "1.0")])
    assert verdict.fire
    assert verdict.reason == "raydium executable 150 ≤ limit 151"


def test_judge_without_a_usable_quote_does_not_fire_and_learns_nothing():
    order = armed(sell("100"))
    verdict = judge(order, [VenueQuote(venue="raydium", error="TIMEOUT")])
    assert not verdict.fire
    assert not verdict.quoted
    assert "raydium TIMEOUT" in verdict.reason


def test_judge_sniper_above_its_max_price_does_not_fire():
    order = armed(sniper("NEWT", max_price="0.02"))  # 100 USDC in
    assert not judge(order, [quote("raydium", "4000")]).fire  # 0.025 per NEWT
    fired = judge(order, [quote("raydium", "5000")])  # 0.02 per NEWT
    assert fired.fire
    assert fired.reason == "raydium executable 0.02 ≤ max 0.02"


# The in-flight gate ----------------------------------------------------------------------


def candidate(spec: OrderSpec | None = None) -> Candidate:
    return Candidate(armed(spec or sell("140")), "raydium:SOL-USDC")


def test_gate_under_the_cap_reserves_a_slot_at_once():
    gate = Gate(2)
    assert gate.request(candidate())
    assert gate.request(candidate())
    assert gate.room == 0


def test_gate_at_the_cap_queues_crossings_and_lets_them_go_first_in_first_out():
    gate = Gate(1)
    first, second, third = candidate(), candidate(), candidate()
    assert gate.request(first)
    assert not gate.request(second)
    assert not gate.request(third)
    gate.fired(first.order.order_id)
    assert gate.next() is None  # still executing
    assert gate.release(first.order.order_id)
    assert gate.next() == second
    assert gate.next() is None
    gate.abandon(second.order.order_id)  # its verification missed: the slot comes back
    assert gate.next() == third


def test_gate_new_crossing_does_not_overtake_the_queue():
    gate = Gate(1)
    first, waiting, late = candidate(), candidate(), candidate()
    gate.request(first)
    gate.request(waiting)
    gate.fired(first.order.order_id)
    gate.release(first.order.order_id)
    assert not gate.request(late)
    assert gate.next() == waiting


def test_gate_order_already_queued_or_busy_keeps_its_place():
    gate = Gate(1)
    busy, queued = candidate(), candidate()
    gate.request(busy)
    gate.request(queued)
    assert not gate.request(busy)
    assert not gate.request(queued)
    assert gate.queued == 1


def test_gate_dropped_order_leaves_the_queue():
    gate = Gate(1)
    gate.request(candidate())
    queued = candidate()
    gate.request(queued)
    gate.drop(queued.order.order_id)
    assert gate.queued == 0


def test_gate_burst_of_crossings_runs_at_most_the_cap_and_queues_the_rest():
    state = new_state(cap=200)
    for n in range(10_000):
        state.book.arm(armed(sell(str(100 + n % 50))))
    crossings = state.candidates_at(pool("150"))
    started = [c for c in crossings if state.gate.request(c)]
    assert len(crossings) == 10_000
    assert len(started) == 200
    assert state.gate.queued == 9_800
    assert started == crossings[:200]


# Folding order events ---------------------------------------------------------------------


def test_state_accepted_then_armed_order_is_in_the_book_at_its_armed_seq():
    state = new_state()
    history = History(sell("150"))
    assert state.apply(history.accepted()).armed is None
    effect = state.apply(history.armed())
    assert effect.armed is not None
    assert effect.armed.seq == 2
    assert state.book.is_armed(history.order_id, 2)


def test_state_market_order_is_not_tracked():
    state = new_state()
    history = History(
        OrderSpec(token_in="SOL", token_out="USDC", amount=Decimal(1), slippage_bps=50)
    )
    state.apply(history.accepted())
    state.apply(history.routed())
    assert state.orders == {}
    assert len(state.book) == 0


def test_state_redelivered_armed_event_changes_nothing():
    state = new_state()
    history = History(sell("150"))
    state.apply(history.accepted())
    arming = history.armed()
    state.apply(arming)
    [c] = state.candidates_at(pool("151"))
    state.fired(c.order)
    assert state.apply(arming).armed is None
    assert history.order_id not in state.book


def test_state_triggered_order_leaves_the_book_and_holds_a_slot_until_it_ends():
    state = new_state()
    history = History(sell("150"))
    for event in (history.accepted(), history.armed(), history.triggered()):
        state.apply(event)
    assert history.order_id not in state.book
    assert state.gate.executing == {history.order_id}
    assert not state.apply(history.routed()).released
    assert state.apply(history.failed()).released
    assert state.gate.executing == set()
    assert state.orders == {}


def test_state_rearmed_order_frees_its_slot_and_is_armed_at_the_new_seq():
    state = new_state()
    history = History(sell("150"))
    for event in (history.accepted(), history.armed(), history.triggered()):
        state.apply(event)
    effect = state.apply(history.armed())
    assert effect.released
    assert effect.armed is not None
    assert effect.armed.seq == 4
    assert state.book.is_armed(history.order_id, 4)


def test_state_event_after_a_gap_is_skipped_with_the_reason():
    state = new_state()
    history = History(sell("150"))
    state.apply(history.accepted())
    history.armed()
    effect = state.apply(history.triggered())
    assert effect.skipped == "expected seq 2, got 3"
    assert state.orders[history.order_id].status == "pending"


def test_state_loaded_snapshot_arms_armed_orders_and_counts_executing_ones():
    state = new_state()
    armed_id, executing_id, pending_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    state.load(armed_id, sell("150"), uuid.uuid4(), 2, "armed")
    state.load(executing_id, sell("150"), uuid.uuid4(), 5, "submitted")
    state.load(pending_id, buy("150"), uuid.uuid4(), 1, "pending")
    assert state.book.is_armed(armed_id, 2)
    assert state.gate.executing == {executing_id}
    assert set(state.orders) == {armed_id, executing_id, pending_id}


def test_waiting_from_row_builds_the_spec_of_a_limit_row():
    order_id, correlation_id = uuid.uuid4(), uuid.uuid4()
    row = {
        "order_id": order_id,
        "seq": 2,
        "status": "armed",
        "correlation_id": correlation_id,
        "order_type": "limit",
        "token_in": "SOL",
        "token_out": "USDC",
        "amount": Decimal("1.5"),
        "slippage_bps": 50,
        "client_order_id": None,
        "limit_price": Decimal("155"),
        "max_price": None,
        "expires_at": T0,
    }
    waiting = waiting_from_row(row)
    assert (waiting.order_id, waiting.seq, waiting.status) == (order_id, 2, "armed")
    assert waiting.spec == sell("155", expires_at=T0).model_copy(update={"amount": Decimal("1.5")})


def test_waiting_from_row_limit_row_without_its_price_raises():
    row = {
        "order_id": uuid.uuid4(),
        "seq": 2,
        "status": "armed",
        "correlation_id": uuid.uuid4(),
        "order_type": "limit",
        "token_in": "SOL",
        "token_out": "USDC",
        "amount": Decimal(1),
        "slippage_bps": 50,
        "client_order_id": None,
        "limit_price": None,
        "max_price": None,
        "expires_at": None,
    }
    with pytest.raises(ValueError, match="limit_price is required for limit orders"):
        waiting_from_row(row)


def test_state_illegal_event_is_skipped_with_the_reason_evolve_gives():
    state = new_state()
    history = History(sell("150"))
    state.apply(history.accepted())
    state.apply(history.armed())
    assert history.state is not None
    # An armed order is triggered before it is routed: the table has no armed -> routing.
    early = routed(envelope_after(history.state, history.events[-1], T0))

    effect = state.apply(early)

    assert effect.skipped == "armed -> routing is not a legal transition"
    with pytest.raises(IllegalTransition, match=effect.skipped):
        evolve(history.state, early)
    assert state.book.is_armed(history.order_id, 2)
