"""The order lifecycle: a transition table, the engine's step beside it, one checked
fold of an order's events, and ``decide``. Pure, no I/O.

``TRANSITIONS`` says where each status may go next and ``STEPS`` what the engine does
once an order is there; the terminal and executing statuses derive from the table.
``fold_event`` is the one fold of order events: it checks each event against the
table and the sequence, then lets its caller apply it to a state of its own.
``evolve(state, event) -> state`` is that fold into an ``OrderState``, the one the
engine and the orders read model keep; the analytics read model and the trigger
service keep smaller states, folded the same way. ``decide(state, command, now) ->
[events]`` turns a command into new events.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol, TypedDict, TypeVar

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

# What the engine does once an order reaches each status, and so which event comes
# next: arm it (OrderArmed), quote every venue and route it (OrderRouted), build the
# swap (TransactionBuilt), submit it (TransactionSubmitted), confirm it (OrderConfirmed),
# or resume after the backoff. Any step may also end the order (OrderFailed).
Step = Literal["arm", "route", "build", "submit", "confirm", "resume"]

# None: the engine waits for a command (armed), or the order is done.
STEPS: dict[Status, Step | None] = {
    # An order that waits for a condition (limit, sniper) is armed first: see next_step.
    "pending": "route",
    "armed": None,
    "triggered": "route",
    "routing": "build",
    "building": "submit",
    "submitted": "confirm",
    # Follow the earlier swap if it reached the venue after all, else route again.
    "retrying": "resume",
    "confirmed": None,
    "failed": None,
    "cancelled": None,
    "expired": None,
}

# The statuses with no way out.
TERMINAL_STATUSES: frozenset[Status] = frozenset(
    status for status, targets in TRANSITIONS.items() if status is not None and not targets
)


def _executing() -> frozenset[Status]:
    # Everything the table allows after a trigger until the order ends or waits again.
    found: set[Status] = set()
    todo: list[Status] = ["triggered"]
    while todo:
        status = todo.pop()
        if status not in found and status not in TERMINAL_STATUSES and status != "armed":
            found.add(status)
            todo.extend(TRANSITIONS[status])
    return frozenset(found)


# The statuses of a triggered order on its way to a venue.
EXECUTING: frozenset[Status] = _executing()


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
    # Who placed the order; None for orders from before accounts existed.
    account: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


def next_step(state: OrderState) -> Step | None:
    """Return what the engine does with an order at its current status (``STEPS``)."""
    if state.status == "pending" and state.spec.waits:
        return "arm"
    return STEPS[state.status]


# One checked fold ------------------------------------------------------------------


class Versioned(Protocol):
    """The least any fold of an order's events keeps: its status and its last seq."""

    @property
    def status(self) -> Status: ...

    @property
    def seq(self) -> int: ...


State = TypeVar("State", bound=Versioned)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an event may not follow an order's state: an illegal status change, a gap, or both."""

    illegal: str | None
    gap: str | None

    @property
    def reason(self) -> str:
        """Return the illegal change, or else the gap: what ``IllegalTransition`` says."""
        reason = self.illegal or self.gap
        assert reason is not None  # ``refusal`` makes one only when something is wrong
        return reason


def is_stale(state: Versioned | None, event: Event) -> bool:
    """Tell whether ``event`` was already folded into ``state`` (a redelivery)."""
    return state is not None and event.seq <= state.seq


def refusal(state: Versioned | None, event: Event) -> Refusal | None:
    """Return why ``event`` may not follow ``state``, or None when it may.

    ``state`` None is an order that does not exist yet. The event must change the
    status as ``TRANSITIONS`` allows and carry the next seq, with no gap.
    """
    status, seq = (state.status, state.seq) if state is not None else (None, 0)
    illegal = (
        None
        if event.status in TRANSITIONS[status]
        else f"{status} -> {event.status} is not a legal transition"
    )
    gap = None if event.seq == seq + 1 else f"expected seq {seq + 1}, got {event.seq}"
    return None if illegal is None and gap is None else Refusal(illegal, gap)


def check_next(state: Versioned | None, event: Event) -> None:
    """Raise ``IllegalTransition`` unless ``event`` may follow ``state`` (see ``refusal``)."""
    refused = refusal(state, event)
    if refused is not None:
        raise IllegalTransition(refused.reason)


def fold_event(
    state: State | None,
    event: Event,
    start: Callable[[OrderAccepted], State],
    step: Callable[[State, Event], State],
) -> State:
    """Fold one event into a state of the caller's own, or raise ``IllegalTransition``.

    ``start`` makes the state of a new order from its ``OrderAccepted``; ``step``
    applies any later event. Both see only events that ``check_next`` allows, so every
    fold of order events agrees on which ones count.
    """
    check_next(state, event)
    if isinstance(event, OrderAccepted):
        return start(event)
    assert state is not None  # the table admits only OrderAccepted from None
    return step(state, event)


def evolve(state: OrderState | None, event: Event) -> OrderState:
    """Fold one event into the state, or raise ``IllegalTransition``."""
    return fold_event(state, event, _accepted, _changed)


def fold_prefix(events: Iterable[Event]) -> OrderState | None:
    """Return the state after the contiguous prefix of ``events`` (seq 1, 2, ...).

    The fold stops at the first event that may not follow (a gap: the rest is not
    known yet), so a history read from several sources answers what is certain.
    """
    state: OrderState | None = None
    for event in events:
        try:
            state = evolve(state, event)
        except IllegalTransition:
            break
    return state


def _accepted(event: OrderAccepted) -> OrderState:
    return OrderState(
        order_id=event.order_id,
        spec=event.spec,
        request_hash=event.request_hash,
        correlation_id=event.correlation_id,
        created_at=event.occurred_at,
        account=event.account,
        **_stamp(event),
    )


def _stamp(event: Event) -> dict[str, Any]:
    # What every event changes: the version, the status and when.
    return {
        "seq": event.seq,
        "status": event.status,
        "last_event_id": event.message_id,
        "updated_at": event.occurred_at,
    }


def _changed(state: OrderState, event: Event) -> OrderState:
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
    return state.model_copy(update={**_stamp(event), **changes})


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
                account=command.account,
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
