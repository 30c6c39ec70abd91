"""The faust-streaming application of the engine: topics, the order table, two agents.

At-least-once processing (faust's ``exactly_once`` mode has open duplicate bugs
upstream); the handlers in ``processor`` are idempotent instead. Messages travel
as raw bytes and are decoded by ``events.messages`` so that an undecodable one
is dead-lettered by us instead of crashing a faust agent.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import faust

from adapters.settings import Settings
from adapters.venues.interface import Venue
from events.messages import DeadLetter, Event, encode, order_key
from services.engine.executor import Executor, RetryPolicy
from services.engine.processor import OrderProcessor, Position

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    """Return the current UTC time (the engine's default clock)."""
    return datetime.now(UTC)


def _position(event: Any) -> Position:
    message = event.message
    return Position(
        topic=message.topic, partition=message.partition, offset=message.offset, key=message.key
    )


def _crash(exc: BaseException) -> None:
    # The message is not acknowledged, so a restarted worker gets it again; carrying
    # on instead would let faust commit past an order whose next event was never
    # written, stalling that order for good.
    log.critical("engine cannot continue, exiting for a restart: %r", exc)
    logging.shutdown()
    os._exit(70)


async def _drive(
    stream: faust.StreamT[bytes], handle: Callable[[bytes, Position], Awaitable[None]]
) -> None:
    """Feed every message of ``stream`` to ``handle``; an error there ends the worker."""
    async for event in stream.events():
        try:
            await handle(event.value, _position(event))
        except Exception as exc:
            _crash(exc)


def build_app(
    settings: Settings,
    venues: Mapping[str, Venue],
    clock: Callable[[], datetime] = utc_now,
) -> faust.App:
    """Return the engine's faust app wired to ``venues``."""
    datadir = settings.data_dir / "engine" / settings.engine_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.engine_id,
        broker=f"kafka://{settings.bootstrap}",
        store="memory://",
        datadir=str(datadir),
        processing_guarantee="at_least_once",
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.broker_session_timeout_s / 3),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        producer_acks=-1,
        producer_enable_idempotence=True,
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    commands = app.topic(settings.commands_topic, partitions=settings.partitions)
    order_events = app.topic(settings.events_topic, partitions=settings.partitions)
    dead_letters = app.topic(settings.dead_letter_topic, partitions=settings.partitions)
    # bytes types make faust use the raw codec for the changelog; any other type
    # would default to JSON, which cannot read these records back on recovery.
    table = app.Table("orders", partitions=settings.partitions, key_type=bytes, value_type=bytes)

    async def emit(event: Event) -> None:
        # force=True: send now and wait for acks=all, so the event is on the log
        # before the message that caused it is acknowledged.
        sent = await order_events.send(
            key=order_key(event.order_id), value=encode(event), force=True
        )
        await sent

    async def emit_dead_letter(letter: DeadLetter) -> None:
        sent = await dead_letters.send(
            key=letter.key.encode() if letter.key else None, value=encode(letter), force=True
        )
        await sent

    processor = OrderProcessor(
        table=table,
        executor=Executor(
            venues,
            clock,
            quote_timeout_s=settings.venue_timeout_s,
            retry=RetryPolicy(
                settings.retry_max_attempts, settings.retry_base_s, settings.retry_factor
            ),
        ),
        emit=emit,
        emit_dead_letter=emit_dead_letter,
        clock=clock,
    )

    @app.agent(commands, name="commands")
    async def handle_commands(stream: faust.StreamT[bytes]) -> None:
        await _drive(stream, processor.on_command)

    # Many actors share the stream, so slow venue calls of one order do not hold
    # up others; the per-order lock in the processor keeps each order in order.
    @app.agent(order_events, name="lifecycle", concurrency=settings.engine_concurrency)
    async def handle_events(stream: faust.StreamT[bytes]) -> None:
        await _drive(stream, processor.on_event)

    return app
