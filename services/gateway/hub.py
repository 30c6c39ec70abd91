"""One log tail per gateway: the commands and order-events topics, fanned out to sockets.

The hub reads every partition of both topics from the end as of start-up (no
consumer group: each gateway instance sees everything) and keeps, for a bounded
number of recent orders, the events it saw. A WebSocket subscribes here first and
reads history afterwards, so nothing that happens in between is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from events.messages import DecodeError, Event, SubmitOrder, decode
from services.common.settings import Settings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Logged:
    """An event with its position on the log."""

    event: Event
    position: dict[str, Any]


@dataclass(slots=True)
class _Order:
    seen: bool = False  # a command or event of it was on the log
    events: dict[int, Logged] = field(default_factory=dict)
    subscribers: set[asyncio.Queue[Logged]] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Submission:
    """What a gateway knows of an earlier submission under an idempotency key."""

    order_id: uuid.UUID
    request_hash: str


class EventHub:
    """Tail the log and hand each order's events to whoever listens for that order."""

    def __init__(self, settings: Settings, max_orders: int = 50_000) -> None:
        self._settings = settings
        self._max_orders = max_orders
        self._orders: OrderedDict[uuid.UUID, _Order] = OrderedDict()
        self._submissions: OrderedDict[str, Submission] = OrderedDict()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._progress = asyncio.Condition()

    async def start(self, partitions: Mapping[str, Iterable[int]]) -> None:
        """Assign the given partitions of both topics and start tailing from their ends."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.bootstrap,
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
        self._task = asyncio.create_task(self._run(), name="event-hub")

    async def stop(self) -> None:
        """Stop tailing the log."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=2000)
            for tp, records in batches.items():
                for record in records:
                    self._ingest(tp, record.offset, record.value)
                if records:
                    self._positions[tp] = records[-1].offset + 1
            async with self._progress:
                self._progress.notify_all()

    def _ingest(self, tp: TopicPartition, offset: int, raw: bytes | None) -> None:
        if raw is None:
            return
        try:
            message = decode(raw)
        except DecodeError:
            return  # the engine dead-letters it; subscribers never see it
        if isinstance(message, SubmitOrder):
            self._touch(message.order_id).seen = True
            if message.idempotency_key is not None:
                self.remember(message.idempotency_key, message.order_id, message.request_hash)
            return
        order = self._touch(message.order_id)
        order.seen = True
        if message.seq in order.events:
            return  # the first occurrence of a sequence number wins
        logged = Logged(message, {"topic": tp.topic, "partition": tp.partition, "offset": offset})
        order.events[message.seq] = logged
        for queue in order.subscribers:
            queue.put_nowait(logged)

    def _touch(self, order_id: uuid.UUID) -> _Order:
        order = self._orders.get(order_id)
        if order is None:
            order = self._orders[order_id] = _Order()
            self._evict()
        else:
            self._orders.move_to_end(order_id)
        return order

    def _evict(self) -> None:
        excess = len(self._orders) - self._max_orders
        if excess <= 0:
            return
        # Oldest first; an order somebody is watching stays however old it is.
        candidates = itertools.islice(self._orders.items(), 2 * excess + 16)
        idle = [oid for oid, order in candidates if not order.subscribers][:excess]
        for order_id in idle:
            del self._orders[order_id]

    def knows(self, order_id: uuid.UUID) -> bool:
        """Tell whether the hub saw a command or event of this order."""
        order = self._orders.get(order_id)
        return order is not None and order.seen

    def recent(self, order_id: uuid.UUID) -> list[Logged]:
        """Return the events of an order seen since start-up, by sequence."""
        order = self._orders.get(order_id)
        return [order.events[s] for s in sorted(order.events)] if order else []

    def remember(self, key: str, order_id: uuid.UUID, digest: str) -> None:
        """Record a submission made under an idempotency key."""
        self._submissions[key] = Submission(order_id, digest)
        self._submissions.move_to_end(key)
        while len(self._submissions) > self._max_orders:
            self._submissions.popitem(last=False)

    def submission(self, key: str) -> Submission | None:
        """Return the submission recorded under an idempotency key, if seen."""
        return self._submissions.get(key)

    @contextlib.asynccontextmanager
    async def subscribe(self, order_id: uuid.UUID) -> AsyncIterator[asyncio.Queue[Logged]]:
        """Receive every event of an order that the hub ingests from now on."""
        order = self._touch(order_id)
        queue: asyncio.Queue[Logged] = asyncio.Queue()
        order.subscribers.add(queue)
        try:
            yield queue
        finally:
            order.subscribers.discard(queue)

    async def catch_up(self, timeout_s: float) -> bool:
        """Wait until the hub has read everything on the log as of now."""
        assert self._consumer is not None
        ends = await self._consumer.end_offsets(list(self._positions))

        def done() -> bool:
            return all(self._positions[tp] >= end for tp, end in ends.items())

        async with self._progress:
            try:
                await asyncio.wait_for(self._progress.wait_for(done), timeout_s)
            except TimeoutError:
                return False
        return True
