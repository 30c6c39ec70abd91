"""The sweeper service: the log in, ``SubmitOrder`` again and ``ResumeOrder`` out.

A safety net under the engine: it reads the commands and order-events topics (from
``sweep_lookback_s`` ago, so a restart loses nothing recent) without a consumer
group, and on a timer asks its core (``core.Sweeper``) what is due. A submission is
sent again only after the read model confirmed it does not know the order; when
PostgreSQL cannot be asked, the submission waits for the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from adapters.kafka import batch_consumer_options, client_options, producer_options, send_commands
from adapters.ops import Lag, consumer_lag
from adapters.postgres import connect
from adapters.settings import Settings
from events.messages import (
    Command,
    DecodeError,
    ResumeOrder,
    SubmitOrder,
    decode,
)
from projections.orders.queries import known_orders
from services.sweeper.core import Sweeper

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 1.0


def utc_now() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


@dataclass
class SweepStats:
    """What the sweeper did since it started."""

    resubmitted: int = 0
    resumed: int = 0
    given_up: int = 0


class SweeperService:
    """Tail the commands and events; resubmit lost submissions, resume stalled orders."""

    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.settings = settings
        self.core = Sweeper(
            submit_after=timedelta(seconds=settings.sweep_submit_after_s),
            stall_after=timedelta(seconds=settings.sweep_stall_after_s),
            max_attempts=settings.sweep_max_attempts,
        )
        self.stats = SweepStats()
        self._clock = clock
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def lag(self) -> Lag:
        """Return how far the tail is behind the end of the commands and events topics."""
        return await consumer_lag(self._consumer, "sweeper")

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep until ``stop`` is set."""
        consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **batch_consumer_options(self.settings),
        )
        producer = AIOKafkaProducer(**producer_options(self.settings))
        await consumer.start()
        await producer.start()
        self._producer = producer
        self._consumer = consumer
        try:
            await self._assign(consumer, producer)
            async with asyncio.TaskGroup() as group:
                group.create_task(self._tail(consumer, stop), name="sweeper-tail")
                group.create_task(self._sweep_loop(stop), name="sweeper-timer")
        finally:
            await consumer.stop()
            await producer.stop()
            log.info("sweeper stopped: %s", self.stats)

    async def _assign(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        """Read both topics from ``sweep_lookback_s`` ago (their end if nothing is newer)."""
        partitions = [
            TopicPartition(topic, number)
            for topic in (self.settings.commands_topic, self.settings.events_topic)
            for number in sorted(await producer.partitions_for(topic))
        ]
        consumer.assign(partitions)
        since = self._clock() - timedelta(seconds=self.settings.sweep_lookback_s)
        found = await consumer.offsets_for_times(
            {tp: int(since.timestamp() * 1000) for tp in partitions}
        )
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            at = found.get(tp)
            consumer.seek(tp, at.offset if at is not None else ends[tp])

    async def _tail(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            for records in batches.values():
                for record in records:
                    if record.value is not None:
                        self._ingest(record.value)

    def _ingest(self, raw: bytes) -> None:
        try:
            message = decode(raw)
        except DecodeError:
            return  # the engine dead-letters it
        if isinstance(message, SubmitOrder):
            self.core.on_submission(message)
        elif not isinstance(message, Command):
            self.core.on_event(message)

    async def _sweep_loop(self, stop: asyncio.Event) -> None:
        horizon = timedelta(seconds=self.settings.sweep_lookback_s) * 2
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SWEEP_EVERY_S)
            now = self._clock()
            await self._check_read_model(now)
            await self.sweep(now)
            self.core.forget_before(now - horizon)

    async def _check_read_model(self, now: datetime) -> None:
        """Drop overdue submissions the read model knows; postpone all if it cannot answer."""
        overdue = self.core.overdue_submissions(now)
        if not overdue:
            return
        try:
            conn = await asyncio.wait_for(connect(self.settings), timeout=5)
            try:
                known = await known_orders(conn, overdue)
            finally:
                await conn.close()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning("cannot ask the read model about %d submissions: %r", len(overdue), exc)
            self.core.postpone(overdue, now)
            return
        self.core.known(known, now)

    async def sweep(self, now: datetime) -> None:
        """Send what the core says is due at ``now``."""
        due = self.core.due(now)
        for line in due.given_up:
            log.error("sweeper gives up: %s", line)
        self.stats.given_up += len(due.given_up)
        commands: list[Command] = []
        for submission in due.resubmit:
            log.warning(
                "order %s: submitted at %s and never accepted; submitting it again",
                submission.order_id,
                submission.occurred_at.isoformat(),
            )
            commands.append(submission)
        for event in due.resume:
            reason = (
                f"no event since {event.status} (#{event.seq}) at {event.occurred_at.isoformat()}"
            )
            log.warning("order %s: %s; resuming it", event.order_id, reason)
            commands.append(
                ResumeOrder(
                    message_id=uuid.uuid4(),
                    order_id=event.order_id,
                    seq=event.seq,
                    occurred_at=now,
                    correlation_id=event.correlation_id,
                    causation_id=event.message_id,
                    event=event,
                    reason=reason,
                )
            )
        if commands:
            await self._send(commands)
        self.stats.resubmitted += len(due.resubmit)
        self.stats.resumed += len(due.resume)

    async def _send(self, commands: list[Command]) -> None:
        assert self._producer is not None
        await send_commands(self._producer, self.settings.commands_topic, commands)
