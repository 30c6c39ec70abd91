"""WebSocket subscribers against the real system: reconnects, the firehose, many sockets.

The module's gateway buffers 16 KiB per socket and drops a firehose socket 64
events behind, and a second one
pings every second, so that slow and dead clients show up within a test's time.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from adapters.processes import free_port
from tests.auth import AUTH, connect
from tests.gateway_server import open_websocket
from tests.integration.system import System

STREAM_BUFFER = 64


@pytest.fixture(scope="module")
def system_overrides() -> dict[str, Any]:
    return {"stream_buffer": STREAM_BUFFER, "ws_send_buffer_bytes": 16 * 1024}


@pytest.fixture
async def client(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.base_url, headers=AUTH, timeout=30) as http:
        yield http


def another_gateway(system: System, name: str, **overrides: Any) -> Iterator[System]:
    """Run another gateway beside the first, on its own port, over the same log."""
    other = System(
        system.settings.model_copy(update={"gateway_port": free_port(), **overrides}),
        system.log_dir / name,
    )
    other.start("gateway")
    try:
        other.wait_healthy()
        yield other
    finally:
        other.stop_all()


@pytest.fixture(scope="module")
def second_gateway(system: System) -> Iterator[System]:
    yield from another_gateway(system, "second")


@pytest.fixture(scope="module")
def pinging_gateway(system: System) -> Iterator[System]:
    """A gateway that pings every second and gives up after one more without a pong."""
    yield from another_gateway(system, "pinging", ws_ping_interval_s=1.0, ws_ping_timeout_s=1.0)


def order(token_in: str = "SOL", token_out: str = "USDC", amount: str = "0.5") -> dict[str, Any]:
    return {
        "type": "market",
        "tokenIn": token_in,
        "tokenOut": token_out,
        "amount": amount,
        "slippageBps": 300,
    }


async def submit(client: httpx.AsyncClient, body: dict[str, Any] | None = None) -> str:
    response = await client.post("/api/orders/execute", json=body or order())
    assert response.status_code == 202, response.text
    return str(response.json()["orderId"])


async def finished(client: httpx.AsyncClient, order_ids: list[str], within: float = 90) -> None:
    """Wait until every order is confirmed or failed."""
    async with asyncio.timeout(within):
        for order_id in order_ids:
            while True:
                response = await client.get(f"/api/orders/{order_id}")
                if response.status_code == 200 and response.json()["status"] in (
                    "confirmed",
                    "failed",
                ):
                    break
                await asyncio.sleep(0.1)


async def audit_trail(client: httpx.AsyncClient, order_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/orders/{order_id}/events")
    assert response.status_code == 200, response.text
    return list(response.json()["events"])


async def read_for(ws: ClientConnection, seconds: float) -> list[dict[str, Any]]:
    """Return what arrives on ``ws`` within ``seconds`` (until it closes)."""
    received: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(seconds):
            async for raw in ws:
                received.append(json.loads(raw))
    except (TimeoutError, ConnectionClosed):
        pass
    return received


async def read_until(ws: ClientConnection, count: int, within: float = 60) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        while len(received) < count:
            received.append(json.loads(await ws.recv()))
    return received


def keys(messages: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(m["orderId"], m["seq"]) for m in messages]


# Per-order stream ----------------------------------------------------------------


async def test_order_stream_reconnect_with_last_seq_gets_exactly_the_missing_events(
    system: System, client: httpx.AsyncClient
) -> None:
    order_id = await submit(client)
    url = f"{system.ws_url}/api/orders/execute?orderId={order_id}"
    async with connect(url) as ws:
        first = await read_until(ws, 2)
    await finished(client, [order_id])

    async with connect(f"{url}&lastSeq={first[-1]['seq']}") as ws:
        rest = await read_for(ws, 30)
        assert ws.close_code == 1000

    trail = await audit_trail(client, order_id)
    assert [m["seq"] for m in first] == [1, 2]
    assert [m["seq"] for m in rest] == [e["seq"] for e in trail][2:]
    assert [m["eventId"] for m in first + rest] == [e["eventId"] for e in trail]


async def test_order_written_through_one_gateway_is_read_and_followed_through_another(
    system: System, second_gateway: System, client: httpx.AsyncClient
) -> None:
    order_id = await submit(client)
    # Read your writes on any gateway (several share one port under `oee up --scale`):
    # the other one knows the order at once, before the engine or the projector.
    async with httpx.AsyncClient(
        base_url=second_gateway.base_url, headers=AUTH, timeout=30
    ) as other:
        response = await other.get(f"/api/orders/{order_id}")
        assert response.status_code == 200, response.text
        assert response.json()["orderId"] == order_id
    url = f"{system.ws_url}/api/orders/execute?orderId={order_id}"
    async with connect(url) as ws:
        first = await read_until(ws, 2)

    # The client reconnects to the other gateway with the last seq it saw.
    resume = f"{second_gateway.ws_url}/api/orders/execute?orderId={order_id}"
    async with connect(f"{resume}&lastSeq={first[-1]['seq']}") as ws:
        rest = await read_for(ws, 30)
        assert ws.close_code == 1000

    trail = await audit_trail(client, order_id)
    assert [m["eventId"] for m in first + rest] == [e["eventId"] for e in trail]


async def test_order_stream_reconnect_after_the_end_closes_at_once_with_nothing(
    system: System, client: httpx.AsyncClient
) -> None:
    order_id = await submit(client)
    await finished(client, [order_id])
    last = (await audit_trail(client, order_id))[-1]
    url = f"{system.ws_url}/api/orders/execute?orderId={order_id}&lastSeq={last['seq']}"
    async with connect(url) as ws:
        assert await read_for(ws, 10) == []
        assert (ws.close_code, ws.close_reason) == (1000, last["status"])


async def test_order_stream_bad_last_seq_closes_4400_naming_it(system: System) -> None:
    url = f"{system.ws_url}/api/orders/execute?orderId={os.urandom(16).hex()}&lastSeq=-1"
    async with connect(url) as ws:
        await read_for(ws, 10)
        assert ws.close_code == 4400
        assert (ws.close_reason or "").startswith("lastSeq")


async def test_sockets_200_concurrent_all_receive_their_full_histories(
    system: System, client: httpx.AsyncClient
) -> None:
    order_ids = [await submit(client, order(amount=f"0.{n + 1}")) for n in range(20)]

    async def follow(order_id: str) -> tuple[list[int], int | None]:
        url = f"{system.ws_url}/api/orders/execute?orderId={order_id}"
        async with connect(url) as ws:
            messages = await read_for(ws, 90)
            return [m["seq"] for m in messages], ws.close_code

    results = await asyncio.gather(*(follow(order_ids[n % 20]) for n in range(200)))

    trails = {oid: [e["seq"] for e in await audit_trail(client, oid)] for oid in order_ids}
    for n, (seqs, code) in enumerate(results):
        assert code == 1000
        assert seqs == trails[order_ids[n % 20]]
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(seqs) >= 5


# Firehose ------------------------------------------------------------------------


async def test_firehose_filter_passes_only_matching_events(
    system: System, client: httpx.AsyncClient
) -> None:
    url = f"{system.ws_url}/api/stream?token=JUP&status=routing,confirmed&type=market"
    async with connect(url) as ws:
        await asyncio.sleep(0.3)  # the feed is open once the handshake is done
        matching = [await submit(client, order("SOL", "JUP")) for _ in range(3)]
        others = [await submit(client, order("SOL", "USDC")) for _ in range(3)]
        await finished(client, matching + others)
        received = await read_for(ws, 2)

    expected = [
        (oid, e["seq"])
        for oid in matching
        for e in await audit_trail(client, oid)
        if e["status"] in ("routing", "confirmed")
    ]
    assert sorted(keys(received)) == sorted(expected)
    assert {m["status"] for m in received} <= {"routing", "confirmed"}
    for message in received:
        assert message["position"]["topic"] == system.settings.events_topic
        assert message["cursor"]


async def test_firehose_venue_filter_passes_events_of_orders_routed_there(
    system: System, client: httpx.AsyncClient
) -> None:
    # A large order goes to Raydium's deeper pool, a small one to Meteora's bins.
    async with connect(f"{system.ws_url}/api/stream?venue=raydium") as ws:
        await asyncio.sleep(0.3)
        large = await submit(client, order("SOL", "USDC", "500"))
        small = await submit(client, order("SOL", "USDC", "0.2"))
        await finished(client, [large, small])
        received = await read_for(ws, 2)

    trail = await audit_trail(client, large)
    assert trail[1]["details"]["venue"] == "raydium"
    assert keys(received) == [(large, e["seq"]) for e in trail[1:]]  # from routing on


async def test_firehose_bad_filter_closes_4400_naming_the_parameter(system: System) -> None:
    async with connect(f"{system.ws_url}/api/stream?status=lost") as ws:
        await read_for(ws, 10)
        assert ws.close_code == 4400
        assert (ws.close_reason or "").startswith("status:")


async def test_firehose_reconnect_with_cursor_on_another_gateway_gets_exactly_the_missing(
    system: System, second_gateway: System, client: httpx.AsyncClient
) -> None:
    url = f"{system.ws_url}/api/stream?token=RAY"
    async with connect(url) as ws:
        await asyncio.sleep(0.3)
        early = [await submit(client, order("USDC", "RAY", "20")) for _ in range(2)]
        first = await read_until(ws, 3)
    # While disconnected, the first orders go on and more orders arrive.
    late = [await submit(client, order("RAY", "USDC", "3")) for _ in range(2)]
    await finished(client, early + late)

    resume = f"{second_gateway.ws_url}/api/stream?token=RAY&from={first[-1]['cursor']}"
    async with connect(resume) as ws:
        rest = await read_for(ws, 3)

    everything = [(oid, e["seq"]) for oid in early + late for e in await audit_trail(client, oid)]
    assert sorted(keys(first) + keys(rest)) == sorted(everything)
    assert len(set(keys(first) + keys(rest))) == len(everything)


async def test_firehose_from_earliest_replays_the_log_then_goes_live(
    system: System, client: httpx.AsyncClient
) -> None:
    before = await submit(client, order("BONK", "USDC", "100000"))
    await finished(client, [before])
    async with connect(f"{system.ws_url}/api/stream?from=earliest&token=BONK") as ws:
        history = await read_until(ws, len(await audit_trail(client, before)))
        after = await submit(client, order("USDC", "BONK", "5"))
        await finished(client, [after])
        live = await read_for(ws, 2)

    assert keys(history) == [(before, n) for n in range(1, len(history) + 1)]
    assert keys(live) == [(after, e["seq"]) for e in await audit_trail(client, after)]


# Slow and dead clients ---------------------------------------------------------------


def raw_websocket(system: System, path: str) -> socket.socket:
    """Open a WebSocket by hand on a socket with a tiny receive buffer, and never read it."""
    settings = system.settings
    return open_websocket(settings.gateway_host, settings.gateway_port, path, rcvbuf=4096)


def frames_until_closed(sock: socket.socket, within: float) -> list[tuple[int, bytes]]:
    """Read server frames (opcode, payload) until the server ends the connection."""
    sock.settimeout(within)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    frames = []
    while len(data) >= 2:
        opcode, size, at = data[0] & 0x0F, data[1] & 0x7F, 2
        if size == 126:
            size, at = int.from_bytes(data[2:4]), 4
        elif size == 127:
            size, at = int.from_bytes(data[2:10]), 10
        frames.append((opcode, data[at : at + size]))
        data = data[at + size :]
    return frames


async def sockets_open(system: System) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=system.base_url, headers=AUTH) as http:
        return dict((await http.get("/health")).json()["sockets"])


async def test_firehose_client_that_stops_reading_is_dropped_without_slowing_others(
    system: System, client: httpx.AsyncClient
) -> None:
    stalled = await asyncio.to_thread(raw_websocket, system, "/api/stream")
    try:
        async with connect(f"{system.ws_url}/api/stream") as reader:
            await asyncio.sleep(0.3)
            assert (await sockets_open(system))["firehose"] == 2
            reading = asyncio.create_task(read_for(reader, 120))
            order_ids: list[str] = []
            started = time.monotonic()
            # Orders until the stalled socket is dropped (its buffers hold some hundreds).
            while (await sockets_open(system))["firehose"] == 2:
                assert len(order_ids) < 600, "the stalled socket was never dropped"
                batch = await asyncio.gather(*(submit(client) for _ in range(20)))
                await finished(client, batch)
                order_ids += batch
            print(f"dropped after {len(order_ids)} orders")
            await asyncio.sleep(1)
            await reader.close()
            received = await reading
        elapsed = time.monotonic() - started
        frames = await asyncio.to_thread(frames_until_closed, stalled, 10)
    finally:
        stalled.close()

    expected = [(oid, e["seq"]) for oid in order_ids for e in await audit_trail(client, oid)]
    assert sorted(keys(received)) == sorted(expected)  # the reader missed nothing
    assert len(expected) > STREAM_BUFFER
    # The stalled client saw a prefix of the stream, then its connection was cut.
    texts = [payload for opcode, payload in frames if opcode == 0x1]
    assert texts
    assert len(texts) < len(expected)
    assert elapsed < 120


async def test_firehose_client_that_falls_behind_then_reads_on_sees_close_4408(
    system: System, client: httpx.AsyncClient
) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(
        sock, (system.settings.gateway_host, system.settings.gateway_port)
    )
    async with connect(f"{system.ws_url}/api/stream", sock=sock, max_queue=4) as lagging:
        await asyncio.sleep(0.3)
        order_ids: list[str] = []
        while (await sockets_open(system))["firehose"] == 1:
            assert len(order_ids) < 600, "the lagging socket was never dropped"
            batch = await asyncio.gather(*(submit(client) for _ in range(20)))
            await finished(client, batch)
            order_ids += batch
        received = await read_for(lagging, 10)  # it reads on, within the close wait
        assert (lagging.close_code, lagging.close_reason) == (
            4408,
            "client fell behind the event stream",
        )
    await finished(client, order_ids)
    total = sum([len(await audit_trail(client, oid)) for oid in order_ids])
    assert 0 < len(received) < total


async def test_dead_peer_that_never_answers_pings_is_closed_1011(
    pinging_gateway: System,
) -> None:
    dead = await asyncio.to_thread(raw_websocket, pinging_gateway, "/api/stream?status=failed")
    try:
        await asyncio.sleep(0.3)
        assert (await sockets_open(pinging_gateway))["firehose"] == 1
        await asyncio.sleep(3.5)  # ping after 1 s, no pong within 1 s
        assert (await sockets_open(pinging_gateway))["firehose"] == 0
        frames = await asyncio.to_thread(frames_until_closed, dead, 5)
    finally:
        dead.close()
    assert frames[0][0] == 0x9  # a ping
    close = [payload for opcode, payload in frames if opcode == 0x8]
    assert close
    assert int.from_bytes(close[0][:2]) == 1011
