"""Measure the gateway under load: memory per order, POST latency under fan-out, stalled sockets.

Runs a private system (as the integration tests do: the whole flow as processes, on
the embedded broker and PostgreSQL unless ``OEE_KAFKA_BOOTSTRAP`` / ``OEE_DATABASE_URL``
are set) and prints what it measured::

    python -m tests.measure_gateway --orders 5000 --sockets 1000 --stalled 500

* memory: the gateway's resident memory before and after each batch of orders;
* latency: the median and p90 POST at a steady rate, with no firehose socket, then
  with ``--sockets`` firehose sockets that read everything (in a process of their own,
  at the lowest CPU priority), and the gateway's CPU meanwhile;
* stalled: ``--stalled`` firehose sockets that never read, under light traffic: how
  long until the gateway cuts them, and its memory meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from adapters.kafka import ensure_topics
from adapters.processes import free_port
from adapters.settings import Settings
from tests import logins
from tests.auth import AUTH, DEV_KEY
from tests.conftest import embedded
from tests.gateway_server import open_websocket
from tests.integration.system import System

ORDER = {
    "type": "market",
    "tokenIn": "SOL",
    "tokenOut": "USDC",
    "amount": "0.1",
    "slippageBps": 500,
}


def cpu_seconds(pid: int) -> float:
    """Return the CPU time a process has used so far (user and system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Return a process's resident memory in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def submit_at(
    client: httpx.AsyncClient, count: int, rate: float, body: Any = ORDER, expect: int = 202
) -> list[float]:
    """POST ``count`` orders at ``rate`` per second; return each POST's latency in ms."""
    latencies: list[float] = []

    async def one() -> None:
        started = time.perf_counter()
        try:
            response = await client.post("/api/orders/execute", json=body)
        except httpx.HTTPError as exc:
            print(f"POST failed: {exc!r}", flush=True)
            return
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status_code != expect:
            print(f"POST answered {response.status_code}: {response.text}", flush=True)

    tasks = []
    start = time.monotonic()
    for n in range(count):
        await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return latencies


