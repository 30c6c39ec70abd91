"""The trigger service on the real broker and PostgreSQL, with the real venue service.

Each test writes order events and market messages to its own topics, runs the
trigger service in-process, and reads back the commands it wrote. No engine runs:
the tests play its part by writing the events it would emit.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from psycopg.types.json import Jsonb

from adapters.kafka import client_options, ensure_topics
from adapters.postgres import connect
from adapters.settings import Settings
from events.market import MarketEvent, PoolCreated, PriceTick, encode_market, pool_key
from events.messages import (
    Command,
    Event,
    ExpireOrder,
    OrderSpec,
    TriggerOrder,
    decode,
    encode,
    order_key,
)
from projections.contract import ensure_schema
from projections.orders.handler import OrdersProjection, state_to_row
from services.triggers.service import TriggerService
from tests.auth import venue_auth
from tests.integration.system import System
from tests.unit.factories import OrderHistory

SOL_USDC = "raydium:SOL-USDC"


def limit(token_in: str, token_out: str, amount: str, price: str, **extra: Any) -> OrderSpec:
    return OrderSpec(
        order_type="limit",
        token_in=token_in,
        token_out=token_out,
        amount=Decimal(amount),
        slippage_bps=50,
        limit_price=Decimal(price),
        **extra,
    )


def sell(price: str, **extra: Any) -> OrderSpec:
    """Sell 1 SOL at ``price`` USDC per SOL or more."""
    return limit("SOL", "USDC", "1", price, **extra)


def buy(price: str) -> OrderSpec:
    """Buy SOL with 150 USDC at ``price`` USDC per SOL or less."""
    return limit("USDC", "SOL", "150", price)


def sniper(token: str) -> OrderSpec:
    return OrderSpec(
        order_type="sniper", token_in="USDC", token_out=token, amount=Decimal(100), slippage_bps=500
    )


class Order(OrderHistory):
    """One order's events, stamped now (the trigger service compares with the clock)."""

    def __init__(self, spec: OrderSpec) -> None:
        super().__init__(spec, at=lambda _: datetime.now(UTC))

    @property
    def id(self) -> uuid.UUID:
        return self.order_id


def pool_state(
    kind: type[PoolCreated] | type[PriceTick],
    price: str,
    seq: int,
    *,
    base: str = "SOL",
    quote: str = "USDC",
    liquidity: str = "20000000",
) -> MarketEvent:
    return kind(
        message_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        venue="raydium",
        pool_id=f"raydium:{base}-{quote}",
        base=base,
        quote=quote,
        price=Decimal(price),
        liquidity_usd=Decimal(liquidity),
        seq=seq,
    )


