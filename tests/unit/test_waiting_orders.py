"""Limit and sniper orders in the engine: armed until triggered, filled within the limit.

The log is played by a list, as in test_processor: whatever the processor emits is
delivered back to it, in order.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

from domain.lifecycle import OrderState, evolve
from events.messages import (
    CancelOrder,
    ExpireOrder,
    OrderArmed,
    OrderSpec,
    OrderTriggered,
    TransactionBuilt,
    TriggerOrder,
    encode,
)
from tests.unit.factories import T0, submit_order
from tests.unit.test_processor import WHERE, Harness

# Selling 1 SOL: the simulated pools price SOL near 150 USDC.
REACHABLE = Decimal(140)
UNREACHABLE = Decimal(10_000)


def limit_sell(limit: Decimal) -> OrderSpec:
    return OrderSpec(
        order_type="limit",
        token_in="SOL",
        token_out="USDC",
        amount=Decimal(1),
        slippage_bps=100,
        limit_price=limit,
        expires_at=T0 + timedelta(hours=1),
    )


def history(h: Harness) -> list:
    """Return the log as every consumer reads it: the first event of each seq wins."""
    seen: set[int] = set()
    first = []
    for event in h.log:
        if event.seq not in seen:
            seen.add(event.seq)
            first.append(event)
    return first


def statuses(h: Harness) -> list[str]:
    return [e.status for e in history(h)]


def state_of(h: Harness) -> OrderState:
    state = None
    for event in history(h):
        state = evolve(state, event)
    assert state is not None
    return state


def command(kind: type, state: OrderState, **fields: object):
    return kind(
        message_id=uuid.uuid4(),
        order_id=state.order_id,
        seq=state.seq,
        occurred_at=T0,
        correlation_id=state.correlation_id,
        **fields,
    )


async def armed(spec: OrderSpec) -> Harness:
    h = Harness()
    await h.processor.on_command(encode(submit_order(spec=spec)), WHERE)
    await h.deliver_from(0)
    return h


async def test_limit_order_is_armed_and_waits_without_quoting():
    h = await armed(limit_sell(REACHABLE))
    assert [e.status for e in h.log] == ["pending", "armed"]
    armed_event = h.log[-1]
    assert isinstance(armed_event, OrderArmed)
    assert armed_event.reason == "waiting for SOL/USDC to reach 140 or more for 1 SOL"
    assert h.submits == 0


async def test_trigger_of_reachable_limit_fills_with_a_bound_at_the_limit():
    h = await armed(limit_sell(REACHABLE))
    trigger = command(TriggerOrder, state_of(h), reason="spot crossed", price=Decimal(150))
    await h.processor.on_command(encode(trigger), WHERE)
    await h.deliver_from(2)
    assert [e.status for e in h.log] == [
        "pending",
        "armed",
        "triggered",
        "routing",
        "building",
        "submitted",
        "confirmed",
    ]
    built = h.log[4]
    assert isinstance(built, TransactionBuilt)
    # The slippage bound (1 %) is above 140 USDC, so it stands.
    assert built.min_amount_out > REACHABLE
    assert h.submits == 1


async def test_trigger_when_price_moved_away_arms_the_order_again():
    h = await armed(limit_sell(UNREACHABLE))
    trigger = command(TriggerOrder, state_of(h), reason="a stale crossing")
    await h.processor.on_command(encode(trigger), WHERE)
    await h.deliver_from(2)
    assert [e.status for e in h.log] == ["pending", "armed", "triggered", "armed"]
    rearmed = h.log[-1]
    assert isinstance(rearmed, OrderArmed)
    assert rearmed.reason.startswith("price moved away")
    assert h.submits == 0


async def test_trigger_twice_for_the_same_arming_fires_once():
    h = await armed(limit_sell(REACHABLE))
    trigger = command(TriggerOrder, state_of(h), reason="crossed")
    await h.processor.on_command(encode(trigger), WHERE)
    await h.processor.on_command(encode(trigger), WHERE)
    await h.deliver_from(2)
    assert statuses(h).count("triggered") == 1
    assert [e.seq for e in history(h)] == list(range(1, len(history(h)) + 1))
    assert h.submits == 1


async def test_cancel_of_armed_order_cancels_and_a_later_trigger_does_nothing():
    h = await armed(limit_sell(REACHABLE))
    state = state_of(h)
    await h.processor.on_command(encode(command(CancelOrder, state)), WHERE)
    await h.processor.on_command(encode(command(TriggerOrder, state, reason="late")), WHERE)
    await h.deliver_from(2)
    assert statuses(h) == ["pending", "armed", "cancelled"]
    assert h.submits == 0


async def test_trigger_before_cancel_wins_and_the_cancel_does_nothing():
    h = await armed(limit_sell(REACHABLE))
    state = state_of(h)
    await h.processor.on_command(encode(command(TriggerOrder, state, reason="first")), WHERE)
    await h.processor.on_command(encode(command(CancelOrder, state)), WHERE)
    await h.deliver_from(2)
    assert "cancelled" not in statuses(h)
    assert statuses(h)[-1] == "confirmed"
    # Both commands saw the order armed; the cancel's event lost the race for seq 3.
    assert isinstance(history(h)[2], OrderTriggered)
    assert h.submits == 1


async def test_expire_of_armed_order_expires_it_at_its_expiry_time():
    h = await armed(limit_sell(UNREACHABLE))
    await h.processor.on_command(encode(command(ExpireOrder, state_of(h))), WHERE)
    await h.deliver_from(2)
    assert [e.status for e in h.log] == ["pending", "armed", "expired"]
    assert h.log[-1].expires_at == T0 + timedelta(hours=1)  # type: ignore[union-attr]


async def test_market_order_cannot_be_cancelled_or_triggered():
    h = Harness()
    await h.processor.on_command(encode(submit_order()), WHERE)
    await h.deliver_from(0)
    before = list(h.log)
    state = state_of(h)
    await h.processor.on_command(encode(command(CancelOrder, state)), WHERE)
    await h.processor.on_command(encode(command(TriggerOrder, state, reason="x")), WHERE)
    assert h.log == before


async def test_sniper_with_a_max_price_below_the_market_is_armed_again_after_a_trigger():
    spec = OrderSpec(
        order_type="sniper",
        token_in="SOL",
        token_out="JUP",
        amount=Decimal(1),
        slippage_bps=100,
        max_price=Decimal("0.000001"),  # SOL per JUP: far below the pool's price
    )
    h = await armed(spec)
    assert h.log[-1].reason == "waiting for a JUP pool to launch at 0.000001 SOL or less"  # type: ignore[union-attr]
    await h.processor.on_command(encode(command(TriggerOrder, state_of(h), reason="pool")), WHERE)
    await h.deliver_from(2)
    assert [e.status for e in h.log][-2:] == ["triggered", "armed"]
    assert h.submits == 0


async def test_trigger_that_overtakes_the_armed_event_is_deferred_until_it_is_folded():
    # The trigger service read OrderArmed on the log before this engine folded it.
    h = Harness()
    await h.processor.on_command(encode(submit_order(spec=limit_sell(REACHABLE))), WHERE)
    await h.processor.on_event(encode(h.log[0]), WHERE)
    armed_event = h.log[1]
    assert isinstance(armed_event, OrderArmed)
    trigger = TriggerOrder(
        message_id=uuid.uuid4(),
        order_id=armed_event.order_id,
        seq=armed_event.seq,
        occurred_at=T0,
        correlation_id=armed_event.correlation_id,
        reason="crossed",
    )
    await h.processor.on_command(encode(trigger), WHERE)
    assert statuses(h) == ["pending", "armed"]  # kept, neither decided nor dropped

    await h.deliver_from(1)
    assert statuses(h)[-1] == "confirmed"
    assert statuses(h).count("triggered") == 1
    assert h.submits == 1


async def test_command_naming_a_version_never_reached_does_nothing():
    h = await armed(limit_sell(REACHABLE))
    future = command(TriggerOrder, state_of(h), reason="from the future").model_copy(
        update={"seq": 9}
    )
    await h.processor.on_command(encode(future), WHERE)
    assert statuses(h) == ["pending", "armed"]
