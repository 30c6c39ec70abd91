"""The engine's message handling, independent of faust so it can be tested directly.

Rules that make the engine safe under at-least-once delivery and crashes:

* Events are folded into the engine's state only as they are consumed from the
  log, never when emitted. The log order is the truth: when a crash makes the
  engine emit a second event with a sequence number the log already holds, the
  first occurrence wins here exactly as it does in every other consumer.
* Each order remembers the last sequence it reacted to (``reacted_seq``). A
  redelivered event whose reaction was recorded is a no-op; one whose reaction
  was not recorded (crash in between) is reacted to again, and every reaction is
  idempotent (deterministic event ids, venue lookups by client reference).
* One order is handled by one coroutine at a time (a per-order lock), so events
  of an order are processed strictly in order while other orders run alongside.
* A message counts as handled only once its effect is on the log: ``on_command``
  answers False for a command it keeps for later (one that names an order version
  not folded yet), and reports it through ``settle`` once decided, so the engine
  never commits past a command it still holds in memory.
* An order is forgotten ``retention`` after it ended. Its messages can only come
  again from the uncommitted end of the log, seconds old, so a redelivered one
  still finds the order.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from adapters.locks import KeyedLocks
from adapters.logs import bind
from domain.lifecycle import IllegalTransition, OrderState, decide, evolve
from events.messages import (
    Command,
    DeadLetter,
    DecodeError,
    Event,
    Frozen,
    ResumeOrder,
    decode,
    decode_event,
    encode,
    order_key,
)
from services.engine.executor import Executor

log = logging.getLogger(__name__)


class EngineRecord(Frozen):
    """What the engine keeps per order in its changelog-backed table."""

    state: OrderState
    reacted_seq: int = 0


class Position(Frozen):
    """Where a message came from on the log."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    # The assignment the message was admitted in (see ``ledger.Ticket``).
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class _Early:
    event: Event
    raw: bytes
    where: Position
    since: float  # monotonic


@dataclass(frozen=True, slots=True)
class _Deferred:
    command: Command
    where: Position
    since: float  # monotonic


Emit = Callable[[Event], Awaitable[None]]
EmitDeadLetter = Callable[[DeadLetter], Awaitable[None]]
Settle = Callable[[Position], None]
# Told of every message the processor decodes, and whether it is news (an event folded
# for the first time): metrics count the one and time the order's steps from the other.
Observe = Callable[[Command | Event, bool], None]


