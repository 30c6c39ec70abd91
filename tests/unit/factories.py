"""Builders of realistic messages for tests: an order's events in lifecycle order."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from domain.lifecycle import EnvelopeFields, OrderState, envelope_after, evolve
from events.messages import (
    Event,
    OrderAccepted,
    OrderArmed,
    OrderConfirmed,
    OrderFailed,
    OrderRouted,
    OrderSpec,
    OrderTriggered,
    SubmitOrder,
    TransactionBuilt,
    TransactionSubmitted,
    VenueQuote,
)

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SPEC = OrderSpec(token_in="SOL", token_out="USDC", amount=Decimal("1.5"), slippage_bps=50)


def submit_order(order_id: uuid.UUID | None = None, spec: OrderSpec = SPEC) -> SubmitOrder:
    return SubmitOrder(
        message_id=uuid.uuid4(),
        order_id=order_id or uuid.uuid4(),
        seq=0,
        occurred_at=T0,
        correlation_id=uuid.uuid4(),
        spec=spec,
        request_hash="hash-" + str(spec.amount),
    )


def confirmed_history(order_id: uuid.UUID | None = None) -> list[Event]:
    """Return the five events of an order that confirms, each caused by the one before."""
    command = submit_order(order_id)
    events: list[Event] = []
    state: OrderState | None = None

    def envelope(step: int) -> EnvelopeFields:
        cause = events[-1] if events else command
        return envelope_after(state, cause, T0 + timedelta(seconds=step))

    steps: list[Callable[[EnvelopeFields], Event]] = [
        lambda e: OrderAccepted(**e, spec=SPEC, request_hash=command.request_hash),
        lambda e: OrderRouted(
            **e,
            quotes=(
                VenueQuote(venue="raydium", amount_out=Decimal("224.3"), fee=Decimal("0.0045")),
                VenueQuote(venue="meteora", amount_out=Decimal("223.9"), fee=Decimal("0.003")),
            ),
            venue="raydium",
            expected_out=Decimal("224.3"),
            reason="raydium gives the most",
            runner_up="meteora",
            improvement_bps=Decimal("17.86"),
        ),
        lambda e: TransactionBuilt(
            **e,
            venue="raydium",
            min_amount_out=Decimal("223.1785"),
            client_ref=f"{command.order_id}:1",
            attempt=1,
            steps=("wrap_sol", "swap:raydium"),
        ),
        lambda e: TransactionSubmitted(**e, venue="raydium", tx_hash="5xTx", attempt=1),
        lambda e: OrderConfirmed(
            **e,
            venue="raydium",
            tx_hash="5xTx",
            amount_out=Decimal("224.1"),
            executed_price=Decimal("149.4"),
        ),
    ]
    for step, build in enumerate(steps):
        event = build(envelope(step))
        events.append(event)
        state = evolve(state, event)
    return events


class OrderHistory:
    """One order's events as the engine would write them, each folded with ``evolve``.

    ``at(n)`` stamps the ``n``-th event (0-based): one second apart from ``T0`` by default.
    """

    def __init__(
        self,
        spec: OrderSpec = SPEC,
        at: Callable[[int], datetime] = lambda n: T0 + timedelta(seconds=n),
    ) -> None:
        self.command = submit_order(spec=spec)
        self.state: OrderState | None = None
        self.events: list[Event] = []
        self._at = at

    @property
    def order_id(self) -> uuid.UUID:
        return self.command.order_id

    def add(self, build: Callable[[EnvelopeFields], Event]) -> Event:
        """Append the event ``build`` makes from the next envelope, and fold it."""
        cause = self.events[-1] if self.events else self.command
        event = build(envelope_after(self.state, cause, self._at(len(self.events))))
        self.state = evolve(self.state, event)
        self.events.append(event)
        return event

    def accepted(self) -> Event:
        return self.add(lambda e: OrderAccepted(**e, spec=self.command.spec, request_hash="h"))

    def armed(self, reason: str = "waiting for the limit") -> Event:
        return self.add(lambda e: OrderArmed(**e, reason=reason))

    def triggered(self, reason: str = "crossed") -> Event:
        return self.add(lambda e: OrderTriggered(**e, reason=reason))

    def failed(self, code: str = "SLIPPAGE_EXCEEDED", reason: str = "moved") -> Event:
        return self.add(lambda e: OrderFailed(**e, code=code, reason=reason))
