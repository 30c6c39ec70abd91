"""What the gateway bounds before any broker or database is involved: slow requests,
sockets per client and in all, and the shape of the errors it answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from adapters.processes import free_port
from adapters.settings import Settings
from domain.accounts import DEV_ACCOUNT, Caller
from events.messages import SwapAttemptFailed
from services.gateway import deps, errors
from services.gateway.adapters import Gateway
from services.gateway.app import create_app
from services.gateway.auth import authenticate
from services.gateway.routes import orders
from services.gateway.sockets import cut_when_stalled
from services.gateway.submissions import Submissions
from services.gateway.tail import Logged
from tests.auth import AUTH, DEV_KEY, connect
from tests.gateway_server import open_websocket, serving
from tests.unit.factories import T0

UNUSED_DATABASE = "postgresql://nobody@127.0.0.1:9/nothing"
ADMIN = Caller(DEV_ACCOUNT, "admin", "dev")


def settings_of(**overrides: Any) -> Settings:
    return Settings(
        database_url=UNUSED_DATABASE,
        gateway_port=free_port(),
        dev_api_key=DEV_KEY,
        order_id_secret="unit-test-secret",
        **overrides,
    )


@pytest.fixture
async def gateway() -> AsyncIterator[Settings]:
    """A gateway whose parts never start: 0.5 s to send a request, 2 sockets per client."""
    settings = settings_of(http_read_timeout_s=0.5, ws_max_sockets_per_client=2)
    async with serving(settings, lifespan=False):
        yield settings


async def read_until_closed(reader: asyncio.StreamReader, within: float) -> bytes:
    async with asyncio.timeout(within):
        return await reader.read()


async def test_http_request_whose_headers_never_end_is_cut_within_the_read_timeout(
    gateway: Settings,
) -> None:
    reader, writer = await asyncio.open_connection(gateway.gateway_host, gateway.gateway_port)
    started = time.monotonic()
    writer.write(b"GET /health HTTP/1.1\r\nHost: gateway\r\n")  # and never the blank line

    answer = await read_until_closed(reader, within=5)

    assert answer == b""
    assert 0.4 < time.monotonic() - started < 2
    writer.close()


async def test_http_connection_that_sends_nothing_is_cut_within_the_read_timeout(
    gateway: Settings,
) -> None:
    reader, writer = await asyncio.open_connection(gateway.gateway_host, gateway.gateway_port)
    started = time.monotonic()

    assert await read_until_closed(reader, within=5) == b""
    assert time.monotonic() - started < 2
    writer.close()


async def test_http_body_that_never_ends_answers_408_request_timeout_and_closes(
    gateway: Settings,
) -> None:
    reader, writer = await asyncio.open_connection(gateway.gateway_host, gateway.gateway_port)
    writer.write(
        b"POST /api/orders/execute HTTP/1.1\r\nHost: gateway\r\n"
        + f"Authorization: Bearer {DEV_KEY}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        b'{"type": "m'
    )
    started = time.monotonic()

    answer = await read_until_closed(reader, within=5)

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"]["code"] == "REQUEST_TIMEOUT"
    assert time.monotonic() - started < 2
    writer.close()


async def closed(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Read ``ws`` until the server closes it; return the close code and reason."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(5):
            async for _ in ws:
                pass
    return ws.close_code, ws.close_reason


async def close_code_of(url: str) -> int | None:
    async with connect(url) as ws:
        return (await closed(ws))[0]


async def test_websockets_beyond_the_limit_per_client_are_closed_4429(gateway: Settings) -> None:
    url = f"ws://{gateway.gateway_host}:{gateway.gateway_port}/api/stream"
    async with connect(url), connect(url):
        third = f"ws://{gateway.gateway_host}:{gateway.gateway_port}/api/orders/execute"
        assert await close_code_of(f"{third}?orderId={uuid.uuid4()}") == 4429
        assert await close_code_of(url) == 4429
    async with connect(url) as again:  # the places are free again once the first two left
        await asyncio.sleep(0.2)
        assert again.close_code is None


async def test_websockets_beyond_the_limit_in_all_are_closed_4429() -> None:
    settings = settings_of(ws_max_sockets=1)
    async with serving(settings, lifespan=False):
        url = f"ws://{settings.gateway_host}:{settings.gateway_port}/api/stream"
        async with connect(url), connect(url) as refused:
            assert await closed(refused) == (4429, "too many sockets")


async def test_read_while_the_database_is_unreachable_answers_503_with_retry_after(
    gateway: Settings,
) -> None:
    base = f"http://{gateway.gateway_host}:{gateway.gateway_port}"
    async with httpx.AsyncClient(base_url=base, headers=AUTH) as client:
        response = await client.get(f"/api/orders/{uuid.uuid4()}")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.json()["error"]["code"] == "DATABASE_UNAVAILABLE"


class FailingReadSide:
    async def state(self, order_id: uuid.UUID) -> None:
        raise RuntimeError("a bug")


async def test_unexpected_error_answers_500_in_the_error_envelope() -> None:
    app = FastAPI()
    errors.install(app)
    app.include_router(orders.router)
    app.dependency_overrides[deps.read_side] = FailingReadSide
    app.dependency_overrides[deps.submissions] = Submissions
    app.dependency_overrides[authenticate] = lambda: ADMIN
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.get(f"/api/orders/{uuid.uuid4()}")

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "INTERNAL_ERROR"


class StubTransport:
    """What the stall watch reads of a connection: its unsent bytes; and whether it cut it."""

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes
        self.aborted = False

    def get_write_buffer_size(self) -> int:
        return self.sizes.pop(0) if len(self.sizes) > 1 else self.sizes[0]

    def abort(self) -> None:
        self.aborted = True


class StubSocket:
    def __init__(self, transport: StubTransport) -> None:
        self.scope = {"oee.transport": transport}


async def test_stall_watch_cuts_a_peer_that_takes_none_of_what_waits_for_it() -> None:
    transport = StubTransport([0, 5000])
    started = time.monotonic()

    await asyncio.wait_for(cut_when_stalled(StubSocket(transport), 0.3), 5)  # type: ignore[arg-type]

    assert transport.aborted
    assert 0.3 <= time.monotonic() - started < 1.5


async def test_stall_watch_leaves_a_peer_that_keeps_taking_data() -> None:
    transport = StubTransport([9000 - 500 * n for n in range(18)] + [0])
    watch = asyncio.create_task(cut_when_stalled(StubSocket(transport), 0.3))  # type: ignore[arg-type]

    await asyncio.sleep(1.5)

    assert not watch.done()
    assert not transport.aborted
    watch.cancel()


def stalled_websocket(settings: Settings, path: str) -> socket.socket:
    """Open a WebSocket with a tiny receive buffer, and never read from it."""
    return open_websocket(settings.gateway_host, settings.gateway_port, path, rcvbuf=4096)


def retries(order_id: uuid.UUID, count: int) -> list[Logged]:
    """Return ``count`` bulky events of one order, in sequence (their legality is not the point)."""
    return [
        Logged(
            SwapAttemptFailed(
                message_id=uuid.uuid4(),
                order_id=order_id,
                seq=seq,
                occurred_at=T0,
                correlation_id=order_id,
                venue="raydium",
                attempt=1,
                code="NETWORK_ERROR",
                reason="x" * 1000,
                retry_at=T0,
            ),
            {"topic": "orders.events", "partition": 0, "offset": seq},
        )
        for seq in range(1, count + 1)
    ]


@pytest.fixture
async def stalling_gateway() -> AsyncIterator[tuple[Settings, Gateway]]:
    """A gateway that cuts a peer taking nothing for 1 s, and never drops it for its queue."""
    settings = settings_of(
        ws_send_buffer_bytes=4096,
        stream_buffer=100_000,
        ws_ping_timeout_s=1.0,
        ws_ping_interval_s=600.0,  # no heartbeat: the stall alone must cut it
    )
    app = create_app(settings)
    async with serving(settings, lifespan=False, app=app):
        yield settings, app.state.gateway


async def until(condition: Callable[[], bool], within: float) -> float:
    """Wait until ``condition()`` holds; return how long that took."""
    started = time.monotonic()
    async with asyncio.timeout(within):
        while True:
            if condition():
                return time.monotonic() - started
            await asyncio.sleep(0.05)


async def test_firehose_socket_that_stops_reading_is_cut_once_nothing_moves_for_the_timeout(
    stalling_gateway: tuple[Settings, Gateway],
) -> None:
    settings, gateway = stalling_gateway
    stalled = await asyncio.to_thread(stalled_websocket, settings, "/api/stream")
    try:
        await until(lambda: gateway.fanout.listeners == 1, within=5)
        for item in retries(uuid.uuid4(), 300):  # 300 KB, far beyond the buffers
            gateway.on_event(item)

        took = await until(lambda: gateway.fanout.listeners == 0, within=10)
    finally:
        stalled.close()
    assert took < 4


async def test_order_socket_that_stops_reading_is_cut_once_nothing_moves_for_the_timeout(
    stalling_gateway: tuple[Settings, Gateway],
) -> None:
    settings, gateway = stalling_gateway
    order_id = uuid.uuid4()
    events = retries(order_id, 300)
    gateway.on_event(events[0])  # known to the tail; the database is down
    path = f"/api/orders/execute?orderId={order_id}"
    stalled = await asyncio.to_thread(stalled_websocket, settings, path)
    try:
        await until(lambda: gateway.recent.listeners == 1, within=5)
        for item in events[1:]:
            gateway.on_event(item)

        took = await until(lambda: gateway.recent.listeners == 0, within=10)
    finally:
        stalled.close()
    assert took < 4