class OrderProcessor:
    """Turn commands and order events into the next order events."""

    def __init__(
        self,
        table: MutableMapping[bytes, bytes],
        executor: Executor,
        emit: Emit,
        emit_dead_letter: EmitDeadLetter,
        clock: Callable[[], datetime],
        settle: Settle = lambda _where: None,
        retention: timedelta = timedelta(minutes=10),
        monotonic: Callable[[], float] = time.monotonic,
        observe: Observe = lambda _message, _new: None,
        forget: Callable[[bytes], None] | None = None,
    ) -> None:
        self._table = table
        # How to drop a record from the table: faust's own ``del`` works only while a
        # message of the key's partition is handled, never from a timer.
        self._forget = forget or (lambda key: self._table.pop(key, None) and None)
        self._observe = observe
        # The table's records, decoded once: the table (and its changelog) is what
        # survives a crash, this is what every message reads.
        self._records: dict[bytes, EngineRecord] = {}
        # Commands naming an order version this engine has not folded yet, by order.
        self._deferred: dict[uuid.UUID, list[_Deferred]] = {}
        # Events that came before an event they follow, by order and sequence number.
        self._early: dict[uuid.UUID, dict[int, _Early]] = {}
        self._settle = settle
        self._retention = retention
        self._monotonic = monotonic
        self._executor = executor
        self._emit = emit
        self._emit_dead_letter = emit_dead_letter
        self._clock = clock
        self._locks = KeyedLocks()

    def record(self, order_id: uuid.UUID) -> EngineRecord | None:
        """Return what the engine knows of an order, if anything."""
        return self._record(order_key(order_id))

    def _record(self, key: bytes) -> EngineRecord | None:
        record = self._records.get(key)
        if record is None:
            # Not decoded yet: recovered from the changelog, or never seen.
            raw = self._table.get(key)
            if raw is None:
                return None
            record = self._records[key] = EngineRecord.model_validate_json(raw)
        return record

    def _store(self, record: EngineRecord) -> None:
        key = order_key(record.state.order_id)
        self._records[key] = record
        self._table[key] = record.model_dump_json().encode()

    def drop_partitions(self, partitions: set[tuple[str, int]]) -> int:
        """Drop the deferred commands and early events read from ``partitions``.

        Neither was settled, so whoever is assigned the partition next reads them
        again from the group's committed offset. Return how many were dropped.
        """
        dropped = 0
        for order_id in list(self._deferred):
            kept = [
                w
                for w in self._deferred[order_id]
                if (w.where.topic, w.where.partition) not in partitions
            ]
            dropped += len(self._deferred[order_id]) - len(kept)
            if kept:
                self._deferred[order_id] = kept
            else:
                del self._deferred[order_id]
        for order_id in list(self._early):
            waiting = self._early[order_id]
            for seq in [
                s for s, e in waiting.items() if (e.where.topic, e.where.partition) in partitions
            ]:
                del waiting[seq]
                dropped += 1
            if not waiting:
                del self._early[order_id]
        if dropped:
            log.info("dropped %d kept messages of revoked partitions", dropped)
        return dropped

    def forget_decoded(self) -> None:
        """Drop the decoded records: after a rebalance the table holds what its
        changelog says, which another engine may have written meanwhile."""
        self._records.clear()

    async def _dead_letter(self, raw: bytes, where: Position, error: str) -> None:
        log.warning(
            "dead-lettering %s[%d]@%d: %s", where.topic, where.partition, where.offset, error
        )
        await self._emit_dead_letter(
            DeadLetter(
                source_topic=where.topic,
                partition=where.partition,
                offset=where.offset,
                key=where.key.decode(errors="replace") if where.key is not None else None,
                value=raw.decode(errors="replace"),
                error=error[:2000],
                occurred_at=self._clock(),
            )
        )

    async def on_command(self, raw: bytes, where: Position) -> bool:
        """Handle one message from the commands topic; False: kept, settled later."""
        try:
            command = decode(raw)
        except DecodeError as exc:
            await self._dead_letter(raw, where, f"undecodable command: {exc}")
            return True
        if not isinstance(command, Command):
            await self._dead_letter(raw, where, f"{command.type} is not a command")
            return True
        self._observe(command, False)
        with bind(command.order_id, command.correlation_id):
            return await self._handle(command, where)

    async def _handle(self, command: Command, where: Position) -> bool:
        if isinstance(command, ResumeOrder):
            # The sweeper saw the order stall after this event: handle it as the event
            # delivered again (folded if it never was, reacted to if that never happened).
            log.warning(
                "resuming order %s at #%d: %s", command.order_id, command.seq, command.reason
            )
            return await self._apply(command.event, encode(command.event), where)
        async with self._locks.hold(command.order_id):
            record = self.record(command.order_id)
            if command.seq > (record.state.seq if record else 0):
                self._defer(command, where)
                return False
            await self._decide(record, command)
        return True

    def _defer(self, command: Command, where: Position) -> None:
        """Keep a command until this engine folds the order version it names.

        A trigger is written by a process that read the order armed on the log,
        possibly before this engine's own lifecycle agent folded that event; decided
        against the older state, it would be lost. The command stays unsettled, so
        the engine's position on the log cannot pass it: after a crash it comes again.
        """
        waiting = _Deferred(command, where, self._monotonic())
        self._deferred.setdefault(command.order_id, []).append(waiting)

    @property
    def deferred(self) -> int:
        """Count the commands kept until their order reaches the version they name."""
        return sum(len(waiting) for waiting in self._deferred.values())

    async def expire_deferred(self, older_than_s: float) -> int:
        """Decide commands kept longer than ``older_than_s`` against the state as it is.

        The version such a command names should have been folded long ago; deciding it
        now (normally a no-op: a trigger for a version the order is not at) lets the
        engine's position move on. Return how many were decided.
        """
        now = self._monotonic()
        stale = [
            order_id
            for order_id, waiting in self._deferred.items()
            if any(now - w.since > older_than_s for w in waiting)
        ]
        decided = 0
        for order_id in stale:
            async with self._locks.hold(order_id):
                waiting = self._deferred.get(order_id, [])
                overdue = [w for w in waiting if now - w.since > older_than_s]
                rest = [w for w in waiting if w not in overdue]
                if rest:
                    self._deferred[order_id] = rest
                else:
                    self._deferred.pop(order_id, None)
                record = self.record(order_id)
                for item in overdue:
                    log.warning(
                        "%s of %s waited %.0fs for version %d (the engine has %d); "
                        "deciding it against the order as it stands",
                        item.command.type,
                        order_id,
                        now - item.since,
                        item.command.seq,
                        record.state.seq if record else 0,
                    )
                    await self._decide(record, item.command)
                    self._settle(item.where)
                    decided += 1
        return decided

    async def _decide(self, record: EngineRecord | None, command: Command) -> None:
        for event in decide(record.state if record else None, command, self._clock()):
            await self._emit(event)

    async def _run_deferred(self, record: EngineRecord) -> None:
        """Decide the deferred commands of an order that has reached their version."""
        waiting = self._deferred.get(record.state.order_id)
        if not waiting:
            return
        due = [w for w in waiting if w.command.seq <= record.state.seq]
        rest = [w for w in waiting if w.command.seq > record.state.seq]
        if rest:
            self._deferred[record.state.order_id] = rest
        else:
            del self._deferred[record.state.order_id]
        for item in due:
            await self._decide(record, item.command)
            self._settle(item.where)

    async def on_event(self, raw: bytes, where: Position) -> bool:
        """Handle one message from the order-events topic: fold it, then react.

        Return False when the event came before one it follows (it is kept, and settled
        once folded); True when it is settled now.
        """
        try:
            event = decode_event(raw)
        except DecodeError as exc:
            await self._dead_letter(raw, where, f"undecodable event: {exc}")
            return True
        self._observe(event, False)
        with bind(event.order_id, event.correlation_id):
            return await self._apply(event, raw, where)

    async def _apply(self, event: Event, raw: bytes, where: Position) -> bool:
        """Fold ``event`` (or keep it, if it came early) and then fold what it was keeping."""
        async with self._locks.hold(event.order_id):
            record = self.record(event.order_id)
            if event.seq > (record.state.seq if record else 0) + 1:
                self._hold_early(event, raw, where)
                return False
            await self._fold_and_react(event, raw, where)
            await self._fold_early(event.order_id)
        return True

    def _hold_early(self, event: Event, raw: bytes, where: Position) -> None:
        """Keep an event whose predecessor this engine has not folded yet.

        Messages of one partition can reach the engine out of order: after a restart a
        fetch may skip some (the intake seeks back to them within a second), and many
        actors share the stream. Folded now, it would be an illegal transition; kept
        unsettled, the engine's position cannot pass it.
        """
        waiting = self._early.setdefault(event.order_id, {})
        waiting[event.seq] = _Early(event, raw, where, self._monotonic())

    @property
    def early(self) -> int:
        """Count the events kept until the events before them are folded."""
        return sum(len(waiting) for waiting in self._early.values())

    async def _fold_early(self, order_id: uuid.UUID) -> None:
        """Fold the kept events of an order that now follow on, in order; settle each."""
        waiting = self._early.get(order_id)
        while waiting:
            record = self.record(order_id)
            item = waiting.pop((record.state.seq if record else 0) + 1, None)
            if item is None:
                break
            await self._fold_and_react(item.event, item.raw, item.where)
            self._settle(item.where)
        if not waiting:
            self._early.pop(order_id, None)

    async def expire_early(self, older_than_s: float) -> int:
        """Fold events kept longer than ``older_than_s`` as they stand (a missing
        predecessor makes them dead letters); return how many."""
        now = self._monotonic()
        expired = 0
        stale = [
            order_id
            for order_id, waiting in self._early.items()
            if any(now - item.since > older_than_s for item in waiting.values())
        ]
        for order_id in stale:
            async with self._locks.hold(order_id):
                waiting = self._early.pop(order_id, {})
                for seq in sorted(waiting):
                    item = waiting[seq]
                    log.warning(
                        "%s #%d of %s waited %.0fs for the events before it; folding it as is",
                        item.event.type,
                        seq,
                        order_id,
                        now - item.since,
                    )
                    await self._fold_and_react(item.event, item.raw, item.where)
                    self._settle(item.where)
                    expired += 1
        return expired

    async def _fold_and_react(self, event: Event, raw: bytes, where: Position) -> None:
        """Fold ``event`` unless it was, then perform its step unless that happened."""
        record = self.record(event.order_id)
        if record is not None and event.seq < record.state.seq:
            return  # an old event redelivered: its successors are already folded
        if record is None or event.seq > record.state.seq:
            try:
                state = evolve(record.state if record else None, event)
            except IllegalTransition as exc:
                await self._dead_letter(raw, where, f"illegal transition: {exc}")
                return
            # Stored once, with the reaction below: should the engine die in
            # between, the event is not settled and comes again to be folded anew.
            record = EngineRecord(state=state, reacted_seq=record.reacted_seq if record else 0)
            self._observe(event, True)
            await self._run_deferred(record)
        if record.reacted_seq >= event.seq:
            return  # a duplicate of an event this engine already reacted to (and stored)
        try:
            following = await self._executor.react(record.state, event)
        except Exception as exc:
            # A bug or an unforeseen venue answer must end the order visibly,
            # never leave it stalled in a non-terminal status.
            log.exception("step after %s of order %s crashed", event.type, event.order_id)
            following = self._executor.fail(record.state, event, "ENGINE_ERROR", repr(exc))
        if following is not None:
            await self._emit(following)
        self._store(record.model_copy(update={"reacted_seq": event.seq}))

    def retire(self, now: datetime) -> int:
        """Forget orders that ended more than the retention ago; return how many.

        Their messages come again only from the uncommitted end of the log (seconds),
        so nothing can ask about them any more: a late duplicate submission is stopped
        at the gateway by the read model, and a stray trigger finds no armed order.
        """
        horizon = now - self._retention
        retired = 0
        for key in list(self._table.keys()):
            record = self._record(key)
            if record is None:
                continue
            if record.state.terminal and record.state.updated_at < horizon:
                if record.state.order_id in self._deferred or record.state.order_id in self._early:
                    continue
                self._forget(key)
                self._records.pop(key, None)
                retired += 1
        return retired
