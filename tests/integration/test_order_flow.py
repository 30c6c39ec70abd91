"""The whole flow, as a newcomer would try it: submit over HTTP, follow over WebSocket.

Every service runs as its own process against the real broker and PostgreSQL:
the gateway writes a command, the engine routes and executes it, the projector
builds the read models, and the gateway streams each step back.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed

from services.projector.replay import replay
from tests.auth import AUTH, connect
from tests.integration.system import System
from tests.logins import as_principal
from tests.orders import SELL_SOL

ORDER = SELL_SOL
LIFECYCLE = ["pending", "routing", "building", "submitted", "confirmed"]


@pytest.fixture
async def client(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.base_url, headers=AUTH, timeout=30) as http:
        yield http


async def submit(client: httpx.AsyncClient, body: Any = None, **headers: str) -> str:
    response = await client.post("/api/orders/execute", json=body or ORDER, headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending"
    return str(response.json()["orderId"])


async def follow(system: System, order_id: str, within: float = 60) -> tuple[list[dict], int]:
    """Return every message the order's WebSocket sent, and its close code."""
    messages: list[dict] = []
    async with connect(f"{system.ws_url}/api/orders/execute?orderId={order_id}") as socket:
        async with asyncio.timeout(within):
            try:
                async for raw in socket:
                    messages.append(json.loads(raw))
            except ConnectionClosed:
                pass
        code = socket.close_code
    assert code is not None
    return messages, code