async def settle(client: httpx.AsyncClient, within: float = 120) -> None:
    """Wait until no order of the last page is still executing."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        page = (await client.get("/api/orders", params={"limit": 200})).json()["orders"]
        if all(o["status"] in ("confirmed", "failed") for o in page):
            return
        await asyncio.sleep(1)


async def read_forever(host: str, port: int, count: int) -> None:
    """Hold ``count`` firehose sockets that read and discard everything (the readers' process).

    At the lowest priority: clients run elsewhere, not on the gateway's cores.
    """
    os.nice(19)
    loop = asyncio.get_running_loop()

    class Discard(asyncio.Protocol):
        """Skips every frame, answering pings, so the gateway keeps the socket."""

        def __init__(self) -> None:
            self.buffer = b""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while len(self.buffer) >= 2:
                opcode, size, at = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
                if size == 126:
                    size, at = int.from_bytes(self.buffer[2:4]), 4
                elif size == 127:
                    size, at = int.from_bytes(self.buffer[2:10]), 10
                if len(self.buffer) < at + size:
                    return
                if opcode == 0x9:  # ping: a masked pong with its payload (mask of zeros)
                    payload = self.buffer[at : at + size]
                    self.transport.write(bytes([0x8A, 0x80 | size]) + bytes(4) + payload)
                self.buffer = self.buffer[at + size :]

    for _ in range(count):
        sock = open_websocket(host, port, "/api/stream")
        sock.setblocking(False)
        await loop.connect_accepted_socket(Discard, sock)
    print("ready", flush=True)
    await asyncio.Event().wait()


def median_p90(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    return (
        f"median {statistics.median(ordered):.1f} ms, p90 {ordered[int(len(ordered) * 0.9)]:.1f} ms"
    )


async def measure_memory(system: System, client: httpx.AsyncClient, orders: int) -> None:
    pid = system.processes["gateway"].pid
    print(f"memory: {rss_mb(pid):.0f} MB at start")
    step = max(1, orders // 5)
    done = 0
    while done < orders:
        await submit_at(client, step, rate=100)
        done += step
        await settle(client)
        print(f"memory: {rss_mb(pid):.0f} MB after {done} orders")


async def latency_run(
    system: System, client: httpx.AsyncClient, seconds: float, label: str
) -> None:
    """POST orders at 5/s, and as many bodies the gateway refuses before any broker call."""
    rate = 5.0
    pid = system.processes["gateway"].pid
    cpu, started = cpu_seconds(pid), time.monotonic()
    orders, refused = await asyncio.gather(
        submit_at(client, int(rate * seconds), rate),
        submit_at(client, int(rate * seconds), rate, body={**ORDER, "amount": "0"}, expect=422),
    )
    share = (cpu_seconds(pid) - cpu) / (time.monotonic() - started)
    print(
        f"latency, {label}: POST {median_p90(orders)}; refused by the gateway alone "
        f"{median_p90(refused)}; gateway CPU {share:.0%} of a core",
        flush=True,
    )


async def measure_latency(
    system: System, client: httpx.AsyncClient, sockets: int, seconds: float
) -> None:
    await latency_run(system, client, seconds, "no firehose socket")
    settings = system.settings
    readers = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tests.measure_gateway", "--readers", str(sockets)),
        *("--host", settings.gateway_host, "--port", str(settings.gateway_port)),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert readers.stdout is not None
        await readers.stdout.readline()  # "ready"
        await asyncio.sleep(1)
        open_now = (await client.get("/health")).json()["sockets"]["firehose"]
        await latency_run(system, client, seconds, f"{open_now} reading firehose sockets")
        pid = system.processes["gateway"].pid
        print(f"memory with them open: {rss_mb(pid):.0f} MB")
    finally:
        readers.kill()
        await readers.wait()
    await asyncio.sleep(2)
    print(f"memory after they left: {rss_mb(system.processes['gateway'].pid):.0f} MB")
    # As many again come and go: what they cost is given back, or at least reused.
    again = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tests.measure_gateway", "--readers", str(sockets)),
        *("--host", settings.gateway_host, "--port", str(settings.gateway_port)),
        stdout=asyncio.subprocess.PIPE,
    )
    assert again.stdout is not None
    await again.stdout.readline()
    await submit_at(client, 25, rate=5)
    again.kill()
    await again.wait()
    await asyncio.sleep(2)
    pid = system.processes["gateway"].pid
    print(f"memory after as many again came and went: {rss_mb(pid):.0f} MB")


async def measure_stalled(system: System, client: httpx.AsyncClient, count: int) -> None:
    settings = system.settings
    pid = system.processes["gateway"].pid
    before = rss_mb(pid)
    stalled = [
        open_websocket(settings.gateway_host, settings.gateway_port, "/api/stream", rcvbuf=4096)
        for _ in range(count)
    ]
    opened = time.monotonic()
    peak = before
    try:
        while (await client.get("/health")).json()["sockets"]["firehose"] > 0:
            if time.monotonic() - opened > 300:
                print("stalled sockets: still open after 300 s")
                break
            await submit_at(client, 5, rate=5)  # light traffic: 5 orders a second
            peak = max(peak, rss_mb(pid))
        else:
            print(
                f"stalled sockets: all {count} cut {time.monotonic() - opened:.0f} s after opening"
            )
        print(f"memory: {before:.0f} MB before them, {peak:.0f} MB at most while they were open")
    finally:
        for sock in stalled:
            sock.close()


async def main(args: argparse.Namespace) -> None:
    configured = os.environ.get("OEE_KAFKA_BOOTSTRAP"), os.environ.get("OEE_DATABASE_URL")
    with embedded(*configured, prefix="oee-measure-") as (bootstrap, database_url, credentials):
        logins.register(
            logins.Logins(credentials, kafka=configured[0] is None, database=configured[1] is None)
        )
        suffix = uuid.uuid4().hex[:8]
        data_dir = Path(tempfile.mkdtemp(prefix="oee-measure-system-"))
        settings = Settings(
            kafka_bootstrap=bootstrap,
            database_url=database_url,
            commands_topic=f"orders.commands.{suffix}",
            events_topic=f"orders.events.{suffix}",
            dead_letter_topic=f"orders.deadletter.{suffix}",
            market_topic=f"market.events.{suffix}",
            market_drift_bps=0,
            market_launch_every_s=0,
            engine_id=f"oee-engine-{suffix}",
            projector_group=f"oee-projector-{suffix}",
            triggers_group=f"oee-triggers-{suffix}",
            market_group=f"oee-market-{suffix}",
            venue_profile="instant",
            gateway_port=free_port(),
            venues_port=free_port(),
            data_dir=data_dir,
            ws_max_sockets=args.sockets + args.stalled + 100,
            ws_max_sockets_per_client=args.sockets + args.stalled + 100,
            accounts_topic=f"accounts.keys.{suffix}",
            dev_api_key=DEV_KEY,
        )
        settings = logins.as_admin(settings)
        await ensure_topics(settings)
        system = System(settings, data_dir / "logs")
        try:
            system.start_all()
            await asyncio.to_thread(system.wait_healthy)
            # Idle connections are dropped before the gateway's keep-alive (30 s) ends them.
            limits = httpx.Limits(keepalive_expiry=2)
            async with httpx.AsyncClient(
                base_url=system.base_url, timeout=60, limits=limits, headers=AUTH
            ) as client:
                await submit_at(client, 20, rate=20)  # warm up
                await settle(client)
                if args.orders:
                    await measure_memory(system, client, args.orders)
                if args.sockets:
                    await measure_latency(system, client, args.sockets, args.seconds)
                if args.stalled:
                    await measure_stalled(system, client, args.stalled)
        finally:
            system.stop_all()
            print(f"logs in {data_dir / 'logs'}")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=5000, help="orders for the memory figures")
    parser.add_argument("--sockets", type=int, default=1000, help="reading firehose sockets")
    parser.add_argument("--seconds", type=float, default=30, help="length of each latency run")
    parser.add_argument("--stalled", type=int, default=500, help="firehose sockets never read")
    parser.add_argument("--readers", type=int, help=argparse.SUPPRESS)  # the readers' process
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    if arguments.readers:
        asyncio.run(read_forever(arguments.host, arguments.port, arguments.readers))
    else:
        asyncio.run(main(arguments))
