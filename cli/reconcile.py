"""Reconcile the log, the read models and the venues' ledger: what ``replay --check`` cannot see.

Pure: the sources come in decoded (``Sources``), the time is given, and the answer is
an ``AuditReport`` listing every problem found. ``cli.audit`` reads the sources and
prints the report.

The events are folded as every consumer folds them: per order, in log order, an
event at or below the seq reached is a duplicate (the first occurrence won), and one
that ``check_next`` refuses is skipped. Ages count from when a record reached the
log (its timestamp). Records younger than the grace period are in flight: they set
no expectation yet.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, Literal, TypeVar, get_args

from pydantic import AwareDatetime, computed_field

from adapters.venues.interface import LedgerEntry
from domain.lifecycle import TRANSITIONS, IllegalTransition, check_next
from events.messages import (
    CancelOrder,
    Command,
    DeadLetter,
    Event,
    ExpireOrder,
    Frozen,
    OrderAccepted,
    OrderConfirmed,
    Status,
    SubmitOrder,
    SwapAttemptFailed,
    TriggerOrder,
)
from projections.heads import Head, ReadModelHeads

ProblemKind = Literal[
    # A SubmitOrder on the log that the engine never accepted.
    "not_accepted",
    # Order events with no SubmitOrder on the commands topic.
    "not_submitted",
    # A TriggerOrder, CancelOrder or ExpireOrder naming the armed version the order
    # is still at: the engine should have answered it.
    "unanswered_command",
    # A non-terminal order that should have moved on by now.
    "stalled",
    # A gap or an illegal transition in an order's events.
    "bad_sequence",
    # A read-model row missing, behind, ahead of or different from the log's fold.
    "read_model",
    # A message some consumer could not take (one problem per dead letter).
    "dead_letter",
    # A record that does not decode and that no consumer dead-lettered.
    "undecodable",
    # A swap that landed on a venue for an order not confirmed with it.
    "swap_without_order",
    # An order with more than one landed swap.
    "executed_twice",
]
PROBLEM_KINDS: tuple[str, ...] = get_args(ProblemKind)

M = TypeVar("M")


class Position(Frozen):
    """Where a record sits on the log."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class Logged(Generic[M]):
    """A record of a topic, decoded: its message, or why it is not one."""

    position: Position
    logged_at: datetime
    item: M | str


@dataclass(frozen=True)
class Sources:
    """Everything the audit compares, decoded.

    ``read_models`` has a table only when it exists; ``ledger`` is None when it could
    not be read, and ``skipped`` says why.
    """

    commands: Sequence[Logged[Command]] = ()
    events: Sequence[Logged[Event]] = ()
    dead_letters: Sequence[Logged[DeadLetter]] = ()
    read_models: ReadModelHeads = field(default_factory=dict)
    ledger: Sequence[LedgerEntry] | None = None
    skipped: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    """How long the audit waits: records younger than ``grace`` are in flight, and a live
    order may keep one status for ``stall`` (an armed or retrying one, past its due time)."""

    grace: timedelta = timedelta(seconds=30)
    stall: timedelta = timedelta(seconds=120)


DEFAULT_LIMITS = Limits()


class Problem(Frozen):
    """One thing the audit found wrong."""

    kind: ProblemKind
    detail: str
    order_id: uuid.UUID | None = None
    # The record the problem is about, and since when it is one: when that record reached
    # the log, or the expiry or retry that fell due.
    position: Position | None = None
    since: AwareDatetime | None = None


class Coverage(Frozen):
    """What the audit read."""

    commands: dict[str, int]
    events: int
    duplicate_events: int
    dead_letters: int
    # Orders with at least one event, by the status the log's fold gives them.
    orders: dict[str, int]
    # Rows (orders, for the audit trail) per read-model table that exists.
    read_models: dict[str, int]
    ledger_swaps: int | None
    skipped: dict[str, str]


