"""One log tail per gateway: the commands and order-events topics, fanned out to sockets.

The hub reads every partition of both topics from the end as of start-up (no
consumer group: each gateway instance sees everything) and keeps, for a bounded
number of recent orders, the events it saw. A WebSocket subscribes here first and
reads history afterwards, so nothing that happens in between is missed.

Two kinds of listener: a per-order subscription (every event of one order) and a
``Feed`` (the firehose: every event matching a filter). A feed's queue is bounded;
a feed that falls behind is dropped, never waited for, so one slow socket can
neither delay the others nor make the gateway hold its backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from adapters.settings import Settings
from events.messages import (
    Command,
    DecodeError,
    Event,
    OrderAccepted,
    SubmitOrder,
    decode,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Logged:
    """An event with its position on the log."""

    event: Event
    position: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OrderFacts:
    """What a firehose filter asks of an order besides its event: type, pair, venue."""

    order_type: str
    token_in: str
    token_out: str
    venue: str | None = None

    def after(self, event: Event) -> OrderFacts:
        """Return the facts once ``event`` happened (a routing may change the venue)."""
        venue = getattr(event, "venue", None)
        if venue is None or venue == self.venue:
            return self
        return OrderFacts(self.order_type, self.token_in, self.token_out, venue)


def facts_of(accepted: OrderAccepted) -> OrderFacts:
    """Return the facts an order starts with."""
    spec = accepted.spec
    return OrderFacts(spec.order_type, spec.token_in, spec.token_out)


# Looks up the facts of orders accepted before this gateway started (read models).
Resolver = Callable[[list[uuid.UUID]], Awaitable[dict[uuid.UUID, OrderFacts]]]
Cursor = dict[int, int]  # events-topic partition -> next offset


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """Which events a firehose passes: each given field must match (values OR'd within)."""

    statuses: frozenset[str] = frozenset()
    tokens: frozenset[str] = frozenset()
    venues: frozenset[str] = frozenset()
    order_types: frozenset[str] = frozenset()

    @property
    def needs_facts(self) -> bool:
        return bool(self.tokens or self.venues or self.order_types)

    def matches(self, event: Event, facts: OrderFacts | None) -> bool:
        """Tell whether ``event`` (with its order's facts after it) passes this filter."""
        if self.statuses and event.status not in self.statuses:
            return False
        if not self.needs_facts:
            return True
        if facts is None:
            return False  # an order nobody can describe matches no attribute filter
        if self.order_types and facts.order_type not in self.order_types:
            return False
        if self.tokens and not {facts.token_in, facts.token_out} & self.tokens:
            return False
        return not self.venues or facts.venue in self.venues


class Feed:
    """One firehose subscriber: a filter and a bounded queue of ready-to-send JSON texts."""

    def __init__(self, stream_filter: StreamFilter, capacity: int) -> None:
        self.filter = stream_filter
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=capacity)
        self.dropped = asyncio.Event()

    def offer(self, text: str) -> bool:
        """Queue ``text``, or mark the feed dropped when it is full; return whether queued."""
        if self.dropped.is_set():
            return False
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.dropped.set()
            return False
        return True


def format_cursor(cursor: Cursor) -> str:
    """Return a cursor as text: ``partition:next_offset`` pairs, comma-separated."""
    return ",".join(f"{p}:{cursor[p]}" for p in sorted(cursor))


@dataclass(slots=True)
class _Order:
    seen: bool = False  # a command or event of it was on the log
    events: dict[int, Logged] = field(default_factory=dict)
    subscribers: set[asyncio.Queue[Logged]] = field(default_factory=set)
    facts: OrderFacts | None = None
    submitted: SubmitOrder | None = None  # its first submission, until events arrive


@dataclass(frozen=True, slots=True)
class Submission:
    """What a gateway knows of an earlier submission under an idempotency key."""

    order_id: uuid.UUID
    request_hash: str


