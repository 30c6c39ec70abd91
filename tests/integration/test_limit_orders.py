"""Limit and sniper orders on the live system: armed, triggered by the market, cancelled.

Every service runs as its own process: the venues, the market service publishing
pool states, the trigger service firing armed orders, the engine, the projector
and the gateway. Prices move only when a test moves them.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.auth import AUTH, venue_auth
from tests.integration.system import System

VENUES = ("raydium", "meteora")


@pytest.fixture
async def client(system: System) -> Any:
    async with httpx.AsyncClient(base_url=system.base_url, headers=AUTH, timeout=30) as http:
        yield http


async def submit(client: httpx.AsyncClient, **fields: Any) -> str:
    body = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1", "slippageBps": 100, **fields}
    response = await client.post("/api/orders/execute", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["orderId"])


async def order(client: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/orders/{order_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def reaches(
    client: httpx.AsyncClient, order_id: str, status: str, within: float = 30
) -> dict[str, Any]:
    """Wait until the order has ``status`` and return it."""
    async with asyncio.timeout(within):
        while True:
            current = await order(client, order_id)
            if current["status"] == status:
                return current
            await asyncio.sleep(0.1)


async def statuses(client: httpx.AsyncClient, order_id: str) -> list[str]:
    response = await client.get(f"/api/orders/{order_id}/events")
    return [event["status"] for event in response.json()["events"]]


async def sol_price(client: httpx.AsyncClient) -> Decimal:
    """Return the best executable price of selling 1 SOL, in USDC per SOL."""
    response = await client.get(
        "/api/quotes", params={"tokenIn": "SOL", "tokenOut": "USDC", "amount": "1"}
    )
    return Decimal(response.json()["route"]["expectedOut"])


async def move_sol(system: System, fraction: str) -> None:
    """Move SOL/USDC on every venue so one SOL buys ``1 + fraction`` as many USDC."""
    async with httpx.AsyncClient(
        base_url=system.settings.venues_url, headers=venue_auth(system.settings)
    ) as venues:
        for name in VENUES:
            response = await venues.post(
                f"/venues/{name}/price-moves",
                json={"token_in": "SOL", "token_out": "USDC", "fraction": fraction, "market": True},
            )
            assert response.status_code == 204, response.text


async def test_limit_order_arms_and_executes_when_the_price_crosses_its_limit(
    system: System, client: httpx.AsyncClient
) -> None:
    limit = (await sol_price(client) * Decimal("1.03")).quantize(Decimal("0.01"))
    order_id = await submit(client, type="limit", limitPrice=str(limit))
    armed = await reaches(client, order_id, "armed")
    assert armed["limitPrice"] == str(limit)
    await asyncio.sleep(1.5)  # the market as it is does not reach the limit
    assert (await order(client, order_id))["status"] == "armed"

    await move_sol(system, "0.06")
    confirmed = await reaches(client, order_id, "confirmed")

    assert Decimal(confirmed["amountOut"]) >= limit  # never filled below the limit
    too_late = await client.post(f"/api/orders/{order_id}/cancel")
    assert too_late.status_code == 409
    assert too_late.json()["error"]["status"] == "confirmed"
    assert await statuses(client, order_id) == [
        "pending",
        "armed",
        "triggered",
        "routing",
        "building",
        "submitted",
        "confirmed",
    ]
    await move_sol(system, "-0.0566")  # back near where it was, for the next tests


async def test_limit_order_expires_when_its_time_passes_unfilled(
    system: System, client: httpx.AsyncClient
) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=2)
    order_id = await submit(
        client, type="limit", limitPrice="100000", expiresAt=expires.isoformat()
    )
    await reaches(client, order_id, "armed")
    expired = await reaches(client, order_id, "expired", within=15)
    assert expired["expiresAt"] == expires.isoformat().replace("+00:00", "Z")
    assert await statuses(client, order_id) == ["pending", "armed", "expired"]


async def test_cancel_armed_order_cancels_and_cancel_after_that_answers_409(
    client: httpx.AsyncClient,
) -> None:
    order_id = await submit(client, type="limit", limitPrice="100000")
    await reaches(client, order_id, "armed")

    response = await client.post(f"/api/orders/{order_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json() == {"orderId": order_id, "status": "cancelled"}
    assert (await order(client, order_id))["status"] == "cancelled"

    again = await client.post(f"/api/orders/{order_id}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "NOT_CANCELLABLE"
    assert again.json()["error"]["status"] == "cancelled"


async def test_cancel_after_trigger_answers_409_with_the_order_status(
    system: System, client: httpx.AsyncClient
) -> None:
    market = await submit(client, type="market")
    await reaches(client, market, "confirmed")
    response = await client.post(f"/api/orders/{market}/cancel")
    assert response.status_code == 409
    assert response.json()["error"]["status"] == "confirmed"

    unknown = await client.post(f"/api/orders/{uuid.uuid4()}/cancel")
    assert unknown.status_code == 404


async def test_sniper_fires_on_the_launch_of_its_token_and_not_before(
    system: System, client: httpx.AsyncClient
) -> None:
    order_id = await submit(client, type="sniper", tokenOut="PEPE", amount="0.5", slippageBps=500)
    await reaches(client, order_id, "armed")
    await asyncio.sleep(2)  # no PEPE pool: nothing fires
    assert (await order(client, order_id))["status"] == "armed"

    launch = await client.post(
        "/api/simulate/launch", json={"symbol": "PEPE", "venue": "raydium", "liquidityUsd": "50000"}
    )
    assert launch.status_code == 201, launch.text

    confirmed = await reaches(client, order_id, "confirmed")
    assert confirmed["venue"] == "raydium"
    assert Decimal(confirmed["amountOut"]) > 0
    assert await statuses(client, order_id) == [
        "pending",
        "armed",
        "triggered",
        "routing",
        "building",
        "submitted",
        "confirmed",
    ]


async def test_sniper_ignores_a_pool_with_too_little_liquidity(
    client: httpx.AsyncClient,
) -> None:
    order_id = await submit(client, type="sniper", tokenOut="THIN", amount="0.1", slippageBps=500)
    await reaches(client, order_id, "armed")
    launch = await client.post(
        "/api/simulate/launch", json={"symbol": "THIN", "venue": "raydium", "liquidityUsd": "500"}
    )
    assert launch.status_code == 201, launch.text
    await asyncio.sleep(3)
    assert (await order(client, order_id))["status"] == "armed"


async def test_restart_with_armed_orders_keeps_them_and_fires_each_once(
    system: System, client: httpx.AsyncClient
) -> None:
    limit = (await sol_price(client) * Decimal("1.03")).quantize(Decimal("0.01"))
    order_ids = [await submit(client, type="limit", limitPrice=str(limit)) for _ in range(10)]
    for order_id in order_ids:
        await reaches(client, order_id, "armed")

    # Both the engine and the trigger service die hard, and come back.
    system.kill("engine")
    system.kill("triggers")
    system.start("engine")
    system.start("triggers")
    await asyncio.sleep(3)
    await move_sol(system, "0.06")

    for order_id in order_ids:
        await reaches(client, order_id, "confirmed", within=90)
        trail = await statuses(client, order_id)
        assert trail.count("triggered") == 1
        assert trail.count("submitted") == 1
    await move_sol(system, "-0.0566")
