"""The faust-streaming application of the engine: topics, the order table, two agents.

At-least-once processing (faust's ``exactly_once`` mode has open duplicate bugs
upstream); the handlers in ``processor`` are idempotent instead. Messages travel
as raw bytes and are decoded by ``events.messages`` so that an undecodable one
is dead-lettered by us instead of crashing a faust agent. Every message passes the
``intake`` first, so none is skipped and no commit passes one still in hand.

A restarted engine rejoins its group under the same static member id, so it takes
its partitions back at once instead of waiting for the dead member's session to
expire; its table recovers from a compacted changelog that retention keeps small.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
from aiokafka.partitioner import DefaultPartitioner

from adapters.kafka import client_options, durability
from adapters.metrics import DEAD_LETTERS, EVENTS_CONSUMED, EVENTS_WRITTEN, StepClock
from adapters.ops import Lag, assigned, standard
from adapters.settings import Settings
from adapters.venues.interface import Venue
from events.messages import Command, DeadLetter, Event, encode, order_key
from services.engine.executor import Executor, RetryPolicy
from services.engine.intake import EngineApp, Intake
from services.engine.ledger import Ticket
from services.engine.processor import OrderProcessor, Position

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    """Return the current UTC time (the engine's default clock)."""
    return datetime.now(UTC)


# How often the engine looks for input it was not handed, decides commands it kept
# too long, and (every RETIRE_EVERY ticks) forgets ended orders.
HOUSEKEEPING_EVERY_S = 1.0
RETIRE_EVERY = 60
# The changelog of the order table: compacted soon, so a recovery reads little more
# than the orders still in it.
CHANGELOG_CONFIG = {
    "segment.ms": "60000",
    "min.cleanable.dirty.ratio": "0.1",
    "delete.retention.ms": "60000",
}


def _position(event: Any, ticket: Ticket) -> Position:
    message = event.message
    return Position(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        epoch=ticket.epoch,
    )


def _ticket(where: Position) -> Ticket:
    return Ticket(where.topic, where.partition, where.offset, where.epoch)


def _crash(exc: BaseException) -> None:
    # The message is not acknowledged, so a restarted worker gets it again; carrying
    # on instead would let faust commit past an order whose next event was never
    # written, stalling that order for good.
    log.critical("engine cannot continue, exiting for a restart: %r", exc)
    logging.shutdown()
    os._exit(70)


async def _drive(
    stream: faust.StreamT[bytes],
    intake: Intake,
    handle: Callable[[bytes, Position], Awaitable[bool | None]],
) -> None:
    """Feed every admitted message of ``stream`` to ``handle``; an error ends the worker.

    A message is finished when ``handle`` returns, unless it answers False: then the
    processor settles it later.
    """
    async for event in stream.events():
        try:
            ticket = await intake.admit(event.message)
            if ticket is None:
                continue
            if await handle(event.value, _position(event, ticket)) is not False:
                intake.finish(ticket)
        except Exception as exc:
            _crash(exc)


def _credentials(settings: Settings) -> faust.SASLCredentials | None:
    """Return the engine's login to the broker (``client_options``' in faust's terms)."""
    if settings.kafka_username is None:
        return None
    return faust.SASLCredentials(
        username=settings.kafka_username,
        password=settings.kafka_password,
        mechanism=settings.kafka_sasl_mechanism,
    )


def _faust_app(settings: Settings) -> EngineApp:
    """Return the faust app as configured: at least once, acks=all, idempotent, static member."""
    member = f"{settings.engine_id}-{settings.engine_instance}"
    # Each replica (`oee up --scale engine=N`) keeps its local state apart; the first
    # keeps the directory it always had.
    name = settings.engine_id if settings.engine_instance == "0" else member
    datadir = settings.data_dir / "engine" / name
    datadir.mkdir(parents=True, exist_ok=True)
    app = EngineApp(
        settings.engine_id,
        broker=f"kafka://{settings.bootstrap}",
        broker_credentials=_credentials(settings),
        store="memory://",
        datadir=str(datadir),
        processing_guarantee="at_least_once",
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.broker_session_timeout_s / 3),
        # Commit the ledger's watermarks often: a restart redoes what came after.
        broker_commit_interval=1.0,
        consumer_group_instance_id=member,
        # No standby copies of other engines' table partitions (faust's default is one).
        # With the memory store a table has no persisted offset, so faust recovers every
        # partition it is assigned from the start of its changelog, standby or not: a
        # standby would only cost reading every other engine's changelog as it grows.
        # A failover is kept short by the changelog itself, compacted, and holding only
        # orders in flight and those ended in the last engine_retention_s.
        table_standby_replicas=0,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        producer_acks=-1,
        producer_enable_idempotence=True,
        producer_linger_ms=settings.kafka_linger_ms,
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    return app


def _processor(
    settings: Settings,
    venues: Mapping[str, Venue],
    clock: Callable[[], datetime],
    *,
    order_events: faust.TopicT,
    dead_letters: faust.TopicT,
    table: Any,
    intake: Intake,
    steps: StepClock,
) -> OrderProcessor:
    """Return the order processor, emitting to the log and settling through ``intake``."""

    async def emit(event: Event) -> None:
        # Buffered, so the events of many orders in flight travel in one request; the
        # wait is for acks=all, so the event is on the log before the message that
        # caused it is acknowledged (and before the table records the reaction).
        sent = await order_events.send(key=order_key(event.order_id), value=encode(event))
        await sent
        EVENTS_WRITTEN.labels(event.type).inc()

    async def emit_dead_letter(letter: DeadLetter) -> None:
        key = letter.key.encode() if letter.key else None
        sent = await dead_letters.send(key=key, value=encode(letter))
        await sent
        DEAD_LETTERS.labels("engine").inc()

    def observe(message: Command | Event, new: bool) -> None:
        if new:
            steps.observe(message)  # type: ignore[arg-type]
        else:
            EVENTS_CONSUMED.labels("engine", message.type).inc()

    return OrderProcessor(
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
        settle=lambda where: intake.finish(_ticket(where)),
        retention=timedelta(seconds=settings.engine_retention_s),
        observe=observe,
        forget=_forgetter(table, settings.partitions),
    )


def _forgetter(table: Any, partitions: int) -> Callable[[bytes], None]:
    """Return how the processor drops an order's record from the table, from any task.

    faust's ``del table[key]`` takes the changelog partition from the message being
    handled, and refuses outside one (``retire`` runs on a timer). The record was
    written while a message of the order's own partition was handled: order keys are
    placed by Kafka's default partitioner, so the tombstone goes where it did.
    """
    partitioner = DefaultPartitioner()
    every = list(range(partitions))

    def forget(key: bytes) -> None:
        if key in table.data:
            del table.data[key]
        table.send_changelog(partitioner(key, every, every), key, None, value_serializer="raw")

    return forget


def build_app(
    settings: Settings,
    venues: Mapping[str, Venue],
    clock: Callable[[], datetime] = utc_now,
) -> faust.App:
    """Return the engine's faust app wired to ``venues``."""
    app = _faust_app(settings)
    commands = app.topic(settings.commands_topic, partitions=settings.partitions)
    order_events = app.topic(settings.events_topic, partitions=settings.partitions)
    dead_letters = app.topic(settings.dead_letter_topic, partitions=settings.partitions)
    # bytes types make faust use the raw codec for the changelog; any other type
    # would default to JSON, which cannot read these records back on recovery.
    table = app.Table(
        "orders",
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
        extra_topic_configs=CHANGELOG_CONFIG | durability(settings),
    )
    steps = StepClock()
    intake = Intake(
        app,
        topics=(settings.commands_topic, settings.events_topic),
        client_options=client_options(settings),
        group_id=settings.engine_id,
    )

    processor = _processor(
        settings,
        venues,
        clock,
        order_events=order_events,
        dead_letters=dead_letters,
        table=table,
        intake=intake,
        steps=steps,
    )

    async def on_revoked(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        processor.forget_decoded()
        # What is kept for later of a revoked partition was never settled, so the
        # group's committed offset is below it: the engine that gets the partition
        # reads it again. Kept here too, it would be decided by two engines.
        processor.drop_partitions({(tp.topic, tp.partition) for tp in args[0]})
        # Another engine may now own an order whose start this one timed: its end
        # would never come here. Orders that stay are timed from the steps seen next.
        steps.forget()

    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]

    # Commands of one order may be handled out of order by concurrent actors: each
    # names the order version it expects, and one the engine has not reached waits.
    @app.agent(commands, name="commands", concurrency=settings.engine_command_concurrency)
    async def handle_commands(stream: faust.StreamT[bytes]) -> None:
        await _drive(stream, intake, processor.on_command)

    # Many actors share the stream, so slow venue calls of one order do not hold
    # up others; the per-order lock in the processor keeps each order in order.
    @app.agent(order_events, name="lifecycle", concurrency=settings.engine_concurrency)
    async def handle_events(stream: faust.StreamT[bytes]) -> None:
        await _drive(stream, intake, processor.on_event)

    async def lag() -> Lag:
        return {(settings.engine_id, t, p): n for (t, p), n in (await intake.lag()).items()}

    ops = standard(settings, "engine", lag=lag)
    ops.health.check("group", assigned(intake.inputs))

    @app.task
    async def serve_ops() -> None:
        await ops.start()

    ticks = itertools.count()
    # Look for ended orders to forget every minute, or sooner with a short retention.
    retire_every = max(1, min(RETIRE_EVERY, int(settings.engine_retention_s)))

    @app.timer(HOUSEKEEPING_EVERY_S)
    async def housekeeping() -> None:
        await intake.check_stalls()
        await processor.expire_deferred(settings.engine_deferred_timeout_s)
        await processor.expire_early(settings.engine_deferred_timeout_s)
        if next(ticks) % retire_every == 0:
            retired = processor.retire(clock())
            if retired:
                log.info(
                    "forgot %d orders ended over %.0fs ago", retired, settings.engine_retention_s
                )

    return app
