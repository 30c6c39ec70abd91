"""An engine killed mid-flight loses no order and executes none twice.

Venues run with realistic latency (swaps land 2-3 s after submission), so when
the engine is SIGKILLed most orders are between submission and confirmation.
A new engine process recovers its table from the changelog, gets the
unacknowledged events again and finishes every order.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from adapters.kafka import client_options
from events.messages import Event, decode_event
from tests.auth import AUTH
from tests.integration.system import System

ORDER = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amount": "2", "slippageBps": 300}
TERMINAL = {"confirmed", "failed"}


@pytest.fixture(scope="module")
def system_overrides() -> dict[str, Any]:
    return {"venue_profile": "realistic"}


async def log_events(system: System) -> list[Any]:
    """Read every event on the events topic, duplicates included, in log order."""
    consumer = AIOKafkaConsumer(
        system.settings.events_topic,
        **client_options(system.settings),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        ends = await consumer.end_offsets(list(consumer.assignment()) or [])
        events: list[Event] = []
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                events.extend(decode_event(r.value) for r in records if r.value)
            positions = {tp: await consumer.position(tp) for tp in consumer.assignment()}
            if not batch and all(positions.get(tp, 0) >= end for tp, end in ends.items()):
                return events
    finally:
        await consumer.stop()


async def statuses(client: httpx.AsyncClient, order_ids: list[str]) -> dict[str, str]:
    answers = await asyncio.gather(*(client.get(f"/api/orders/{oid}") for oid in order_ids))
    return {oid: a.json().get("status", "?") for oid, a in zip(order_ids, answers, strict=True)}


async def test_engine_killed_mid_flight_finishes_every_order_once(system: System):
    async with httpx.AsyncClient(base_url=system.base_url, headers=AUTH, timeout=30) as client:
        responses = await asyncio.gather(
            *(client.post("/api/orders/execute", json=ORDER) for _ in range(20))
        )
        order_ids = [r.json()["orderId"] for r in responses]

        # Wait until orders are in flight at the venue, then crash the engine.
        for _ in range(100):
            seen = await statuses(client, order_ids)
            if sum(s == "submitted" for s in seen.values()) >= 5:
                break
            await asyncio.sleep(0.1)
        before_crash = await statuses(client, order_ids)
        system.kill("engine")
        assert not all(s in TERMINAL for s in before_crash.values()), before_crash

        system.start("engine")
        for _ in range(600):
            final = await statuses(client, order_ids)
            if all(s in TERMINAL for s in final.values()):
                break
            await asyncio.sleep(0.2)
        assert all(s in TERMINAL for s in final.values()), final

    events = await log_events(system)
    by_order: dict[uuid.UUID, dict[int, Any]] = {}
    for event in events:
        by_order.setdefault(event.order_id, {}).setdefault(event.seq, event)  # first wins
    for oid in order_ids:
        history = by_order[uuid.UUID(oid)]
        assert sorted(history) == list(range(1, len(history) + 1)), "gap in the sequence"
        assert history[max(history)].status in TERMINAL
        # Exactly one swap per order: every submission (re-emitted or not) names the
        # same transaction, and it is the one the venue confirmed.
        hashes = {
            e.tx_hash
            for e in events
            if e.order_id == uuid.UUID(oid) and e.type in ("TransactionSubmitted", "OrderConfirmed")
        }
        assert len(hashes) == 1, hashes
        refs = {
            e.client_ref
            for e in events
            if e.order_id == uuid.UUID(oid) and e.type == "TransactionBuilt"
        }
        assert refs == {f"{oid}:1"}
