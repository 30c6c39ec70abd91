"""The engine forgets ended orders after its retention, from its housekeeping timer.

faust refuses a table delete outside the handling of a message; the engine once
crashed (and crashed again after every restart) the first time it retired an order.
Every service runs as its own process against the real broker and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import pytest

from adapters.log_reader import read_topics
from events.messages import order_key
from tests.auth import AUTH
from tests.integration.system import System

ORDER = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amount": "1", "slippageBps": 100}


@pytest.fixture(scope="module")
def system_overrides() -> dict[str, Any]:
    return {"engine_retention_s": 2.0}


def forgotten(system: System) -> int:
    """Return how many orders the engine's log says it forgot."""
    total = 0
    for line in (system.log_dir / "engine.log").read_text().splitlines():
        if line.startswith("{") and "ended over" in line:
            total += int(json.loads(line)["message"].split()[1])
    return total


async def test_ended_orders_are_forgotten_with_a_tombstone_where_their_record_is(
    system: System,
) -> None:
    async with httpx.AsyncClient(base_url=system.base_url, headers=AUTH, timeout=10) as http:
        order_ids = []
        for _ in range(3):
            response = await http.post("/api/orders/execute", json=ORDER)
            assert response.status_code == 202, response.text
            order_ids.append(response.json()["orderId"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            statuses = [(await http.get(f"/api/orders/{o}")).json()["status"] for o in order_ids]
            if all(s == "confirmed" for s in statuses):
                break
            await asyncio.sleep(0.5)
        assert statuses == ["confirmed"] * 3

    deadline = time.monotonic() + 30
    while forgotten(system) < 3 and time.monotonic() < deadline:
        system.check_alive()  # the engine must not crash doing it
        await asyncio.sleep(0.5)
    assert forgotten(system) >= 3
    await asyncio.sleep(2)
    system.check_alive()

    changelog = f"{system.settings.engine_id}-orders-changelog"
    keys = {order_key(uuid.UUID(o)) for o in order_ids}
    records: dict[bytes, list[tuple[int, bytes | None]]] = {key: [] for key in keys}
    async with read_topics(system.settings, [changelog]) as snapshot:
        async for batch in snapshot.batches():
            for record in batch:
                if record.key in keys:
                    records[record.key].append((record.partition, record.value))
    for key, written in records.items():
        assert written, key
        assert written[-1][1] is None, f"{key!r} has no tombstone: {written[-1]}"
        assert len({partition for partition, _ in written}) == 1, (key, written)
