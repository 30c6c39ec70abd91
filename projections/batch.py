"""What every read model does with a batch of records: decode them, then fold each order.

``decode_records`` turns records into events, or the reasons they are none. ``plan``
folds the events into the stored states of their orders with one of the lifecycle's
checked folds (``domain.lifecycle.evolve``, or a read model's own built on
``fold_event``): a redelivery is skipped, an event the lifecycle refuses is rejected
with the reason, and the rest is applied. Both are pure: a projection reads the
stored states before and writes the plan after, in the caller's transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic

from domain.lifecycle import IllegalTransition, State, is_stale
from events.messages import DecodeError, Event, decode_event
from projections.contract import BatchResult, Decoded, LogRecord, Rejection

# PostgreSQL text and jsonb cannot hold NUL; such an event could never be stored.
_NUL_ESCAPE = b"\\u0000"


def decode_records(records: Iterable[LogRecord]) -> list[Decoded]:
    """Decode each record into an event, or the reason it is not one."""
    decoded: list[Decoded] = []
    for record in records:
        if record.value is None:
            decoded.append((record, "DecodeError: record has no value"))
        elif _NUL_ESCAPE in record.value:
            decoded.append((record, "DecodeError: NUL characters cannot be stored"))
        else:
            try:
                decoded.append((record, decode_event(record.value)))
            except DecodeError as exc:
                decoded.append((record, f"DecodeError: {exc}"))
    return decoded


@dataclass
class Plan(Generic[State]):
    """The writes a batch causes: the events applied, the final state of each changed
    order, and what was skipped or rejected."""

    events: list[tuple[LogRecord, Event]] = field(default_factory=list)
    states: dict[uuid.UUID, State] = field(default_factory=dict)
    skipped: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def applied(self) -> int:
        return len(self.events)

    def result(self) -> BatchResult:
        """Return what the projection did, for the projector's counts and dead letters."""
        return BatchResult(self.applied, self.skipped, tuple(self.rejected))


def plan(
    decoded: Sequence[Decoded],
    stored: Mapping[uuid.UUID, State],
    fold: Callable[[State | None, Event], State],
    known_ids: Iterable[uuid.UUID] = (),
) -> Plan[State]:
    """Fold a batch into the stored states, skipping redeliveries and rejecting the illegal.

    ``stored`` are the stored states of the batch's orders; ``known_ids`` the message
    ids already stored (skipped like an event at or below its order's seq).
    """
    result: Plan[State] = Plan()
    current = dict(stored)
    seen = set(known_ids)
    for record, item in decoded:
        if isinstance(item, str):
            result.rejected.append(Rejection(record, item))
            continue
        state = current.get(item.order_id)
        if item.message_id in seen or is_stale(state, item):
            result.skipped += 1
            continue
        try:
            new_state = fold(state, item)
        except IllegalTransition as exc:
            result.rejected.append(Rejection(record, f"IllegalTransition: {exc}"))
            continue
        seen.add(item.message_id)
        current[item.order_id] = result.states[item.order_id] = new_state
        result.events.append((record, item))
    return result