class AuditReport(Frozen):
    """Every problem found, and what was read to find them."""

    checked_at: AwareDatetime
    grace_s: float
    stall_s: float
    coverage: Coverage
    problems: tuple[Problem, ...]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def clean(self) -> bool:
        return not self.problems

    @computed_field  # type: ignore[prop-decorator]
    @property
    def problem_counts(self) -> dict[str, int]:
        counts: Counter[str] = Counter(p.kind for p in self.problems)
        return {kind: counts[kind] for kind in PROBLEM_KINDS if counts[kind]}


# The fold of the events ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Version:
    status: Status
    seq: int


@dataclass
class Track:
    """One order as the log's events make it, with what the checks need."""

    order_id: uuid.UUID
    # Per seq n, at index n - 1: the status after it, when and where it was logged.
    statuses: list[Status] = field(default_factory=list)
    logged: list[datetime] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)
    expires_at: datetime | None = None
    retry_at: datetime | None = None
    confirmed_tx: str | None = None
    # Events check_next refused, with why (and the seq and status they came after).
    refused: list[tuple[Logged[Event], Event, str]] = field(default_factory=list)

    @property
    def seq(self) -> int:
        return len(self.statuses)

    @property
    def status(self) -> Status | None:
        return self.statuses[-1] if self.statuses else None

    @property
    def terminal(self) -> bool:
        return self.status is not None and not TRANSITIONS[self.status]

    @property
    def version(self) -> _Version | None:
        """Return the order's status and seq, None before its first event."""
        return _Version(self.statuses[-1], self.seq) if self.statuses else None

    def settled_seq(self, cutoff: datetime) -> int:
        """Return the highest seq whose event reached the log at or before ``cutoff``."""
        if self.logged and self.logged[-1] <= cutoff:
            return len(self.logged)
        return max((n for n, at in enumerate(self.logged, 1) if at <= cutoff), default=0)

    def apply(self, logged: Logged[Event], event: Event) -> None:
        self.statuses.append(event.status)
        self.logged.append(logged.logged_at)
        self.positions.append(logged.position)
        self.retry_at = event.retry_at if isinstance(event, SwapAttemptFailed) else None
        if isinstance(event, OrderAccepted):
            self.expires_at = event.spec.expires_at
        elif isinstance(event, OrderConfirmed):
            self.confirmed_tx = event.tx_hash


@dataclass
class Fold:
    """Every order of the events topic, and what did not fold."""

    orders: dict[uuid.UUID, Track] = field(default_factory=dict)
    duplicates: int = 0
    undecodable: list[Logged[Event]] = field(default_factory=list)


def fold_log(events: Iterable[Logged[Event]]) -> Fold:
    """Fold the events as consumers do: first occurrence wins, refused events skipped."""
    result = Fold()
    for logged in events:
        event = logged.item
        if isinstance(event, str):
            result.undecodable.append(logged)
            continue
        track = result.orders.get(event.order_id)
        if track is None:
            track = result.orders[event.order_id] = Track(event.order_id)
        if event.seq <= track.seq:
            result.duplicates += 1
            continue
        try:
            check_next(track.version, event)
        except IllegalTransition as exc:
            why = f"after seq {track.seq} ({track.status or 'no order'}): {exc}"
            track.refused.append((logged, event, why))
            continue
        track.apply(logged, event)
    return result


# The checks --------------------------------------------------------------------------