async def read_model_row(database_url: str, order_id: str, status: str) -> dict[str, Any]:
    """Wait until the projector has the order in ``status`` and return its row."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        for _ in range(300):
            cursor = await conn.execute(
                "select * from orders where order_id = %s", (uuid.UUID(order_id),)
            )
            row = await cursor.fetchone()
            await conn.commit()
            if row is not None and cursor.description is not None:
                data = {col.name: value for col, value in zip(cursor.description, row, strict=True)}
                if data["status"] == status:
                    return data
            await asyncio.sleep(0.1)
    raise AssertionError(f"order {order_id} never reached {status} in the read model")


async def test_market_order_streams_every_step_then_closes_normally(system, client):
    order_id = await submit(client)
    # Connecting right after the 202 means the engine has most likely not written
    # anything yet: the stream must still deliver everything from the first event.
    messages, code = await follow(system, order_id)

    assert [m["status"] for m in messages] == LIFECYCLE
    assert [m["seq"] for m in messages] == [1, 2, 3, 4, 5]
    assert code == 1000
    assert all(m["orderId"] == order_id for m in messages)
    routing = messages[1]["details"]
    assert {q["venue"] for q in routing["quotes"]} == {"raydium", "meteora"}
    assert routing["venue"] in {"raydium", "meteora"}
    assert messages[3]["details"]["txHash"]
    confirmed = messages[4]["details"]
    assert float(confirmed["amountOut"]) > 0
    assert confirmed["txHash"] == messages[3]["details"]["txHash"]


async def test_confirmed_order_is_in_the_read_models_with_its_audit_trail(system, client):
    order_id = await submit(client)
    await follow(system, order_id)
    row = await read_model_row(system.settings.database_url or "", order_id, "confirmed")
    assert row["seq"] == 5
    assert str(row["amount"]) == "1.5"
    assert row["amount_out"] > 0
    assert row["tx_hash"]

    trail = (await client.get(f"/api/orders/{order_id}/events")).json()["events"]
    assert [e["seq"] for e in trail] == [1, 2, 3, 4, 5]
    assert all(e["position"]["topic"] == system.settings.events_topic for e in trail)
    offsets = [e["position"]["offset"] for e in trail]
    assert offsets == sorted(offsets)

    state = (await client.get(f"/api/orders/{order_id}")).json()
    assert state["status"] == "confirmed"
    assert state["amountOut"] == str(row["amount_out"])


async def test_late_subscriber_receives_the_whole_history(system, client):
    order_id = await submit(client)
    first, _ = await follow(system, order_id)
    late, code = await follow(system, order_id)
    assert late == first
    assert code == 1000


async def test_fifty_orders_at_once_all_confirm_with_gap_free_sequences(system, client):
    # The venues' price model draws every quote within their spread (up to 5 % apart),
    # so the tolerance covers it: this test is about concurrency, not slippage.
    wide = {**ORDER, "slippageBps": 1000}
    order_ids = await asyncio.gather(*(submit(client, wide) for _ in range(50)))
    assert len(set(order_ids)) == 50
    streams = await asyncio.gather(*(follow(system, oid, within=120) for oid in order_ids))
    for messages, code in streams:
        assert [m["status"] for m in messages] == LIFECYCLE
        assert [m["seq"] for m in messages] == [1, 2, 3, 4, 5]
        assert code == 1000
    trails: dict[uuid.UUID, list[int]] = {}
    async with await psycopg.AsyncConnection.connect(system.settings.database_url or "") as conn:
        for _ in range(300):
            cursor = await conn.execute(
                "select order_id, array_agg(seq order by seq) from order_events"
                " where order_id = any(%s) group by order_id",
                ([uuid.UUID(o) for o in order_ids],),
            )
            trails = dict(await cursor.fetchall())
            await conn.commit()
            if len(trails) == 50 and all(seqs == [1, 2, 3, 4, 5] for seqs in trails.values()):
                break
            await asyncio.sleep(0.1)
    assert len(trails) == 50
    assert all(seqs == [1, 2, 3, 4, 5] for seqs in trails.values())


async def test_unknown_order_websocket_closes_with_4404(system):
    _, code = await follow(system, str(uuid.uuid4()), within=15)
    assert code == 4404
    _, code = await follow(system, "not-a-uuid", within=15)
    assert code == 4404


async def test_idempotency_key_same_body_returns_the_same_order(system, client):
    key = f"key-{uuid.uuid4()}"
    first = await submit(client, ORDER, **{"Idempotency-Key": key})
    again = await client.post("/api/orders/execute", json=ORDER, headers={"Idempotency-Key": key})
    assert again.status_code == 202
    assert again.json()["orderId"] == first
    messages, _ = await follow(system, first)
    assert [m["seq"] for m in messages] == [1, 2, 3, 4, 5]
    after = await client.post("/api/orders/execute", json=ORDER, headers={"Idempotency-Key": key})
    assert after.json() == {"orderId": first, "status": "confirmed"}


async def test_idempotency_key_other_body_is_409(system, client):
    key = f"key-{uuid.uuid4()}"
    await submit(client, ORDER, **{"Idempotency-Key": key})
    other = {**ORDER, "amount": "2"}
    response = await client.post(
        "/api/orders/execute", json=other, headers={"Idempotency-Key": key}
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    assert response.json()["error"]["field"] == "Idempotency-Key"


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({**ORDER, "tokenIn": "DOGE"}, 422, "UNKNOWN_TOKEN", "tokenIn"),
        ({**ORDER, "tokenOut": "SOL"}, 422, "SAME_TOKEN", "tokenOut"),
        ({**ORDER, "amount": "0"}, 422, "INVALID_AMOUNT", "amount"),
        ({**ORDER, "amount": "lots"}, 422, "INVALID_AMOUNT", "amount"),
        ({**ORDER, "slippageBps": 0}, 422, "INVALID_SLIPPAGE", "slippageBps"),
        ({**ORDER, "slippageBps": 9000}, 422, "INVALID_SLIPPAGE", "slippageBps"),
        ({**ORDER, "type": "iceberg"}, 422, "UNKNOWN_ORDER_TYPE", "type"),
        (b'{"type": "market", "tokenIn":', 400, "INVALID_JSON", None),
        (b"x" * 20_000, 413, "BODY_TOO_LARGE", None),
    ],
)
async def test_bad_input_gets_4xx_with_code_and_field(client, body, status, code, field):
    if isinstance(body, bytes):
        response = await client.post(
            "/api/orders/execute", content=body, headers={"content-type": "application/json"}
        )
    else:
        response = await client.post("/api/orders/execute", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert error["message"]


async def test_unknown_order_rest_is_404(client):
    response = await client.get(f"/api/orders/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ORDER_NOT_FOUND"


async def test_replay_rebuilds_identical_read_models(system, client):
    order_ids = await asyncio.gather(*(submit(client) for _ in range(5)))
    streams = await asyncio.gather(*(follow(system, oid) for oid in order_ids))
    database_url = system.settings.database_url or ""
    for oid, (messages, _) in zip(order_ids, streams, strict=True):
        await read_model_row(database_url, oid, messages[-1]["status"])

    async def snapshot() -> tuple[list[tuple], list[tuple]]:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            orders = await (await conn.execute("select * from orders order by order_id")).fetchall()
            events = await (
                await conn.execute("select * from order_events order by order_id, seq")
            ).fetchall()
        return orders, events

    # The live projector is stopped so both runs are compared on the same log.
    system.stop("projector")
    try:
        before = await snapshot()
        # As `oee replay` does: as the projector, whose tables it swaps.
        await replay(as_principal(system.settings, "projector"))
        after = await snapshot()
    finally:
        system.start("projector")
    assert len(before[0]) >= 5
    assert after == before


async def test_quotes_show_every_venue_and_the_route_the_engine_would_take(client):
    response = await client.get(
        "/api/quotes", params={"tokenIn": "SOL", "tokenOut": "USDC", "amount": "2"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert {q["venue"] for q in body["quotes"]} == {"raydium", "meteora"}
    best = max(body["quotes"], key=lambda q: Decimal(q["amountOut"]))
    assert body["route"]["venue"] == best["venue"]
    assert Decimal(body["route"]["expectedOut"]) == Decimal(best["amountOut"])
    assert body["route"]["reason"]


async def test_quotes_for_an_unknown_token_is_422_naming_the_field(client):
    response = await client.get(
        "/api/quotes", params={"tokenIn": "SOL", "tokenOut": "WAT", "amount": "2"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "tokenOut"
