"""The sweeper's pure core: which orders stopped moving, and what to do about them.

It is told every submission (``SubmitOrder``) and every order event it reads from
the log, and asked on a timer what is due:

* a submission with no ``OrderAccepted`` after ``submit_after`` is submitted again
  (the engine accepts it if it never did; a repeat is a no-op), once the caller has
  checked the read model does not know the order either;
* an order in a non-terminal status whose last event is older than ``stall_after``
  is resumed: its last event goes back to the engine in a ``ResumeOrder``. Armed
  orders wait legitimately (for their trigger or expiry) and a ``retrying`` order
  waits until its ``retry_at``, so neither counts as stalled before that.

Each is tried ``max_attempts`` times, ``submit_after`` / ``stall_after`` apart; then
the sweeper gives up on it and says so, once (``oee audit`` keeps reporting it).
Nothing here does I/O or reads a clock: ``now`` is always given.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from domain.lifecycle import TRANSITIONS
from events.messages import Event, OrderAccepted, SubmitOrder, SwapAttemptFailed

# Orders that wait for a condition (a trigger or their expiry) by design.
WAITING = frozenset({"armed"})


@dataclass(slots=True)
class _Tracked:
    due_at: datetime
    attempts: int = 0


@dataclass(slots=True)
class _Submission(_Tracked):
    command: SubmitOrder | None = None


@dataclass(slots=True)
class _Order(_Tracked):
    last: Event | None = None


@dataclass(frozen=True, slots=True)
class Due:
    """What the sweeper should do now."""

    resubmit: tuple[SubmitOrder, ...] = ()
    resume: tuple[Event, ...] = ()
    given_up: tuple[str, ...] = ()  # one line per order the sweeper stops trying


@dataclass
class Sweeper:
    """Track submissions not accepted yet and orders not ended yet; tell what is due."""

    submit_after: timedelta
    stall_after: timedelta
    max_attempts: int = 3
    _submissions: dict[uuid.UUID, _Submission] = field(default_factory=dict)
    _orders: dict[uuid.UUID, _Order] = field(default_factory=dict)
    # Orders accepted (or known to the read model), so a submission read later from
    # the other topic is not taken for a lost one; kept a while, then forgotten.
    _accepted: dict[uuid.UUID, datetime] = field(default_factory=dict)
    # Orders that ended: a late duplicate of an earlier event must not revive them.
    _ended: dict[uuid.UUID, datetime] = field(default_factory=dict)

    def on_submission(self, command: SubmitOrder) -> None:
        """Note a submission read from the commands topic."""
        if command.order_id in self._accepted or command.order_id in self._submissions:
            return
        due = command.occurred_at + self.submit_after
        self._submissions[command.order_id] = _Submission(due, command=command)

    def on_event(self, event: Event) -> None:
        """Note an order event read from the events topic (duplicates are harmless)."""
        order_id = event.order_id
        if isinstance(event, OrderAccepted):
            self._accepted[order_id] = event.occurred_at
            self._submissions.pop(order_id, None)
        current = self._orders.get(order_id)
        if order_id in self._ended or (
            current is not None and current.last is not None and event.seq <= current.last.seq
        ):
            return
        if not TRANSITIONS[event.status]:
            self._orders.pop(order_id, None)
            self._ended[order_id] = event.occurred_at
            return
        self._orders[order_id] = _Order(self._stall_deadline(event), last=event)

    def known(self, order_ids: set[uuid.UUID], now: datetime) -> None:
        """Note orders the read model knows: their submissions were accepted."""
        for order_id in order_ids:
            self._accepted[order_id] = now
            self._submissions.pop(order_id, None)

    def postpone(self, order_ids: list[uuid.UUID], now: datetime) -> None:
        """Look at these submissions again later (the read model could not be asked)."""
        for order_id in order_ids:
            submission = self._submissions.get(order_id)
            if submission is not None:
                submission.due_at = now + self.submit_after

    def overdue_submissions(self, now: datetime) -> list[uuid.UUID]:
        """Return the orders whose submission is due to be looked at (and maybe resent)."""
        return [oid for oid, s in self._submissions.items() if s.due_at <= now]

    def due(self, now: datetime) -> Due:
        """Return what is due at ``now`` and schedule the next look at each."""
        resubmit: list[SubmitOrder] = []
        resume: list[Event] = []
        given_up: list[str] = []
        for order_id, submission in list(self._submissions.items()):
            if submission.due_at > now or submission.command is None:
                continue
            if submission.attempts >= self.max_attempts:
                del self._submissions[order_id]
                given_up.append(
                    f"order {order_id}: submitted again {submission.attempts} times, never accepted"
                )
                continue
            submission.attempts += 1
            submission.due_at = now + self.submit_after
            resubmit.append(submission.command)
        for order_id, order in list(self._orders.items()):
            if order.due_at > now or order.last is None:
                continue
            if order.attempts >= self.max_attempts:
                del self._orders[order_id]
                given_up.append(
                    f"order {order_id}: still {order.last.status} at #{order.last.seq} "
                    f"after {order.attempts} resumes"
                )
                continue
            order.attempts += 1
            order.due_at = now + self.stall_after
            resume.append(order.last)
        return Due(tuple(resubmit), tuple(resume), tuple(given_up))

    def forget_before(self, horizon: datetime) -> None:
        """Drop accepted and ended ids older than ``horizon``: nothing late follows them."""
        for memory in (self._accepted, self._ended):
            for order_id in [oid for oid, at in memory.items() if at < horizon]:
                del memory[order_id]

    @property
    def watching(self) -> tuple[int, int]:
        """Return how many submissions and running orders are watched."""
        return len(self._submissions), len(self._orders)

    def _stall_deadline(self, event: Event) -> datetime:
        if event.status in WAITING:
            return datetime.max.replace(tzinfo=event.occurred_at.tzinfo)
        since = event.occurred_at
        if isinstance(event, SwapAttemptFailed):
            since = max(since, event.retry_at)
        return since + self.stall_after
