"""Failed swap attempts are retried with backoff, and the outcome lands in PostgreSQL.

The venues run with realistic latency, so a swap lands 2-3 s after submission;
faults and price moves are injected through the venue simulator's controls.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed

from tests.auth import AUTH, connect, venue_auth
from tests.integration.system import System

ORDER = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amount": "1.5", "slippageBps": 50}
VENUES = ("raydium", "meteora")


@pytest.fixture(scope="module")
def system_overrides() -> dict[str, Any]:
    return {"venue_profile": "realistic", "retry_base_s": 0.2, "retry_factor": 2.0}


@pytest.fixture
async def client(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.base_url, headers=AUTH, timeout=30) as http:
        yield http


async def script(system: System, call: str, codes: list[str]) -> None:
    async with httpx.AsyncClient(
        base_url=system.settings.venues_url, headers=venue_auth(system.settings)
    ) as venues:
        for name in VENUES:
            response = await venues.post(
                f"/venues/{name}/faults", json={"call": call, "codes": codes}
            )
            assert response.status_code == 204, response.text


async def follow(system: System, order_id: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    async with connect(f"{system.ws_url}/api/orders/execute?orderId={order_id}") as socket:
        async with asyncio.timeout(90):
            try:
                async for raw in socket:
                    messages.append(json.loads(raw))
            except ConnectionClosed:
                pass
    return messages


async def submit(client: httpx.AsyncClient) -> str:
    response = await client.post("/api/orders/execute", json=ORDER)
    assert response.status_code == 202, response.text
    return str(response.json()["orderId"])


async def projected(system: System, order_id: str, status: str) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(system.settings.database_url or "") as conn:
        for _ in range(300):
            cursor = await conn.execute(
                "select status, attempt, failure_code, failure_reason from orders"
                " where order_id = %s",
                (uuid.UUID(order_id),),
            )
            row = await cursor.fetchone()
            await conn.commit()
            if row is not None and row[0] == status:
                return dict(
                    zip(("status", "attempt", "failure_code", "failure_reason"), row, strict=True)
                )
            await asyncio.sleep(0.1)
    raise AssertionError(f"{order_id} never reached {status} in PostgreSQL")


async def test_transient_failure_is_retried_and_confirms_on_attempt_two(system, client):
    await script(system, "submit", ["NETWORK_ERROR"])
    order_id = await submit(client)
    messages = await follow(system, order_id)
    statuses = [m["status"] for m in messages]
    assert statuses == [
        "pending", "routing", "building", "retrying", "routing", "building", "submitted",
        "confirmed",
    ]  # fmt: skip
    retry = messages[3]["details"]
    assert (retry["attempt"], retry["code"]) == (1, "NETWORK_ERROR")
    assert retry["retryAt"] > messages[3]["timestamp"]
    assert messages[5]["details"]["attempt"] == 2
    row = await projected(system, order_id, "confirmed")
    assert row["attempt"] == 2


async def test_three_failures_end_failed_with_the_reason_in_postgresql(system, client):
    await script(system, "submit", ["POOL_BUSY"] * 3)
    order_id = await submit(client)
    messages = await follow(system, order_id)
    assert [m["status"] for m in messages].count("retrying") == 2
    assert messages[-1]["status"] == "failed"
    row = await projected(system, order_id, "failed")
    assert row["failure_code"] == "POOL_BUSY"
    assert row["failure_reason"].startswith("gave up after 3 attempts")
    assert row["attempt"] == 3


async def test_price_move_beyond_tolerance_fails_the_attempt_then_a_requote_confirms(
    system, client
):
    order_id = await submit(client)
    # Wait until the swap is on its way, then move every pool 5 % against it.
    async with httpx.AsyncClient(
        base_url=system.settings.venues_url, headers=venue_auth(system.settings)
    ) as venues:
        for _ in range(100):
            state = (await client.get(f"/api/orders/{order_id}")).json()
            if state.get("status") == "submitted":
                break
            await asyncio.sleep(0.05)
        assert state["status"] == "submitted", state
        for name in VENUES:
            moved = await venues.post(
                f"/venues/{name}/price-moves",
                json={"token_in": "SOL", "token_out": "USDC", "fraction": "-0.05"},
            )
            assert moved.status_code == 204, moved.text
    messages = await follow(system, order_id)
    statuses = [m["status"] for m in messages]
    assert "retrying" in statuses, statuses
    retry = next(m for m in messages if m["status"] == "retrying")
    assert retry["details"]["code"] == "SLIPPAGE_EXCEEDED"
    assert statuses.count("routing") == 2  # re-quoted at the moved price
    assert statuses[-1] == "confirmed"
    first, second = (m["details"]["expectedOut"] for m in messages if m["status"] == "routing")
    assert float(second) < float(first)