def _order_id(text: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(text) if text else None
    except ValueError:
        return None


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _submissions(
    commands: Sequence[Logged[Command]], orders: Mapping[uuid.UUID, Track], cutoff: datetime
) -> list[Problem]:
    """Report submissions never accepted, and orders with events that nobody submitted."""
    first: dict[uuid.UUID, Logged[Command]] = {}
    for logged in commands:
        if isinstance(logged.item, SubmitOrder):
            first.setdefault(logged.item.order_id, logged)
    problems = []
    for order_id, logged in first.items():
        track = orders.get(order_id)
        if (track is None or not track.seq) and logged.logged_at <= cutoff:
            problems.append(
                Problem(
                    kind="not_accepted",
                    detail=f"SubmitOrder logged at {_iso(logged.logged_at)} has no OrderAccepted",
                    order_id=order_id,
                    position=logged.position,
                    since=logged.logged_at,
                )
            )
    for track in orders.values():
        if track.seq and track.order_id not in first:
            problems.append(
                Problem(
                    kind="not_submitted",
                    detail=f"{track.seq} event(s) on the log but no SubmitOrder",
                    order_id=track.order_id,
                    position=track.positions[0],
                    since=track.logged[0],
                )
            )
    return problems


def _unanswered(
    commands: Sequence[Logged[Command]], orders: Mapping[uuid.UUID, Track], cutoff: datetime
) -> list[Problem]:
    """Report commands naming the armed version their order is still at.

    ``decide`` answers such a command with an event (an expiry, only for an order that
    has an ``expires_at``); a command for an earlier version is a no-op.
    """
    problems: dict[uuid.UUID, Problem] = {}
    for logged in commands:
        command = logged.item
        if not isinstance(command, TriggerOrder | CancelOrder | ExpireOrder):
            continue
        track = orders.get(command.order_id)
        if (
            track is None
            or track.status != "armed"
            or track.seq != command.seq
            or logged.logged_at > cutoff
            or command.order_id in problems
            or (isinstance(command, ExpireOrder) and track.expires_at is None)
        ):
            continue
        problems[command.order_id] = Problem(
            kind="unanswered_command",
            detail=f"{command.type} for armed version {command.seq} got no answer: "
            "the order is still armed at that version",
            order_id=command.order_id,
            position=logged.position,
            since=logged.logged_at,
        )
    return list(problems.values())


def _stalled(orders: Mapping[uuid.UUID, Track], now: datetime, stall: timedelta) -> list[Problem]:
    """Report orders that are neither ended nor legitimately waiting.

    An armed order waits for its condition, until its expiry; a retrying one until its
    ``retry_at``. Every other live status should move on within ``stall``.
    """
    problems = []
    for track in orders.values():
        if not track.seq or track.terminal:
            continue
        last = track.logged[-1]
        if track.status == "armed":
            if track.expires_at is None or now - track.expires_at <= stall:
                continue
            since, detail = track.expires_at, f"armed past its expiry at {_iso(track.expires_at)}"
        elif track.status == "retrying" and track.retry_at is not None and track.retry_at > last:
            if now - track.retry_at <= stall:
                continue
            since, detail = track.retry_at, f"retrying, its retry due at {_iso(track.retry_at)}"
        else:
            if now - last <= stall:
                continue
            since, detail = last, f"{track.status} since {_iso(last)}"
        problems.append(
            Problem(
                kind="stalled",
                detail=f"{detail} (seq {track.seq}), over {stall.total_seconds():.0f}s ago",
                order_id=track.order_id,
                position=track.positions[-1],
                since=since,
            )
        )
    return problems


def _sequences(orders: Mapping[uuid.UUID, Track]) -> list[Problem]:
    """Report every order some of whose events ``check_next`` refused (the first, and how many)."""
    problems = []
    for track in orders.values():
        if not track.refused:
            continue
        logged, event, why = track.refused[0]
        more = len(track.refused) - 1
        problems.append(
            Problem(
                kind="bad_sequence",
                detail=f"{event.type} seq {event.seq} refused {why}"
                + (f"; {more} more refused" if more else ""),
                order_id=track.order_id,
                position=logged.position,
                since=logged.logged_at,
            )
        )
    return problems


def _behind(table: str, head: Head | None, track: Track, cutoff: datetime) -> Problem | None:
    """Compare one order's row in ``table`` with the log's fold of it."""
    if (
        head is not None
        and head.seq == track.seq
        and head.status in (None, track.status)
        and head.events in (None, head.seq)
    ):
        return None  # in step with the log, as nearly every row is
    settled = track.settled_seq(cutoff)
    log_side = f"the log has seq {track.seq} ({track.status})"
    if head is None:
        detail = f"missing from {table}; {log_side}" if settled else None
        first_missing = 1
    elif head.seq > track.seq:
        detail, first_missing = f"{table} is at seq {head.seq}, beyond the log; {log_side}", 0
    elif head.seq < settled:
        detail, first_missing = f"{table} is behind at seq {head.seq}; {log_side}", head.seq + 1
    elif head.events is not None and head.events != head.seq:
        detail = f"{table} holds {head.events} events up to seq {head.seq}: some are missing"
        first_missing = 1
    elif head.status is not None and head.status != track.statuses[head.seq - 1]:
        detail = (
            f"{table} says {head.status} at seq {head.seq}, the log {track.statuses[head.seq - 1]}"
        )
        first_missing = head.seq
    else:
        detail = None
    if detail is None:
        return None
    # The first event the row does not reflect, when there is one on the log.
    where = first_missing - 1 if 0 < first_missing <= track.seq else None
    return Problem(
        kind="read_model",
        detail=detail,
        order_id=track.order_id,
        position=track.positions[where] if where is not None else None,
        since=track.logged[where] if where is not None else None,
    )


def _read_models(
    read_models: ReadModelHeads, orders: Mapping[uuid.UUID, Track], cutoff: datetime
) -> list[Problem]:
    """Report rows missing, behind, ahead of or different from the log's fold.

    A row may lag behind events younger than the grace period, not behind older ones.
    """
    problems = []
    for table, heads in read_models.items():
        for track in orders.values():
            if track.seq and (problem := _behind(table, heads.get(track.order_id), track, cutoff)):
                problems.append(problem)
        problems += [
            Problem(
                kind="read_model",
                detail=f"{table} holds seq {head.seq} of an order with no events on the log",
                order_id=order_id,
            )
            for order_id, head in heads.items()
            if order_id not in orders or not orders[order_id].seq
        ]
    return problems


def _dead_letters(dead_letters: Sequence[Logged[DeadLetter]]) -> list[Problem]:
    """Report every dead letter, at the position of the message it holds; copies once."""
    problems = []
    copies: Counter[tuple[str, int, int, str]] = Counter()
    first: dict[tuple[str, int, int, str], Logged[DeadLetter]] = {}
    for logged in dead_letters:
        letter = logged.item
        if isinstance(letter, str):
            problems.append(
                Problem(
                    kind="dead_letter",
                    detail=f"undecodable dead letter: {letter}",
                    position=logged.position,
                    since=logged.logged_at,
                )
            )
            continue
        key = (letter.source_topic, letter.partition, letter.offset, letter.error)
        copies[key] += 1
        first.setdefault(key, logged)
    for key, logged in first.items():
        letter = logged.item
        assert not isinstance(letter, str)
        times = f" ({copies[key]} copies)" if copies[key] > 1 else ""
        problems.append(
            Problem(
                kind="dead_letter",
                detail=f"dead-lettered at {logged.position}{times}: {letter.error}",
                order_id=_order_id(letter.key),
                position=Position(
                    topic=letter.source_topic, partition=letter.partition, offset=letter.offset
                ),
                since=logged.logged_at,
            )
        )
    return problems


def _undecodable(
    records: Iterable[Logged[Command] | Logged[Event]],
    dead_letters: Sequence[Logged[DeadLetter]],
    cutoff: datetime,
) -> list[Problem]:
    """Report records that do not decode and that no consumer dead-lettered in time."""
    lettered = {
        (letter.source_topic, letter.partition, letter.offset)
        for letter in (logged.item for logged in dead_letters)
        if not isinstance(letter, str)
    }
    return [
        Problem(
            kind="undecodable",
            detail=f"not dead-lettered: {logged.item}",
            position=logged.position,
            since=logged.logged_at,
        )
        for logged in records
        if isinstance(logged.item, str)
        and logged.logged_at <= cutoff
        and (logged.position.topic, logged.position.partition, logged.position.offset)
        not in lettered
    ]


def _unconfirmed(entry: LedgerEntry, track: Track | None, cutoff: datetime) -> str | None:
    """Return why a landed swap has no order confirmed with it, or None when it has one
    (or its order is still in flight)."""
    if track is None or not track.seq:
        return "no order of that client_ref has events on the log"
    if track.confirmed_tx == entry.tx_hash:
        return None
    if track.status == "confirmed":
        return f"its order was confirmed with another transaction, {track.confirmed_tx}"
    if track.terminal:
        return f"its order ended {track.status}"
    in_flight = track.logged[-1] > cutoff or (
        track.retry_at is not None and track.retry_at > cutoff
    )
    return None if in_flight else f"its order is {track.status} since {_iso(track.logged[-1])}"


def _ledger(
    ledger: Sequence[LedgerEntry], orders: Mapping[uuid.UUID, Track], cutoff: datetime
) -> list[Problem]:
    """Report landed swaps whose order is not confirmed with them, and orders that
    landed more than one swap."""
    problems = []
    landed: dict[uuid.UUID, list[LedgerEntry]] = {}
    for entry in (e for e in ledger if e.status == "confirmed"):
        # The engine's client reference is "<order id>:<attempt>".
        order_id = _order_id(entry.client_ref.split(":", 1)[0])
        if order_id is not None:
            landed.setdefault(order_id, []).append(entry)
        why = _unconfirmed(entry, orders.get(order_id) if order_id else None, cutoff)
        if why is not None:
            problems.append(
                Problem(
                    kind="swap_without_order",
                    detail=f"{entry.venue} swap {entry.client_ref} (tx {entry.tx_hash}) "
                    f"landed, but {why}",
                    order_id=order_id,
                )
            )
    problems += [
        Problem(
            kind="executed_twice",
            detail=f"{len(entries)} swaps landed: "
            + ", ".join(f"{e.venue} {e.client_ref} (tx {e.tx_hash})" for e in entries),
            order_id=order_id,
        )
        for order_id, entries in landed.items()
        if len(entries) > 1
    ]
    return problems


def _sort_key(problem: Problem) -> tuple[int, str, str, int, int]:
    where = problem.position
    return (
        PROBLEM_KINDS.index(problem.kind),
        str(problem.order_id or ""),
        where.topic if where else "",
        where.partition if where else -1,
        where.offset if where else -1,
    )


def reconcile(sources: Sources, now: datetime, limits: Limits = DEFAULT_LIMITS) -> AuditReport:
    """Return every problem the sources show as of ``now``, and what was read."""
    folded = fold_log(sources.events)
    orders = folded.orders
    cutoff = now - limits.grace
    problems = [
        *_submissions(sources.commands, orders, cutoff),
        *_unanswered(sources.commands, orders, cutoff),
        *_stalled(orders, now, limits.stall),
        *_sequences(orders),
        *_read_models(sources.read_models, orders, cutoff),
        *_dead_letters(sources.dead_letters),
        *_undecodable([*sources.commands, *folded.undecodable], sources.dead_letters, cutoff),
        *(_ledger(sources.ledger, orders, cutoff) if sources.ledger is not None else ()),
    ]
    commands = Counter(
        "undecodable" if isinstance(logged.item, str) else logged.item.type
        for logged in sources.commands
    )
    coverage = Coverage(
        commands=dict(sorted(commands.items())),
        events=len(sources.events),
        duplicate_events=folded.duplicates,
        dead_letters=len(sources.dead_letters),
        orders=dict(sorted(Counter(t.status for t in orders.values() if t.status).items())),
        read_models={table: len(heads) for table, heads in sources.read_models.items()},
        ledger_swaps=len(sources.ledger) if sources.ledger is not None else None,
        skipped=dict(sources.skipped),
    )
    return AuditReport(
        checked_at=now,
        grace_s=limits.grace.total_seconds(),
        stall_s=limits.stall.total_seconds(),
        coverage=coverage,
        problems=tuple(sorted(problems, key=_sort_key)),
    )
