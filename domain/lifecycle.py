"""The order lifecycle: a transition table, ``evolve`` and ``decide``. Pure, no I/O.

``evolve(state, event) -> state`` folds one event into an order's state;
``decide(state, command, now) -> [events]`` turns a command into new events.
Both the engine and the projections fold events with ``evolve``, so the read
model and the engine agree on what an order is.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, TypedDict

from events.messages import (
    CancelOrder,
    Command,
    Envelope,
    Event,
    ExpireOrder,
    Frozen,
    OrderAccepted,
    OrderArmed,
    OrderCancelled,
    OrderConfirmed,
    OrderExpired,
    OrderFailed,
    OrderRouted,
    OrderSpec,
    OrderTriggered,
    Status,
    SubmitOrder,
    SwapAttemptFailed,
    TransactionBuilt,
    TransactionSubmitted,
    TriggerOrder,
    VenueQuote,
    event_id,
)

# Legal status changes. The key None is "the order does not exist yet".
TRANSITIONS: dict[Status | None, frozenset[Status]] = {
    None: frozenset({"pending"}),
    # Failing before routing: no venue answered a quote. Limit and sniper orders
    # are armed instead of routed.
    "pending": frozenset({"routing", "armed", "failed"}),
    # Armed orders wait for their condition (or a cancel, or their expiry). Like every
    # live status it may fail: the engine fails an order visibly rather than stall it.
    "armed": frozenset({"triggered", "cancelled", "expired", "failed"}),
    # Routed like a market order; but when the price moved away between the trigger
    # and the quotes, the order is armed again rather than filled beyond its limit.
    "triggered": frozenset({"routing", "armed", "failed"}),
    "routing": frozenset({"building", "failed"}),
    # A build can be refused (e.g. slippage bound below dust) before submission;
    # a submission can fail transiently (network, busy pool) and be retried.
    "building": frozenset({"submitted", "retrying", "failed"}),
    # Submitted but not landed: the venue may still reject it (expired blockhash,
    # slippage beyond the bound), which is retried with a fresh quote.
    "submitted": frozenset({"confirmed", "retrying", "failed"}),
    # After the backoff the order is routed again: the pool has moved since. But a
    # submission that looked failed (a network error) may have reached the venue
    # after all: then the order follows that transaction instead of swapping again.
    # A limit order whose re-quote misses its limit is armed again.
    "retrying": frozenset({"routing", "submitted", "armed", "failed"}),
    "confirmed": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
    "expired": frozenset(),
}


class EnvelopeFields(TypedDict):
    """The envelope of a new event, ready to splat into its constructor."""

    message_id: uuid.UUID
    order_id: uuid.UUID
    seq: int
    occurred_at: datetime
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None


class IllegalTransition(ValueError):
    """An event that the transition table or the sequence does not allow."""


class OrderState(Frozen):
    """Everything known about one order after folding its events."""

    order_id: uuid.UUID
    seq: int
    status: Status
    spec: OrderSpec
    request_hash: str
    correlation_id: uuid.UUID
    last_event_id: uuid.UUID
    created_at: datetime
    updated_at: datetime
    quotes: tuple[VenueQuote, ...] = ()
    venue: str | None = None
    expected_out: Decimal | None = None
    min_amount_out: Decimal | None = None
    client_ref: str | None = None
    attempt: int = 0
    tx_hash: str | None = None
    amount_out: Decimal | None = None
    executed_price: Decimal | None = None
    failure_code: str | None = None
    failure_reason: str | None = None

    @property
    def terminal(self) -> bool:
        return not TRANSITIONS[self.status]


def is_stale(state: OrderState | None, event: Event) -> bool:
    """Tell whether ``event`` was already folded into ``state`` (a redelivery)."""
    return state is not None and event.seq <= state.seq


def check_next(status: Status | None, seq: int, event: Event) -> None:
    """Raise ``IllegalTransition`` unless ``event`` may follow an order at ``status``/``seq``.

    ``status`` None (and ``seq`` 0) is an order that does not exist yet. Every fold
    of order events (this module's ``evolve``, the read models' own) checks this.
    """
    if event.status not in TRANSITIONS[status]:
        raise IllegalTransition(f"{status} -> {event.status} is not a legal transition")
    if event.seq != seq + 1:
        raise IllegalTransition(f"expected seq {seq + 1}, got {event.seq}")


def evolve(state: OrderState | None, event: Event) -> OrderState:
    """Fold one event into the state, or raise ``IllegalTransition``."""
    check_next(state.status if state else None, state.seq if state else 0, event)

    common: dict[str, Any] = {
        "seq": event.seq,
        "status": event.status,
        "last_event_id": event.message_id,
        "updated_at": event.occurred_at,
    }
    if isinstance(event, OrderAccepted):
        return OrderState(
            order_id=event.order_id,
            spec=event.spec,
            request_hash=event.request_hash,
            correlation_id=event.correlation_id,
            created_at=event.occurred_at,
            **common,
        )
    assert state is not None  # the table admits only OrderAccepted from None
    match event:
        case OrderRouted():
            changes = {
                "quotes": event.quotes,
                "venue": event.venue,
                "expected_out": event.expected_out,
                # A new attempt starts: the last attempt's error stays in the trail.
                "failure_code": None,
                "failure_reason": None,
            }
        case TransactionBuilt():
            changes = {
                "venue": event.venue,
                "min_amount_out": event.min_amount_out,
                "client_ref": event.client_ref,
                "attempt": event.attempt,
            }
        case TransactionSubmitted():
            changes = {"tx_hash": event.tx_hash, "attempt": event.attempt}
        case OrderConfirmed():
            changes = {
                "venue": event.venue,
                "tx_hash": event.tx_hash,
                "amount_out": event.amount_out,
                "executed_price": event.executed_price,
            }
        case SwapAttemptFailed():
            changes = {
                "attempt": event.attempt,
                "failure_code": event.code,
                "failure_reason": event.reason,
            }
        case OrderFailed():
            changes = {"failure_code": event.code, "failure_reason": event.reason}
        case OrderArmed() | OrderTriggered() | OrderCancelled() | OrderExpired():
            changes = {}
        case _:
            raise IllegalTransition(f"unhandled event {type(event).__name__}")
    return state.model_copy(update={**common, **changes})


def envelope_after(state: OrderState | None, cause: Envelope, now: datetime) -> EnvelopeFields:
    """Return the envelope fields of the event that follows ``state``."""
    order_id = state.order_id if state else cause.order_id
    seq = state.seq + 1 if state else 1
    return {
        "message_id": event_id(order_id, seq),
        "order_id": order_id,
        "seq": seq,
        "occurred_at": now,
        "correlation_id": state.correlation_id if state else cause.correlation_id,
        "causation_id": cause.message_id,
    }


def decide(state: OrderState | None, command: Command, now: datetime) -> list[Event]:
    """Turn a command into the events it causes; a repeated or stale command causes none."""
    if isinstance(command, SubmitOrder):
        if state is not None:
            # Same order id again: a client retry or a redelivered command. The first
            # submission won; a different body under the same key is a conflict the
            # gateway already answered with 409, so nothing happens here either way.
            return []
        return [
            OrderAccepted(
                **envelope_after(None, command, now),
                spec=command.spec,
                request_hash=command.request_hash,
            )
        ]
    if state is None or state.status != "armed":
        return []  # only an armed order can be triggered, cancelled or expired
    match command:
        case CancelOrder():
            return [OrderCancelled(**envelope_after(state, command, now), reason=command.reason)]
        case TriggerOrder() if command.seq == state.seq:
            return [
                OrderTriggered(
                    **envelope_after(state, command, now),
                    reason=command.reason,
                    price=command.price,
                    venue=command.venue,
                )
            ]
        case ExpireOrder() if command.seq == state.seq and state.spec.expires_at is not None:
            return [
                OrderExpired(
                    **envelope_after(state, command, now), expires_at=state.spec.expires_at
                )
            ]
    # A trigger or expiry meant for an earlier arming (the order was re-armed since).
    return []
