"""Accounts and API keys on the live system: who may see, cancel and stream which order.

Every service runs as its own process. Keys are made the way ``oee keys create``
makes them (one test runs the command itself): a record on the accounts topic,
which the running gateway reads within a second or two.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from adapters.settings import REPO_ROOT
from cli.keys import create_key
from events.accounts import Role
from tests.auth import AUTH
from tests.integration.system import System

MARKET = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amount": "0.5"}
# A limit sell far above any price: it stays armed until cancelled.
ARMED = {**MARKET, "type": "limit", "limitPrice": "100000"}
TERMINAL = {"confirmed", "failed", "cancelled", "expired"}


@pytest.fixture(scope="module")
def system_overrides() -> dict[str, Any]:
    # Low enough that one account's burst is throttled, high enough for the polling here.
    return {"rate_limit_per_s": 50.0, "rate_limit_burst": 20}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def accepted(system: System, key: str, within: float = 10) -> float:
    """Wait until the gateway takes ``key``; return how long that took."""
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=system.base_url, headers=bearer(key)) as http:
        async with asyncio.timeout(within):
            while True:
                answer = await http.get("/api/orders", params={"limit": "1"})
                if answer.status_code != 401:
                    return time.monotonic() - started
                await asyncio.sleep(0.05)


async def new_account(system: System, role: Role = "client") -> str:
    """Return a working key of a new account of its own."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    key = await create_key(system.settings, f"{account}-key", account, role)
    await accepted(system, key)
    return key


@contextlib.asynccontextmanager
async def client_of(system: System, key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.base_url, headers=bearer(key), timeout=30) as http:
        yield http


