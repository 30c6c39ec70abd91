"""One log tail per gateway: every partition of the commands and order-events topics.

The tail reads from the end as of start-up, without a consumer group, so each
gateway instance sees everything. It knows only where it stands on the log
(``cursor``, ``catch_up``); what the messages mean to the rest of the gateway is
its listener's business (``adapters.Gateway`` hands them to the recent-events
cache, the submissions and the firehose).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from adapters.kafka import client_options
from adapters.ops import Lag, consumer_lag
from adapters.settings import Settings
from events.messages import Command, DecodeError, Event, decode

log = logging.getLogger(__name__)

Cursor = dict[int, int]  # events-topic partition -> next offset
# A reader that cannot fetch tries again after this; one whose consumer does not stop
# within the timeout is left behind with a warning.
_RETRY_S = 1.0
_STOP_TIMEOUT_S = 5.0


async def read_from_start(
    settings: Settings, topic: str, partitions: Iterable[int]
) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    """Return a started consumer of every one of ``partitions`` of ``topic``, outside any
    group, positioned at the beginning (a reader that keeps the whole topic in memory),
    and the partitions it reads."""
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    await consumer.seek_to_beginning(*assigned)
    return consumer, assigned


async def fetch_forever(
    consumer: AIOKafkaConsumer, what: str, **fetch: Any
) -> AsyncIterator[dict[TopicPartition, list[Any]]]:
    """Yield ``consumer``'s fetches for good; a failed one is logged and tried again
    (the consumer reconnects by itself: a reader must outlive a broker outage)."""
    while True:
        try:
            batches = await consumer.getmany(timeout_ms=500, **fetch)
        except KafkaError as exc:
            log.warning("%s cannot read the log: %r", what, exc)
            await asyncio.sleep(_RETRY_S)
            continue
        yield batches


async def stop_reader(
    task: asyncio.Task[None] | None, consumer: AIOKafkaConsumer | None, what: str
) -> None:
    """Cancel a reader's task, then stop its consumer (waiting at most a few seconds)."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if consumer is not None:
        try:
            await asyncio.wait_for(consumer.stop(), _STOP_TIMEOUT_S)
        except (TimeoutError, KafkaError) as exc:
            log.warning("%s did not stop cleanly: %r", what, exc)


@dataclass(slots=True)
class Logged:
    """An event with its position on the log."""

    event: Event
    position: dict[str, Any]


def format_cursor(cursor: Cursor) -> str:
    """Return a cursor as text: ``partition:next_offset`` pairs, comma-separated."""
    return ",".join(f"{p}:{cursor[p]}" for p in sorted(cursor))


class TailListener(Protocol):
    """What the tail hands every decoded message to, in log order."""

    async def prepare(self, messages: Sequence[Event | Command]) -> None:
        """Get ready for a batch before any of it is handed over (may do I/O)."""

    def on_command(self, command: Command) -> None:
        """Take a command read from the log."""

    def on_event(self, logged: Logged) -> None:
        """Take an event read from the log, with its position."""


class LogTail:
    """Tail both topics from their ends and hand each message to the listener."""

    def __init__(self, settings: Settings, listener: TailListener) -> None:
        self._settings = settings
        self._listener = listener
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._progress = asyncio.Condition()

    async def start(self, partitions: Mapping[str, Iterable[int]]) -> None:
        """Assign the given partitions of both topics and start tailing from their ends."""
        consumer = AIOKafkaConsumer(
            **client_options(self._settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )
        await consumer.start()
        assigned = [
            TopicPartition(topic, number)
            for topic in (self._settings.commands_topic, self._settings.events_topic)
            for number in sorted(partitions[topic])
        ]
        consumer.assign(assigned)
        await consumer.seek_to_end(*assigned)
        for tp in assigned:
            self._positions[tp] = await consumer.position(tp)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name="log-tail")

    async def stop(self) -> None:
        """Stop tailing the log."""
        await stop_reader(self._task, self._consumer, "the log tail")

    async def lag(self) -> Lag:
        """Return how far the tail is behind the end of the commands and events topics."""
        return await consumer_lag(self._consumer, "gateway-tail", self._positions)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        assert self._consumer is not None
        async for batches in fetch_forever(self._consumer, "the log tail", max_records=2000):
            decoded = [
                (tp, record.offset, _decode(record.value))
                for tp, records in batches.items()
                for record in records
            ]
            await self._listener.prepare([m for _, _, m in decoded if m is not None])
            for tp, offset, message in decoded:
                self._positions[tp] = offset + 1
                if isinstance(message, Command):
                    self._listener.on_command(message)
                elif message is not None:
                    position = {"topic": tp.topic, "partition": tp.partition, "offset": offset}
                    self._listener.on_event(Logged(message, position))
            async with self._progress:
                self._progress.notify_all()

    def cursor(self) -> Cursor:
        """Return the tail's position on the events topic: the next offset per partition."""
        topic = self._settings.events_topic
        return {tp.partition: pos for tp, pos in self._positions.items() if tp.topic == topic}

    async def catch_up(self, timeout_s: float) -> bool:
        """Wait until the tail has read everything on the log as of now; False after the
        timeout, or at once when the tail is not reading.

        An order unknown here may have been written through another gateway a moment ago
        (several serve one port): once the tail has read that far, this one knows it too,
        so a client reads its own writes whichever gateway answers.
        """
        consumer = self._consumer
        if consumer is None or not self.running:
            return False
        try:
            async with asyncio.timeout(timeout_s):
                ends = await consumer.end_offsets(list(self._positions))
                async with self._progress:
                    await self._progress.wait_for(
                        lambda: all(self._positions[tp] >= end for tp, end in ends.items())
                    )
        except (TimeoutError, KafkaError):
            return False
        return True


def _decode(raw: bytes | None) -> Event | Command | None:
    if raw is None:
        return None
    try:
        return decode(raw)
    except DecodeError:
        return None  # the engine dead-letters it; subscribers never see it