class Log:
    """Writes events and market messages; reads back the commands the service wrote."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.producer = producer
        self.commands: list[Command] = []

    async def events(self, *events: Event) -> None:
        for event in events:
            await self.producer.send_and_wait(
                self.settings.events_topic, encode(event), key=order_key(event.order_id)
            )

    async def market(self, *states: MarketEvent) -> None:
        for state in states:
            await self.producer.send_and_wait(
                self.settings.market_topic, encode_market(state), key=pool_key(state.pool_id)
            )

    async def tail_commands(self) -> None:
        consumer = AIOKafkaConsumer(
            self.settings.commands_topic,
            **client_options(self.settings),
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        message = decode(record.value)
                        assert isinstance(message, Command)
                        self.commands.append(message)
        finally:
            await consumer.stop()

    def seen(self) -> list[tuple[str, uuid.UUID, int]]:
        return sorted((c.type, c.order_id, c.seq) for c in self.commands)

    async def wait_for(self, expected: list[tuple[str, uuid.UUID, int]], quiet_s: float) -> None:
        """Wait until ``expected`` was written, then ``quiet_s`` more to catch any extra."""
        want = sorted(expected)
        deadline = asyncio.get_running_loop().time() + 30
        while not set(want) <= set(self.seen()):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"expected {want}, saw {self.seen()}")
            await asyncio.sleep(0.1)
        await asyncio.sleep(quiet_s)
        assert self.seen() == want

    def command(self, order_id: uuid.UUID, seq: int) -> Command:
        [found] = [c for c in self.commands if c.order_id == order_id and c.seq == seq]
        return found


@pytest.fixture
async def venues(settings_factory: Callable[..., Settings], tmp_path: Path) -> AsyncIterator[Any]:
    """Return ``start(**overrides) -> Settings``: the venue service running for those settings."""
    systems: list[System] = []

    async def start(**overrides: Any) -> Settings:
        settings = settings_factory(venue_walk_bps=0, **overrides)
        await ensure_topics(settings)
        system = System(settings, tmp_path / f"logs-{len(systems)}")
        systems.append(system)
        system.start("venues")
        async with httpx.AsyncClient(
            base_url=settings.venues_url, headers=venue_auth(settings)
        ) as client:
            for _ in range(200):
                system.check_alive()
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/health")).status_code == 200:
                        return settings
                await asyncio.sleep(0.1)
        raise TimeoutError("venue service did not answer")

    yield start
    for system in systems:
        system.stop_all()


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[TriggerService, Log]]:
    """Run the trigger service and a tail of the commands topic until the block ends."""
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    log = Log(settings, producer)
    service = TriggerService(settings)
    tasks: list[asyncio.Task[None]] = []
    try:
        tasks.append(asyncio.create_task(log.tail_commands()))
        yield service, log
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()


async def start(service: TriggerService, stop: asyncio.Event) -> asyncio.Task[None]:
    task = asyncio.create_task(service.run(stop))
    ready = asyncio.create_task(service.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if ready not in done:
        ready.cancel()
        if task in done:
            task.result()  # raises what stopped it
        raise TimeoutError("the trigger service did not catch up")
    return task


async def test_triggers_limits_snipers_and_expiry_send_exactly_the_due_commands(venues):
    settings = await venues(sniper_min_liquidity_usd=Decimal(10_000))
    a, b, c, d = Order(sell("140")), Order(sell("200")), Order(buy("160")), Order(buy("100"))
    # The spot reaches e's limit but no venue's executable price for its size does.
    e = Order(sell("150.4"))
    f = Order(sell("200", expires_at=datetime.now(UTC) + timedelta(seconds=4)))
    g, h = Order(sniper("NEWT")), Order(sniper("OTHR"))
    market = Order(OrderSpec(token_in="SOL", token_out="USDC", amount=Decimal(1), slippage_bps=50))
    async with running(settings) as (service, log):
        for order in (a, b, c, d, e, f, g, h):
            await log.events(order.accepted(), order.armed())
        await log.events(market.accepted())
        # Neither an undecodable event nor an undecodable market message stops it.
        await log.producer.send_and_wait(settings.events_topic, b"not an event", key=b"x")
        await log.producer.send_and_wait(settings.market_topic, b"{}", key=b"x")
        # Old ticks fire nothing: b's limit was reached only before the service started.
        await log.market(pool_state(PriceTick, "210", 1), pool_state(PriceTick, "150.5", 2))

        stop = asyncio.Event()
        task = await start(service, stop)
        try:
            await log.market(
                pool_state(PoolCreated, "0.01", 1, base="NEWT", liquidity="50000"),
                pool_state(PoolCreated, "0.01", 1, base="OTHR", liquidity="1000"),
                # Crosses a and c again: they fired already for this arming.
                pool_state(PriceTick, "150.6", 3),
            )
            await log.wait_for(
                [
                    ("TriggerOrder", a.id, 2),
                    ("TriggerOrder", c.id, 2),
                    ("TriggerOrder", g.id, 2),
                    ("ExpireOrder", f.id, 2),
                ],
                quiet_s=1.0,
            )
            # The engine re-arms a (the price moved away before it routed): it fires again.
            await log.events(a.triggered(), a.armed())
            await log.wait_for(
                [
                    ("TriggerOrder", a.id, 2),
                    ("TriggerOrder", a.id, 4),
                    ("TriggerOrder", c.id, 2),
                    ("TriggerOrder", g.id, 2),
                    ("ExpireOrder", f.id, 2),
                ],
                quiet_s=1.5,
            )
        finally:
            stop.set()
            await task

    fired = log.command(a.id, 2)
    assert isinstance(fired, TriggerOrder)
    assert fired.correlation_id == a.command.correlation_id
    assert fired.venue in {"raydium", "meteora"}
    assert fired.price is not None
    assert Decimal(140) <= fired.price <= Decimal("150.5")
    assert fired.reason.startswith(f"{fired.venue} executable ")
    assert "≥ limit 140" in fired.reason
    bought = log.command(c.id, 2)
    assert isinstance(bought, TriggerOrder)
    assert "≤ limit 160" in bought.reason
    sniped = log.command(g.id, 2)
    assert isinstance(sniped, TriggerOrder)
    assert sniped.venue == "raydium"
    assert sniped.reason == "raydium:NEWT-USDC has liquidity 50000 USD ≥ 10000 USD"
    expired = log.command(f.id, 2)
    assert isinstance(expired, ExpireOrder)
    assert expired.causation_id is None
    assert service.stats.missed >= 1  # e was quoted and missed
    assert service.stats.skipped == 2


async def test_triggers_at_the_in_flight_cap_queue_crossings_until_one_ends(venues):
    settings = await venues(trigger_max_in_flight=1)
    first, second = Order(sell("140")), Order(sell("141"))
    async with running(settings) as (service, log):
        for order in (first, second):
            await log.events(order.accepted(), order.armed())
        await log.market(pool_state(PriceTick, "150", 1))
        stop = asyncio.Event()
        task = await start(service, stop)
        try:
            # Both cross; which is verified first depends on the partitions' order.
            deadline = asyncio.get_running_loop().time() + 30
            while not log.commands:
                assert asyncio.get_running_loop().time() < deadline, "nothing fired"
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)
            assert len(log.commands) == 1
            assert service.state.gate.queued == 1
            fired = first if log.commands[0].order_id == first.id else second
            waiting = second if fired is first else first
            # The one that fired executes and fails: its slot goes to the one waiting.
            await log.events(fired.triggered(), fired.failed())
            await log.wait_for(
                [("TriggerOrder", fired.id, 2), ("TriggerOrder", waiting.id, 2)], quiet_s=0.5
            )
        finally:
            stop.set()
            await task


async def _end_offsets(settings: Settings) -> dict[int, int]:
    consumer = AIOKafkaConsumer(**client_options(settings))
    await consumer.start()
    try:
        partitions = [
            TopicPartition(settings.events_topic, p)
            for p in sorted(
                consumer.partitions_for_topic(settings.events_topic) or range(settings.partitions)
            )
        ]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def _store_snapshot(settings: Settings, offsets: dict[int, int], order: Order) -> None:
    """Write what the orders projector would have: the offsets and the order's row."""
    conn = await connect(settings)
    try:
        await ensure_schema(conn, OrdersProjection())
        assert order.state is not None
        row = state_to_row(order.state)
        row["quotes"] = Jsonb(row["quotes"])
        columns = ", ".join(f'"{k}"' for k in row)
        values = ", ".join(f"%({k})s" for k in row)
        async with conn.transaction():
            await conn.execute(
                f"INSERT INTO orders ({columns}) VALUES ({values}) ON CONFLICT DO NOTHING", row
            )
            for partition, offset in offsets.items():
                await conn.execute(
                    "INSERT INTO projection_offsets VALUES (%s, %s, %s, %s)",
                    ("orders", settings.events_topic, partition, offset),
                )
    finally:
        await conn.close()


async def test_triggers_with_a_stored_snapshot_start_from_it_not_from_the_log(
    venues, fresh_database_url
):
    settings = await venues(database_url=fresh_database_url)
    # Projected before the snapshot's offsets: known only through its row.
    in_snapshot = Order(sell("140"))
    in_snapshot.accepted()
    in_snapshot.armed()
    # On the log before the snapshot's offsets, but with no row: the projector has
    # it as something that is no longer waiting, so it must not be replayed.
    not_in_snapshot = Order(sell("140"))
    after = Order(sell("139"))  # written after the snapshot: read from the tail
    async with running(settings) as (service, log):
        await log.events(not_in_snapshot.accepted(), not_in_snapshot.armed())
        await _store_snapshot(settings, await _end_offsets(settings), in_snapshot)
        await log.events(after.accepted(), after.armed())
        await log.market(pool_state(PriceTick, "150", 1))
        stop = asyncio.Event()
        task = await start(service, stop)
        try:
            await log.wait_for(
                [("TriggerOrder", in_snapshot.id, 2), ("TriggerOrder", after.id, 2)],
                quiet_s=1.5,
            )
        finally:
            stop.set()
            await task
