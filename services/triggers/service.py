"""The trigger service: market data and time in, ``TriggerOrder`` and ``ExpireOrder`` out.

One consumer without a group reads every partition of two topics:

* the order events, from the offsets of a snapshot of the orders read model
  (``projections/orders/snapshot.py``) or the start,
  folded into the armed book, the executing orders and the pending specs;
* the market, from the start, so every pool's latest state is known.

Nothing is evaluated until both are read up to the end offsets taken at start-up:
old ticks fire nothing. Then every armed order is evaluated once against the
market as it stands, every new pool state evaluates its market's orders, and a
newly armed order is evaluated at once. Candidates (the spot reaches their bound)
are verified with every venue's quote for their size before they fire; at most
``trigger_max_in_flight`` triggered orders execute at once (``core.Gate``).

Several trigger services share the work by partition (``oee up --scale triggers=N``).
Each tails everything as above (the book of every order, so a partition that comes
to it needs no reading first), and is also a member of the consumer group
``triggers_group`` on the events topic, whose partitions it never fetches: the group
only says which partitions are its own. It verifies, fires and expires only the
armed orders of those (an order's partition is its key's, as the engine's). When a
replica dies, the group gives its partitions to another once its session expires,
and that one evaluates their armed orders against the market as it stands, so what
crossed meanwhile fires then.

Delivery is at least once: a command repeated after a crash or a race is a no-op
in the engine, which triggers or expires an order only at the armed version the
command names. So two replicas that both fire an order during a rebalance fire it
once: the first trigger on the log wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from adapters.kafka import (
    batch_consumer_options,
    client_options,
    group_options,
    producer_options,
    send_commands,
)
from adapters.logs import bind
from adapters.metrics import ARMED_ORDERS, TRIGGERS_FIRED
from adapters.ops import Lag, consumer_lag
from adapters.postgres import connect
from adapters.settings import Settings
from adapters.venues.client import http_venues
from adapters.venues.interface import Venue
from adapters.venues.quoting import quote_all
from events.market import decode_market
from events.messages import (
    DecodeError,
    ExpireOrder,
    TriggerOrder,
    decode_event,
    order_key,
)
from projections.orders.snapshot import Snapshot, read_snapshot
from services.triggers.book import Armed
from services.triggers.core import (
    Candidate,
    TriggerState,
    Verdict,
    judge,
    pool_market,
    sniper_reason,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# Candidates quoted at once; each asks every venue concurrently.
QUOTE_CONCURRENCY = 32
# The expiry timer wakes at least this often, so a clock that jumps is noticed.
MAX_TIMER_WAIT_S = 1.0
# A trigger whose order shows no next event this long after it was sent is sent
# again: the engine keeps a trigger that overtook its own fold in memory only, so a
# crash in between would lose it. A repeat is harmless (first event on the log wins).
RESEND_AFTER_S = 60.0


def utc_now() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


async def load_snapshot(settings: Settings, timeout_s: float = 10.0) -> Snapshot | None:
    """Return the snapshot to start from, or None to read the events from the beginning.

    None when PostgreSQL cannot be reached, the read model is missing or incomplete,
    or nothing was projected yet; the reason is logged.
    """
    try:
        conn = await asyncio.wait_for(connect(settings), timeout_s)
    except (psycopg.Error, OSError, TimeoutError) as exc:
        log.warning(
            "no snapshot: PostgreSQL is not reachable (%s); reading events from the start", exc
        )
        return None
    try:
        snapshot = await asyncio.wait_for(read_snapshot(conn, settings.events_topic), timeout_s)
    except (psycopg.Error, TimeoutError) as exc:
        log.warning(
            "no snapshot: cannot read the orders read model (%s); reading events from the start",
            exc,
        )
        return None
    except ValidationError as exc:
        log.warning(
            "no snapshot: an orders row is not a valid order (%s); reading events from the start",
            exc,
        )
        return None
    finally:
        await conn.close()
    if snapshot is None:
        log.info(
            "no snapshot: the orders projection stored no offsets; reading events from the start"
        )
    return snapshot


class _Ownership(ConsumerRebalanceListener):
    """Tell the service which partitions of the events topic are its own."""

    def __init__(self, service: TriggerService, member: AIOKafkaConsumer) -> None:
        self._service = service
        self._member = member

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._service.disown({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # The group is for ownership only: its member never fetches (the tail reads).
        if assigned:
            self._member.pause(*assigned)
        self._service.own({tp.partition for tp in assigned})


@dataclass
class TriggerStats:
    """Running totals of one trigger service run."""

    triggered: int = 0
    expired: int = 0
    verified: int = 0  # candidates quoted
    missed: int = 0  # candidates whose quotes missed their bound
    skipped: int = 0  # messages that could not be decoded or folded


class TriggerService:
    """Tail the order events and the market; send trigger and expiry commands."""

    def __init__(
        self,
        settings: Settings,
        *,
        venues: Sequence[Venue] | None = None,
        clock: Clock = utc_now,
        quote_concurrency: int = QUOTE_CONCURRENCY,
    ) -> None:
        self.settings = settings
        self.state = TriggerState(
            max_in_flight=settings.trigger_max_in_flight,
            sniper_min_liquidity_usd=settings.sniper_min_liquidity_usd,
        )
        self.stats = TriggerStats()
        # Set once the tail reached the end offsets taken at start-up.
        self.ready = asyncio.Event()
        self._venues = venues
        self._clock = clock
        self._quote_slots = asyncio.Semaphore(quote_concurrency)
        self._wakeup = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._group: asyncio.TaskGroup | None = None
        self._verifying: set[asyncio.Task[None]] = set()
        # Triggers sent whose effect is not on the log yet, with when they were sent.
        self._unanswered: dict[uuid.UUID, tuple[TriggerOrder, float]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        # The partitions of the events topic this replica acts on (the group's word).
        self.owned: set[int] = set()
        self._partitions: list[int] = []
        self._partitioner = DefaultPartitioner()
        self._partition_of: dict[uuid.UUID, int] = {}
        ARMED_ORDERS.set_function(lambda: len(self.state.book))

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; an error writing to the log propagates."""
        snapshot = await load_snapshot(self.settings)
        self._load(snapshot)
        owned_venues = self._venues is None
        venues = await http_venues(self.settings) if self._venues is None else self._venues
        self._venues = venues
        producer = AIOKafkaProducer(**producer_options(self.settings))
        consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            **batch_consumer_options(self.settings),
        )
        member = AIOKafkaConsumer(
            **client_options(self.settings),
            group_id=self.settings.triggers_group,
            group_instance_id=f"{self.settings.triggers_group}-{self.settings.triggers_instance}",
            enable_auto_commit=False,
            auto_offset_reset="latest",
            **group_options(self.settings),
        )
        try:
            await producer.start()
            self._producer = producer
            await consumer.start()
            self._consumer = consumer
            ends = await self._assign(consumer, producer, snapshot)
            await member.start()
            member.subscribe([self.settings.events_topic], listener=_Ownership(self, member))
            async with asyncio.TaskGroup() as group:
                self._group = group
                group.create_task(self._consume(consumer, ends, stop), name="triggers-tail")
                group.create_task(self._expire_loop(stop), name="triggers-expiry")
                group.create_task(self._membership(member, stop), name="triggers-group")
                await stop.wait()
                self._wakeup.set()
                for task in list(self._verifying):
                    task.cancel()
        finally:
            self._group = None
            await member.stop()
            await consumer.stop()
            await producer.stop()
            if owned_venues:
                for venue in venues:
                    aclose = getattr(venue, "aclose", None)
                    if aclose is not None:
                        await aclose()
        log.info("trigger service stopped: %s", self.stats)

    # Ownership -------------------------------------------------------------------

    async def _membership(self, member: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """Keep the group member polling (a member that does not is dropped from it)."""
        while not stop.is_set():
            await member.getmany(timeout_ms=1000)

    def partition_of(self, order_id: uuid.UUID) -> int:
        """Return the partition of the order's events (its key's, as the producers place it)."""
        partition = self._partition_of.get(order_id)
        if partition is None:
            partition = self._partitioner(order_key(order_id), self._partitions, self._partitions)
            if len(self._partition_of) > 4 * len(self.state.orders) + 1024:
                self._partition_of.clear()
            self._partition_of[order_id] = partition
        return partition

    def mine(self, order_id: uuid.UUID) -> bool:
        """Tell whether this replica verifies, fires and expires the order."""
        return self.partition_of(order_id) in self.owned

    def own(self, partitions: set[int]) -> None:
        """Take the partitions the group gave: evaluate their armed orders as things stand."""
        gained = partitions - self.owned
        # The group's word is the whole assignment: what is not in it is no longer ours.
        self.owned = set(partitions)
        log.info("trigger partitions now %s (gained %s)", sorted(self.owned), sorted(gained))
        if not gained:
            return
        self.book_changed_hands()

    def disown(self, partitions: set[int]) -> None:
        """Give up partitions: their orders are another replica's from now on."""
        self.owned -= partitions
        if partitions:
            log.info(
                "trigger partitions now %s (gave up %s)", sorted(self.owned), sorted(partitions)
            )

    def book_changed_hands(self) -> None:
        """Consider every armed order of the partitions now owned, and their expiries."""
        self.state.book.reclaim()
        self._wakeup.set()
        if self.ready.is_set():
            # A replica that died may have left crossings unfired: fire what crosses now.
            self._consider(self.state.sweep())

    async def lag(self) -> Lag:
        """Return how far the tail is behind the end of the events and market topics."""
        return await consumer_lag(self._consumer, "triggers")

    def _load(self, snapshot: Snapshot | None) -> None:
        if snapshot is None:
            return
        for order in snapshot.orders:
            self.state.load(
                order.order_id, order.spec, order.correlation_id, order.seq, order.status
            )
        log.info(
            "snapshot of the orders read model at %s: %s",
            snapshot.offsets,
            self.state.counts(),
        )

    async def _assign(
        self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, snapshot: Snapshot | None
    ) -> dict[TopicPartition, int]:
        """Assign both topics, seek to where each is read from; return their end offsets."""
        events = [
            TopicPartition(self.settings.events_topic, p)
            for p in sorted(await producer.partitions_for(self.settings.events_topic))
        ]
        self._partitions = [tp.partition for tp in events]
        market = [
            TopicPartition(self.settings.market_topic, p)
            for p in sorted(await producer.partitions_for(self.settings.market_topic))
        ]
        consumer.assign(events + market)
        await consumer.seek_to_beginning(*market)
        if snapshot is None:
            await consumer.seek_to_beginning(*events)
        else:
            # A partition the projection never stored has nothing projected: from 0.
            for tp in events:
                consumer.seek(tp, snapshot.offsets.get(tp.partition, 0))
        ends: dict[TopicPartition, int] = await consumer.end_offsets(events + market)
        return ends

    # The tail --------------------------------------------------------------------

    async def _consume(
        self, consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int], stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            for tp, records in batches.items():
                for record in records:
                    self._ingest(tp, record)
            if not self.ready.is_set() and await self._caught_up(consumer, ends):
                self._start_evaluating()

    @staticmethod
    async def _caught_up(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await consumer.position(tp) < end:
                return False
        return True

    def _start_evaluating(self) -> None:
        self.ready.set()
        log.info("caught up with the log: %s", self.state.counts())
        self._consider(self.state.sweep())
        self._wakeup.set()

    def _ingest(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        """Fold one record; a record that cannot be decoded or folded is logged and skipped."""
        where = f"{tp.topic}[{tp.partition}]@{record.offset}"
        if record.value is None:
            return  # a tombstone of the compacted market topic, or an empty record
        try:
            if tp.topic == self.settings.market_topic:
                self._on_market(record.value)
            else:
                self._on_event(record.value, where)
        except DecodeError as exc:
            self.stats.skipped += 1
            log.warning("skipping undecodable %s: %s", where, exc)
        except Exception:
            # One message must not stop the service; the log keeps it for a post-mortem.
            self.stats.skipped += 1
            log.exception("skipping %s that could not be handled", where)

    def _on_market(self, raw: bytes) -> None:
        pool = decode_market(raw)
        if self.state.observe(pool) and self.ready.is_set():
            self._consider(self.state.candidates_at(pool))

    def _on_event(self, raw: bytes, where: str) -> None:
        event = decode_event(raw)
        sent = self._unanswered.get(event.order_id)
        if sent is not None and event.seq > sent[0].seq:
            del self._unanswered[event.order_id]
        effect = self.state.apply(event)
        if effect.skipped is not None:
            self.stats.skipped += 1
            log.warning("not folding %s: %s", where, effect.skipped)
        if not self.ready.is_set():
            return
        if effect.armed is not None:
            if effect.armed.spec.expires_at is not None:
                self._wakeup.set()
            # A limit the market already reaches fires at once.
            self._consider(self.state.candidates_for(effect.armed)[:1])
        if effect.released:
            self._drain()

    # Evaluation ------------------------------------------------------------------

    def _consider(self, candidates: Sequence[Candidate]) -> None:
        """Verify each candidate now if the gate has room, else queue it."""
        for candidate in candidates:
            if not self.mine(candidate.order.order_id):
                continue  # another replica's partition
            if self._expired(candidate.order):
                continue  # the expiry timer takes it
            if self.state.gate.request(candidate):
                self._spawn(candidate)
        self._drain()

    def _drain(self) -> None:
        """Start verifying queued candidates while the gate has room."""
        while (candidate := self.state.gate.next()) is not None:
            order = candidate.order
            if (
                self.state.still_valid(candidate)
                and not self._expired(order)
                and self.mine(order.order_id)
            ):
                self._spawn(candidate)
            else:
                self.state.gate.abandon(candidate.order.order_id)

    def _expired(self, order: Armed) -> bool:
        expires_at = order.spec.expires_at
        return expires_at is not None and expires_at <= self._clock()

    def _spawn(self, candidate: Candidate) -> None:
        assert self._group is not None
        order = candidate.order
        with bind(order.order_id, order.correlation_id):
            # The task starts with a copy of this context: its lines name the order.
            task = self._group.create_task(self._verify(candidate))
        self._verifying.add(task)
        task.add_done_callback(self._verifying.discard)

    async def _verify(self, candidate: Candidate) -> None:
        """Quote ``candidate``; trigger it if a venue reaches its bound and it is still armed."""
        order = candidate.order
        pool = self.state.pools[candidate.pool_id]
        _, spot = pool_market(pool)
        try:
            verdict: Verdict | None = await self._verdict(order, candidate)
        except Exception:
            log.exception("verifying order %s failed", order.order_id)
            verdict = None
        # An order whose partition went to another replica meanwhile is that one's.
        still_armed = self.state.book.is_armed(order.order_id, order.seq) and self.mine(
            order.order_id
        )
        if still_armed and self._expired(order):
            verdict = None  # expired while it was quoted: the expiry timer takes it
        if verdict is None or not verdict.fire or not still_armed:
            self.state.gate.abandon(order.order_id)
            if verdict is not None and not verdict.fire and verdict.quoted:
                self.stats.missed += 1
                self.state.failed_at(candidate, spot)
                log.info("order %s not triggered: %s", order.order_id, verdict.reason)
            # Ticks (or a new arming) that came during the quotes found the order busy
            # and were not considered: consider it again as things stand. Not after
            # no usable quote (venues down): that would quote it again in a tight
            # loop; the next state of a pool tries it again instead.
            current = self.state.book.get(order.order_id)
            learned = verdict is not None and verdict.quoted
            if current is not None and (learned or current.seq != order.seq):
                self._consider(self.state.candidates_for(current)[:1])
            self._drain()
            return
        self.state.fired(order)
        command = TriggerOrder(
            message_id=uuid.uuid4(),
            order_id=order.order_id,
            seq=order.seq,
            occurred_at=self._clock(),
            correlation_id=order.correlation_id,
            causation_id=pool.message_id,
            reason=verdict.reason,
            price=verdict.price,
            venue=verdict.venue,
        )
        await self._send([command])
        self._unanswered[order.order_id] = (command, time.monotonic())
        self.stats.triggered += 1
        TRIGGERS_FIRED.labels(order.spec.order_type).inc()
        log.info("triggered order %s (armed #%d): %s", order.order_id, order.seq, verdict.reason)

    async def _verdict(self, order: Armed, candidate: Candidate) -> Verdict:
        pool = self.state.pools[candidate.pool_id]
        min_liquidity = self.state.sniper_min_liquidity_usd
        if order.spec.order_type == "sniper" and order.bound is None:
            # Nothing to verify: the pool's existence and liquidity are the condition.
            _, spot = pool_market(pool)
            return Verdict(
                fire=True, reason=sniper_reason(pool, min_liquidity), price=spot, venue=pool.venue
            )
        assert self._venues is not None
        async with self._quote_slots:
            quotes = await quote_all(
                self._venues,
                order.spec.token_in,
                order.spec.token_out,
                order.spec.amount,
                self.settings.venue_timeout_s,
            )
        self.stats.verified += 1
        verdict = judge(order, quotes)
        if order.spec.order_type == "sniper" and verdict.fire:
            reason = f"{verdict.reason}; {sniper_reason(pool, min_liquidity)}"
            return Verdict(fire=True, reason=reason, price=verdict.price, venue=verdict.venue)
        return verdict

    # Expiry ------------------------------------------------------------------------

    async def _expire_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self.ready.is_set():
                await self._expire_due()
                await self._resend_unanswered()
            following = self.state.book.next_expiry()
            wait = MAX_TIMER_WAIT_S
            if following is not None:
                wait = min(wait, max(0.0, (following - self._clock()).total_seconds()))
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), wait)

    async def _expire_due(self) -> None:
        due = self.state.book.expire(self._clock(), self.mine)
        if not due:
            return
        for order in due:
            self.state.forget(order.order_id)
        await self._send(
            [
                ExpireOrder(
                    message_id=uuid.uuid4(),
                    order_id=order.order_id,
                    seq=order.seq,
                    occurred_at=self._clock(),
                    correlation_id=order.correlation_id,
                )
                for order in due
            ]
        )
        self.stats.expired += len(due)
        for order in due:
            log.info(
                "expired order %s (armed #%d): expires_at %s passed",
                order.order_id,
                order.seq,
                order.spec.expires_at,
            )

    async def _resend_unanswered(self) -> None:
        """Send again the triggers whose effect never reached the log (lost or dropped)."""
        now = time.monotonic()
        late = [c for c, at in self._unanswered.values() if now - at > RESEND_AFTER_S]
        if not late:
            return
        await self._send(late)
        for command in late:
            self._unanswered[command.order_id] = (command, now)
            log.warning("trigger of order %s had no effect yet: sent again", command.order_id)

    async def _send(self, commands: Sequence[TriggerOrder | ExpireOrder]) -> None:
        """Write commands to the commands topic, acknowledged by every replica."""
        assert self._producer is not None
        await send_commands(self._producer, self.settings.commands_topic, commands)