async def submit(http: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> str:
    response = await http.post("/api/orders/execute", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["orderId"])


async def reaches(
    http: httpx.AsyncClient, order_id: str, statuses: set[str], within: float = 30
) -> str:
    async with asyncio.timeout(within):
        while True:
            response = await http.get(f"/api/orders/{order_id}")
            if response.status_code == 200 and response.json()["status"] in statuses:
                return str(response.json()["status"])
            await asyncio.sleep(0.1)


async def close_of(ws: ClientConnection, within: float = 10) -> tuple[int | None, list[Any]]:
    """Read ``ws`` until the server closes it; return the close code and what came."""
    received = []
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(within):
            async for raw in ws:
                received.append(json.loads(raw))
    return ws.close_code, received


async def test_key_made_by_oee_keys_create_works_within_two_seconds(system: System) -> None:
    env = {**os.environ, **system.settings.as_env()}
    made = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cli", "keys", "create", "alice-laptop", "--account", "alice"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]

    took = await accepted(system, key)

    print(f"the running gateway took the new key after {took:.2f}s")
    assert took < 2
    assert key.startswith("oee_")
    assert len(key) > 40
    # The key is not on the log: only its hash is.
    assert key not in made.stderr


async def test_request_without_a_key_or_with_an_unknown_key_answers_401(system: System) -> None:
    async with httpx.AsyncClient(base_url=system.base_url) as http:
        missing = await http.get("/api/orders")
        unknown = await http.get("/api/orders", headers=bearer("oee_nobody-made-this"))
        other_scheme = await http.post(
            "/api/orders/execute", json=MARKET, headers={"Authorization": "Basic Zm9vOmJhcg=="}
        )
        health = await http.get("/health")
        page = await http.get("/")

    for response in (missing, unknown, other_scheme):
        assert response.status_code == 401
        error = response.json()["error"]
        assert (error["code"], error["field"]) == ("UNAUTHENTICATED", "Authorization")
        assert response.headers["www-authenticate"] == "Bearer"
    assert (health.status_code, page.status_code) == (200, 200)


@pytest.mark.parametrize("path", ["/api/stream", f"/api/orders/execute?orderId={uuid.UUID(int=1)}"])
async def test_socket_without_a_known_key_closes_4401(system: System, path: str) -> None:
    async with ws_connect(f"{system.ws_url}{path}") as ws:
        assert (await close_of(ws))[0] == 4401
    async with ws_connect(f"{system.ws_url}{path}", additional_headers=bearer("oee_x")) as ws:
        assert (await close_of(ws))[0] == 4401


async def test_client_key_on_admin_routes_answers_403(system: System) -> None:
    key = await new_account(system)
    async with client_of(system, key) as http:
        launch = await http.post("/api/simulate/launch", json={"symbol": "NOPE"})
        analytics = await http.get("/api/analytics")
    async with httpx.AsyncClient(base_url=system.base_url, headers=AUTH) as admin:
        as_admin = await admin.get("/api/analytics")

    for response in (launch, analytics):
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "FORBIDDEN"
    assert as_admin.status_code == 200


async def test_another_account_cannot_see_cancel_or_stream_your_order(system: System) -> None:
    alice, bob = await new_account(system), await new_account(system)
    async with client_of(system, alice) as mine, client_of(system, bob) as theirs:
        order_id = await submit(mine, ARMED)
        await reaches(mine, order_id, {"armed"})

        read = await theirs.get(f"/api/orders/{order_id}")
        trail = await theirs.get(f"/api/orders/{order_id}/events")
        cancel = await theirs.post(f"/api/orders/{order_id}/cancel")
        url = f"{system.ws_url}/api/orders/execute?orderId={order_id}"
        async with ws_connect(url, additional_headers=bearer(bob)) as ws:
            code, streamed = await close_of(ws)
        still = (await mine.get(f"/api/orders/{order_id}")).json()["status"]
        async with httpx.AsyncClient(base_url=system.base_url, headers=AUTH) as admin:
            seen_by_admin = await admin.get(f"/api/orders/{order_id}")
        mine_cancelled = await mine.post(f"/api/orders/{order_id}/cancel")

    for response in (read, trail, cancel):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "ORDER_NOT_FOUND"
    assert (code, streamed) == (4404, [])
    assert still == "armed"  # bob's cancel changed nothing
    assert seen_by_admin.status_code == 200
    assert mine_cancelled.json()["status"] == "cancelled"


async def firehose(system: System, key: str, into: list[dict[str, Any]]) -> None:
    async with ws_connect(f"{system.ws_url}/api/stream", additional_headers=bearer(key)) as ws:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                into.append(json.loads(raw))


async def test_list_and_firehose_show_only_the_callers_orders(system: System) -> None:
    alice, bob = await new_account(system), await new_account(system)
    seen_by: dict[str, list[dict[str, Any]]] = {alice: [], bob: []}
    feeds = [asyncio.create_task(firehose(system, key, seen_by[key])) for key in seen_by]
    await asyncio.sleep(0.5)  # the feeds are open once the handshakes are done
    try:
        async with client_of(system, alice) as mine, client_of(system, bob) as theirs:
            alices = [await submit(mine, MARKET) for _ in range(2)]
            bobs = [await submit(theirs, MARKET)]
            for order_id in alices:
                await reaches(mine, order_id, TERMINAL)
            await reaches(theirs, bobs[0], TERMINAL)
            await asyncio.sleep(0.5)  # the last events reach the feeds
            listed_alice = (await mine.get("/api/orders")).json()["orders"]
            listed_bob = (await theirs.get("/api/orders")).json()["orders"]
        async with httpx.AsyncClient(base_url=system.base_url, headers=AUTH) as admin:
            listed_admin = (await admin.get("/api/orders", params={"limit": "200"})).json()
    finally:
        for feed in feeds:
            feed.cancel()

    assert sorted(o["orderId"] for o in listed_alice) == sorted(alices)
    assert [o["orderId"] for o in listed_bob] == bobs
    assert set(alices + bobs) <= {o["orderId"] for o in listed_admin["orders"]}
    assert {m["orderId"] for m in seen_by[alice]} == set(alices)
    assert {m["orderId"] for m in seen_by[bob]} == set(bobs)
    # Every event of each order reached its owner's feed, the terminal one included.
    assert {m["status"] for m in seen_by[bob]} & TERMINAL


async def test_same_idempotency_key_in_two_accounts_gives_two_orders(system: System) -> None:
    alice, bob = await new_account(system), await new_account(system)
    key = {"Idempotency-Key": "order-1"}
    async with client_of(system, alice) as mine, client_of(system, bob) as theirs:
        alices = await submit(mine, MARKET, **key)
        bobs = await submit(theirs, MARKET, **key)
        alices_again = await submit(mine, MARKET, **key)
        bobs_again = await submit(theirs, MARKET, **key)
        await reaches(mine, alices, TERMINAL)
        await reaches(theirs, bobs, TERMINAL)
        mine_listed = (await mine.get("/api/orders")).json()["orders"]

    assert alices != bobs
    assert (alices_again, bobs_again) == (alices, bobs)
    assert [o["orderId"] for o in mine_listed] == [alices]


async def test_key_in_the_socket_subprotocol_or_query_streams_the_order(system: System) -> None:
    key = await new_account(system)
    async with client_of(system, key) as http:
        order_id = await submit(http, MARKET)
    url = f"{system.ws_url}/api/orders/execute?orderId={order_id}"
    async with ws_connect(url, subprotocols=[f"bearer.{key}"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == f"bearer.{key}"
        by_protocol = await close_of(ws, 30)
    async with ws_connect(f"{url}&apiKey={key}") as ws:
        by_query = await close_of(ws, 30)

    for code, events in (by_protocol, by_query):
        assert code == 1000
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["status"] in TERMINAL


async def test_burst_beyond_the_rate_limit_answers_429_with_retry_after(system: System) -> None:
    key = await new_account(system)
    async with client_of(system, key) as http:
        answers = await asyncio.gather(
            *(http.get("/api/orders", params={"limit": "1"}) for _ in range(80))
        )
        async with httpx.AsyncClient(base_url=system.base_url, headers=AUTH) as other:
            other_account = await other.get("/api/orders", params={"limit": "1"})
        await asyncio.sleep(1.5)
        later = await http.get("/api/orders", params={"limit": "1"})

    limited = [a for a in answers if a.status_code == 429]
    assert limited
    assert len(limited) < 80
    assert {a.status_code for a in answers} == {200, 429}
    error = limited[0].json()["error"]
    assert error["code"] == "RATE_LIMITED"
    assert int(limited[0].headers["retry-after"]) == error["retryAfter"] >= 1
    assert other_account.status_code == 200  # each account has a bucket of its own
    assert later.status_code == 200
