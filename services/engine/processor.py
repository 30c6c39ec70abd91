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

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime

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
from services.common.locks import KeyedLocks
from services.domain.lifecycle import IllegalTransition, OrderState, decide, evolve
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
        catch_up_s: float = 30.0,
    ) -> None:
        self._table = table
        self._catch_up_s = catch_up_s
        self._executor = executor
        self._emit = emit
        self._emit_dead_letter = emit_dead_letter
        self._clock = clock
        self._locks = KeyedLocks()

    @staticmethod
    def _loop_time() -> float:
        return asyncio.get_running_loop().time()

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
        await self._caught_up_with(command)
        async with self._locks.hold(command.order_id):
            record = self.record(command.order_id)
            for event in decide(record.state if record else None, command, self._clock()):
                await self._emit(event)

    async def _caught_up_with(self, command: Command) -> None:
        """Wait until this engine has folded the order version ``command`` was made against.

        A trigger is written by a process that read the order armed on the log,
        possibly before this engine's own lifecycle agent folded that event; decided
        against the older state, the trigger would be lost. So a command naming a
        version the engine has not reached waits for it (bounded: a command naming a
        version that never comes is then decided against what there is).
        """
        if command.seq == 0:
            return
        deadline = self._loop_time() + self._catch_up_s
        while self._loop_time() < deadline:
            record = self.record(command.order_id)
            if record is not None and record.state.seq >= command.seq:
                return
            await asyncio.sleep(0.02)
        log.warning(
            "%s for %s names version %d, which this engine never reached",
            command.type,
            command.order_id,
            command.seq,
        )

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