class EventHub:
    """Tail the log and hand each order's events to whoever listens for that order."""

    def __init__(
        self,
        settings: Settings,
        render: Callable[[Logged, str], str],
        max_orders: int = 50_000,
        resolve: Resolver | None = None,
    ) -> None:
        self._settings = settings
        # Renders an event and the cursor after it for feeds (the hub knows no JSON views).
        self._render = render
        self._max_orders = max_orders
        self._resolve = resolve
        self._feeds: set[Feed] = set()
        self._order_listeners = 0
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
            decoded = [
                (tp, record.offset, _decode(record.value))
                for tp, records in batches.items()
                for record in records
            ]
            await self._resolve_facts([m for _, _, m in decoded if m is not None])
            for tp, offset, message in decoded:
                self._positions[tp] = offset + 1
                if message is not None:
                    self._ingest(tp, offset, message)
            async with self._progress:
                self._progress.notify_all()

    async def _resolve_facts(self, messages: list[Event | Command]) -> None:
        """Look up the facts of orders from before start-up, when a feed may need them."""
        if self._resolve is None or not any(f.filter.needs_facts for f in self._feeds):
            return
        unknown = set()
        for message in messages:
            order = self._orders.get(message.order_id)
            if (
                isinstance(message, Event)
                and not isinstance(message, OrderAccepted)
                and (order is None or order.facts is None)
            ):
                unknown.add(message.order_id)
        if not unknown:
            return
        try:
            found = await self._resolve(sorted(unknown))
        except Exception:
            log.exception("cannot look up %d orders for the firehose filters", len(unknown))
            return
        for order_id, facts in found.items():
            self._touch(order_id).facts = facts

    def _ingest(self, tp: TopicPartition, offset: int, message: Event | Command) -> None:
        if isinstance(message, Command):
            if isinstance(message, SubmitOrder):
                self.record_submission(message)
            return
        order = self._touch(message.order_id)
        order.seen = True
        if message.seq in order.events:
            return  # the first occurrence of a sequence number wins
        logged = Logged(message, {"topic": tp.topic, "partition": tp.partition, "offset": offset})
        order.events[message.seq] = logged
        if isinstance(message, OrderAccepted):
            order.facts = facts_of(message)
        elif order.facts is not None:
            order.facts = order.facts.after(message)
        for queue in order.subscribers:
            queue.put_nowait(logged)
        if self._feeds:
            self._fan_out(logged, order.facts)

    def _fan_out(self, logged: Logged, facts: OrderFacts | None) -> None:
        text: str | None = None  # rendered once, for every feed that wants it
        for feed in list(self._feeds):
            if not feed.filter.matches(logged.event, facts):
                continue
            if text is None:
                text = self._render(logged, format_cursor(self.cursor()))
            if not feed.offer(text):
                self._feeds.discard(feed)

    def cursor(self) -> Cursor:
        """Return the hub's position on the events topic: the next offset per partition."""
        topic = self._settings.events_topic
        return {tp.partition: pos for tp, pos in self._positions.items() if tp.topic == topic}

    def facts(self, order_id: uuid.UUID) -> OrderFacts | None:
        """Return what the hub knows of an order's type, pair and venue."""
        order = self._orders.get(order_id)
        return order.facts if order is not None else None

    async def resolve(self, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, OrderFacts]:
        """Look up facts of orders the hub never saw accepted (empty without a resolver)."""
        return await self._resolve(order_ids) if self._resolve and order_ids else {}

    def open_feed(self, stream_filter: StreamFilter, capacity: int) -> tuple[Feed, Cursor]:
        """Start a firehose feed; return it and the cursor from which it receives events."""
        feed = Feed(stream_filter, capacity)
        self._feeds.add(feed)
        return feed, self.cursor()

    def close_feed(self, feed: Feed) -> None:
        """Stop feeding ``feed``."""
        self._feeds.discard(feed)

    @property
    def listeners(self) -> dict[str, int]:
        """Count the sockets this hub feeds, by kind."""
        return {"firehose": len(self._feeds), "orders": self._order_listeners}

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

    def record_submission(self, command: SubmitOrder) -> None:
        """Remember a submission read from the log, or just written to it by this gateway."""
        order = self._touch(command.order_id)
        order.seen = True
        order.submitted = order.submitted or command
        if command.idempotency_key is not None:
            self.remember(command.idempotency_key, command.order_id, command.request_hash)

    def submitted(self, order_id: uuid.UUID) -> SubmitOrder | None:
        """Return the first submission of an order, if this hub read it."""
        order = self._orders.get(order_id)
        return order.submitted if order is not None else None

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
        self._order_listeners += 1
        try:
            yield queue
        finally:
            order.subscribers.discard(queue)
            self._order_listeners -= 1

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


def _decode(raw: bytes | None) -> Event | Command | None:
    if raw is None:
        return None
    try:
        return decode(raw)
    except DecodeError:
        return None  # the engine dead-letters it; subscribers never see it
