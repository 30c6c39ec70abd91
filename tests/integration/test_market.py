"""The market service on the real broker: the venue service and the market service as
processes, the market topic read back from the beginning.

The tests run in order on one pair of processes: a price move, a launch, then a
restart of the market service.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from adapters.kafka import client_options, ensure_topics
from adapters.settings import Settings
from domain.tokens import LAUNCH_DECIMALS
from events.market import MarketEvent, PoolCreated, PriceTick, decode_market
from tests.auth import AUTH, venue_auth
from tests.integration.system import System

TIMEOUT_S = 30.0


async def read_all(settings: Settings) -> list[MarketEvent]:
    """Return every message on the market topic as of now, partition by partition."""
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.market_topic, p) for p in range(settings.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        events: list[MarketEvent] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                events.extend(
                    decode_market(r.value)
                    for r in records
                    if r.offset < ends[tp] and r.value is not None
                )
        return events
    finally:
        await consumer.stop()


async def wait_for(
    settings: Settings, found: Callable[[list[MarketEvent]], MarketEvent | None]
) -> MarketEvent:
    """Read the topic until ``found`` picks a message out of it."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        event = found(await read_all(settings))
        if event is not None:
            return event
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no such message on {settings.market_topic} in {TIMEOUT_S}s")


def last_of(events: list[MarketEvent], pool_id: str) -> MarketEvent:
    return max((e for e in events if e.pool_id == pool_id), key=lambda e: e.seq)


async def wait_healthy(url: str, system: System) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    async with httpx.AsyncClient(base_url=url, headers=AUTH) as client:
        while time.monotonic() < deadline:
            system.check_alive()
            try:
                if (await client.get("/health", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"venue service not healthy in {TIMEOUT_S}s\n{system.logs()}")


@pytest.fixture(scope="module")
async def market(
    isolated_settings: Callable[..., Settings], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[System]:
    """Run the venue and market services (nothing else) on topics of their own."""
    settings = isolated_settings(tmp_path_factory.mktemp("market"))
    await ensure_topics(settings)
    running = System(settings, Path(settings.data_dir) / "logs")
    try:
        running.start("venues")
        await wait_healthy(settings.venues_url, running)
        running.start("market")
        # Every pool of both venues is created first.
        await wait_for(settings, lambda events: events[0] if len(events) >= 30 else None)
        yield running
    finally:
        running.stop_all()


async def move_price(settings: Settings, venue: str, fraction: str) -> None:
    async with httpx.AsyncClient(
        base_url=settings.venues_url, headers=venue_auth(settings)
    ) as client:
        response = await client.post(
            f"/venues/{venue}/price-moves",
            json={"token_in": "SOL", "token_out": "USDC", "fraction": fraction},
        )
    assert response.status_code == 204, response.text


async def test_market_service_first_start_creates_every_pool_once(market: System) -> None:
    events = await read_all(market.settings)

    created = [e for e in events if isinstance(e, PoolCreated)]
    assert len(created) == len(events) == 30
    assert len({e.pool_id for e in created}) == 30
    assert {e.seq for e in created} == {1}
    sol_usdc = next(e for e in created if e.pool_id == "raydium:SOL-USDC")
    assert (sol_usdc.base, sol_usdc.quote, sol_usdc.price) == ("SOL", "USDC", Decimal(150))


async def test_market_service_price_move_on_a_venue_publishes_a_price_tick(
    market: System,
) -> None:
    settings = market.settings
    before = last_of(await read_all(settings), "raydium:SOL-USDC")

    await move_price(settings, "raydium", "0.02")
    tick = await wait_for(
        settings,
        lambda events: next(
            (e for e in events if e.pool_id == "raydium:SOL-USDC" and e.seq == before.seq + 1),
            None,
        ),
    )

    assert isinstance(tick, PriceTick)
    assert tick.price == pytest.approx(before.price * Decimal("1.02"), rel=Decimal("1e-8"))
    assert tick.liquidity_usd == before.liquidity_usd


async def test_market_service_launch_publishes_pool_created_with_the_token(
    market: System,
) -> None:
    settings = market.settings
    async with httpx.AsyncClient(
        base_url=settings.venues_url, headers=venue_auth(settings)
    ) as client:
        response = await client.post("/venues/raydium/pools", json={"symbol": "SNIPE"})
    assert response.status_code == 201, response.text

    created = await wait_for(
        settings,
        lambda events: next((e for e in events if e.pool_id == "raydium:SOL-SNIPE"), None),
    )

    assert isinstance(created, PoolCreated)
    assert (created.launched_token, created.launched_decimals) == ("SNIPE", LAUNCH_DECIMALS)
    assert (created.base, created.quote, created.seq) == ("SNIPE", "SOL", 1)
    assert created.price == Decimal("0.0001")
    assert created.liquidity_usd == settings.launch_liquidity_usd


async def test_market_service_restart_continues_seqs_and_republishes_nothing(
    market: System,
) -> None:
    settings = market.settings
    market.stop("market")
    before = await read_all(settings)
    last = last_of(before, "meteora:SOL-USDC")

    # The market moves while the service is down: that change, and only it, follows.
    await move_price(settings, "meteora", "0.02")
    market.start("market")
    tick = await wait_for(
        settings,
        lambda events: next(
            (e for e in events if e.pool_id == "meteora:SOL-USDC" and e.seq == last.seq + 1),
            None,
        ),
    )
    # Several polls of the restarted service.
    await asyncio.sleep(8 * settings.market_poll_s)
    market.check_alive()
    after = await read_all(settings)

    assert isinstance(tick, PriceTick)
    assert tick.price > last.price
    assert [e.message_id for e in after if e not in before] == [tick.message_id]
