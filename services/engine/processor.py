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
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime

from adapters.locks import KeyedLocks
from domain.lifecycle import IllegalTransition, OrderState, decide, evolve
from events.messages import (
    Command,
    DeadLetter,
    DecodeError,
    Event,
    Frozen,
    decode,
    decode_event,
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


Emit = Callable[[Event], Awaitable[None]]
EmitDeadLetter = Callable[[DeadLetter], Awaitable[None]]


class OrderProcessor:
    """Turn commands and order events into the next order events."""

    def __init__(
        self,
        table: MutableMapping[bytes, bytes],
        executor: Executor,
        emit: Emit,
        emit_dead_letter: EmitDeadLetter,
        clock: Callable[[], datetime],
        max_deferred: int = 100_000,
    ) -> None:
        self._table = table
        # Commands naming an order version this engine has not folded yet, by order.
        self._deferred: OrderedDict[uuid.UUID, list[Command]] = OrderedDict()
        self._max_deferred = max_deferred
        self._executor = executor
        self._emit = emit
        self._emit_dead_letter = emit_dead_letter
        self._clock = clock
        self._locks = KeyedLocks()

    def record(self, order_id: uuid.UUID) -> EngineRecord | None:
        """Return what the engine knows of an order, if anything."""
        raw = self._table.get(order_key(order_id))
        return EngineRecord.model_validate_json(raw) if raw is not None else None

    def _store(self, record: EngineRecord) -> None:
        self._table[order_key(record.state.order_id)] = record.model_dump_json().encode()

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

    async def on_command(self, raw: bytes, where: Position) -> None:
        """Handle one message from the commands topic."""
        try:
            command = decode(raw)
        except DecodeError as exc:
            await self._dead_letter(raw, where, f"undecodable command: {exc}")
            return
        if not isinstance(command, Command):
            await self._dead_letter(raw, where, f"{command.type} is not a command")
            return
        async with self._locks.hold(command.order_id):
            record = self.record(command.order_id)
            if command.seq > (record.state.seq if record else 0):
                self._defer(command)
                return
            await self._decide(record, command)

    def _defer(self, command: Command) -> None:
        """Keep a command until this engine folds the order version it names.

        A trigger is written by a process that read the order armed on the log,
        possibly before this engine's own lifecycle agent folded that event; decided
        against the older state, it would be lost. Deferred commands live in memory
        only: the trigger service sends a trigger again if it never takes effect.
        """
        self._deferred.setdefault(command.order_id, []).append(command)
        while len(self._deferred) > self._max_deferred:
            dropped, commands = self._deferred.popitem(last=False)
            log.warning("dropping %d deferred command(s) of %s", len(commands), dropped)

    async def _decide(self, record: EngineRecord | None, command: Command) -> None:
        for event in decide(record.state if record else None, command, self._clock()):
            await self._emit(event)

    async def _run_deferred(self, record: EngineRecord) -> None:
        """Decide the deferred commands of an order that has reached their version."""
        waiting = self._deferred.get(record.state.order_id)
        if not waiting:
            return
        due = [c for c in waiting if c.seq <= record.state.seq]
        rest = [c for c in waiting if c.seq > record.state.seq]
        if rest:
            self._deferred[record.state.order_id] = rest
        else:
            del self._deferred[record.state.order_id]
        for command in due:
            await self._decide(record, command)

    async def on_event(self, raw: bytes, where: Position) -> None:
        """Handle one message from the order-events topic: fold it, then react."""
        try:
            event = decode_event(raw)
        except DecodeError as exc:
            await self._dead_letter(raw, where, f"undecodable event: {exc}")
            return
        async with self._locks.hold(event.order_id):
            record = self.record(event.order_id)
            if record is not None and event.seq < record.state.seq:
                return  # an old event redelivered: its successors are already folded
            if record is None or event.seq > record.state.seq:
                try:
                    state = evolve(record.state if record else None, event)
                except IllegalTransition as exc:
                    await self._dead_letter(raw, where, f"illegal transition: {exc}")
                    return
                record = EngineRecord(state=state, reacted_seq=record.reacted_seq if record else 0)
                self._store(record)
                await self._run_deferred(record)
            if record.reacted_seq >= event.seq:
                return  # a duplicate of an event this engine already reacted to
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
