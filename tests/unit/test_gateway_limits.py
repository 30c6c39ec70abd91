"""What the gateway bounds before any broker or database is involved: slow requests,
sockets per client and in all, and the shape of the errors it answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from adapters.processes import free_port
from adapters.settings import Settings
from services.gateway import deps, errors
from services.gateway.routes import orders
from services.gateway.submissions import Submissions
from tests.gateway_server import serving

UNUSED_DATABASE = "postgresql://nobody@127.0.0.1:9/nothing"


def settings_of(**overrides: Any) -> Settings:
    return Settings(database_url=UNUSED_DATABASE, gateway_port=free_port(), **overrides)


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
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
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
    async with httpx.AsyncClient(base_url=base) as client:
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
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.get(f"/api/orders/{uuid.uuid4()}")

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "INTERNAL_ERROR"
