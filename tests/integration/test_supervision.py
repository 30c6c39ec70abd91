"""`oee up` through a kill -9 of the broker or of PostgreSQL: both come back, nothing else restarts.

The module runs one private `python -m cli up` (its own data dir, free ports, the
instant venue profile) with an embedded broker and database of its own, so killing
them disturbs no other test. After each kill the supervisor reaps the server, clears
what it left behind and starts it on its data again; the projector, the trigger
service and the market service keep their process and go on working: orders
accepted just before the kill and orders submitted after it are confirmed and
projected, a limit order fires, and new pool states reach the market topic.

A stale ``postmaster.pid`` is tested apart: a postmaster killed while its parent
does not reap it is a zombie, which ``kill(pid, 0)`` takes for alive, and
``oee database`` must start on its data anyway.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from adapters.credentials import ADMIN
from adapters.embedded.postgres import EmbeddedPostgres
from adapters.kafka import client_options
from adapters.ops import OPS_SERVICES
from adapters.processes import die_with_parent, free_port, pid_alive, stop_process
from adapters.settings import Settings
from cli.logins import log_in
from tests.auth import AUTH, DEV_KEY

MARKET = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amount": "1", "slippageBps": 100}
# A limit sell far under the spot fires as soon as it is armed: the trigger service at work.
LIMIT = MARKET | {"type": "limit", "limitPrice": "100"}
# They must carry on in the same process; the engine and the gateway may be restarted.
CARRY_ON = ("projector", "triggers", "market")
BACK_WITHIN_S = 180.0
# What `oee up` printed, kept for a look after a failure.
TRANSCRIPT = Path(__file__).resolve().parents[2] / "test-artifacts" / "oee-up.log"


class Transcript:
    """The lines a child process prints, read by a thread, searchable while it runs."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        assert process.stdout is not None
        threading.Thread(target=self._read, args=(process.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip())

    def wait_for(self, pattern: str, *, after: int = 0, timeout: float = 120.0) -> re.Match[str]:
        """Return the first match of ``pattern`` in a line printed after line ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                if found := re.search(pattern, line):
                    return found
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        tail = "\n".join(self.lines[-60:])
        raise AssertionError(f"no line matching {pattern!r} in {timeout:.0f}s:\n{tail}")

    def printed(self, pattern: str, *, after: int = 0) -> list[re.Match[str]]:
        """Return every match of ``pattern`` in the lines printed after line ``after``."""
        return [m for line in self.lines[after:] if (m := re.search(pattern, line))]


def _clean_env(**settings: str | int | Path) -> dict[str, str]:
    # Nothing from the caller's OEE_* (an external broker, say) may leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OEE_")}
    return env | {f"OEE_{k.upper()}": str(v) for k, v in settings.items()}


def _private_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="oee-supervise-"))
    # PostgreSQL runs as an unprivileged user when we are root: let it traverse.
    root.chmod(0o755)
    return root


class Up:
    """A private ``oee up`` and the addresses of what it runs."""

    def __init__(self, root: Path, scale: Sequence[str] = ()) -> None:
        self.root = root
        self.kafka_port, self.database_port, self.gateway_port = (
            free_port(),
            free_port(),
            free_port(),
        )
        env = _clean_env(
            data_dir=root,
            kafka_port=self.kafka_port,
            kafka_controller_port=free_port(),
            database_port=self.database_port,
            gateway_port=self.gateway_port,
            venues_port=free_port(),
            venue_profile="instant",
            market_launch_every_s=0,
            dev_api_key=DEV_KEY,
            # Replica i serves on its service's port plus 10·i.
            **{f"{name}_ops_port": free_port() for name in OPS_SERVICES},
        )
        self.env = env
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "up", *(f"--scale={entry}" for entry in scale)],
            env=env | {"PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=die_with_parent(),
        )
        self.out = Transcript(process)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def admin(self) -> Settings:
        """Return the admin's settings for what it runs, as `oee audit` there would log in."""
        return log_in(
            Settings(
                data_dir=self.root,
                kafka_bootstrap=None,
                kafka_username=None,
                database_url=None,
                kafka_port=self.kafka_port,
                database_port=self.database_port,
            ),
            ADMIN,
        )

    @property
    def database_url(self) -> str:
        url = self.admin.database_url
        assert url is not None
        return url

    def server_pid(self, name: str) -> int:
        """Return the pid the supervisor last started the ``name`` server with."""
        found = self.out.printed(rf"{name} (?:ready after \S+|serving again) \(pid (\d+)\)")
        return int(found[-1].group(1))

    def service_pids(self) -> dict[str, int]:
        """Return the pid of every service as last started."""
        return {
            m.group(1): int(m.group(2)) for m in self.out.printed(r"started ([\w-]+) \(pid (\d+)\)")
        }


@pytest.fixture(scope="module")
def up() -> Iterator[Up]:
    root = _private_root()
    running = Up(root)
    try:
        running.out.wait_for(r"oee \| API: ", timeout=240)
        # Every service past its start-up, the engine too: one order all the way through.
        asyncio.run(warm_up(running))
        yield running
    finally:
        stop_process(running.out.process, sig=signal.SIGTERM, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
        TRANSCRIPT.parent.mkdir(exist_ok=True)
        TRANSCRIPT.write_text("\n".join(running.out.lines) + "\n")


async def submit(client: httpx.AsyncClient, body: dict[str, Any], within: float = 60.0) -> str:
    """POST an order until the gateway accepts it; return its id."""
    async with asyncio.timeout(within):
        while True:
            try:
                response = await client.post("/api/orders/execute", json=body)
                if response.status_code == 202:
                    return str(response.json()["orderId"])
            except httpx.HTTPError:
                pass  # the gateway itself may be restarting
            await asyncio.sleep(0.5)


async def projected(up: Up, order_ids: list[str], within: float = 90.0) -> float:
    """Wait until the read model shows every order confirmed; return when it did."""
    deadline = time.monotonic() + within
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            async with await psycopg.AsyncConnection.connect(up.database_url) as conn:
                cursor = await conn.execute(
                    "select order_id::text, status from orders where order_id::text = any(%s)",
                    (order_ids,),
                )
                seen = dict(await cursor.fetchall())
            if [seen.get(oid) for oid in order_ids] == ["confirmed"] * len(order_ids):
                return time.monotonic()
        except psycopg.OperationalError:
            pass  # PostgreSQL is still on its way back
        await asyncio.sleep(0.2)
    tail = "\n".join(up.out.lines[-80:])
    raise AssertionError(f"not all confirmed in {within:.0f}s: {seen}\n{tail}")


async def market_published(up: Up, within: float = 60.0) -> float:
    """Wait for a pool state published from now on; return when it arrived."""
    consumer = AIOKafkaConsumer(**client_options(up.admin), enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition("market.events", p) for p in range(6)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        async with asyncio.timeout(within):
            while not await consumer.getmany(timeout_ms=500):
                pass
        return time.monotonic()
    finally:
        await consumer.stop()


async def warm_up(up: Up) -> None:
    async with httpx.AsyncClient(base_url=up.base_url, headers=AUTH, timeout=30) as client:
        await projected(up, [await submit(client, MARKET)], within=120)


async def kill_and_carry_on(up: Up, server: str, pid: int) -> None:
    """Kill ``server`` with orders in flight; check it comes back and everything carries on."""
    before = up.service_pids()
    async with httpx.AsyncClient(base_url=up.base_url, headers=AUTH, timeout=30) as client:
        in_flight = await asyncio.gather(*(submit(client, MARKET) for _ in range(10)))
        mark = len(up.out.lines)
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)

        await asyncio.to_thread(
            up.out.wait_for, rf"{server} serving again", after=mark, timeout=BACK_WITHIN_S
        )
        back_at = time.monotonic()
        market_at = asyncio.create_task(market_published(up))
        after = [await submit(client, MARKET), await submit(client, LIMIT)]
        confirmed_at = await projected(up, in_flight + after)

    figures = {
        "serving again": back_at - killed_at,
        "market publishing": await market_at - back_at,
        "orders confirmed and projected": confirmed_at - back_at,
    }
    print(f"\n{server} killed: " + ", ".join(f"{k} {v:.1f}s" for k, v in figures.items()))
    restarted = up.out.printed(r"restarting (\w+) \(restart", after=mark)
    print(f"services restarted meanwhile: {[m.group(1) for m in restarted]}")
    now = up.service_pids()
    for name in CARRY_ON:
        assert now[name] == before[name], f"{name} was restarted"
        assert pid_alive(now[name]), f"{name} is gone"
    assert not up.out.printed(rf"restarting ({'|'.join(CARRY_ON)})\b", after=mark)


async def test_up_broker_killed_comes_back_and_services_carry_on(up: Up) -> None:
    await kill_and_carry_on(up, "Kafka", up.server_pid("Kafka"))


async def test_up_database_killed_comes_back_and_services_carry_on(up: Up) -> None:
    mark = len(up.out.lines)
    pid = up.server_pid("PostgreSQL")

    await kill_and_carry_on(up, "PostgreSQL", pid)

    assert up.out.printed(rf"removed the stale postmaster\.pid of pid {pid}\b", after=mark)
    assert reaped(pid), "left a zombie"


@pytest.fixture
def private_root() -> Iterator[Path]:
    root = _private_root()
    yield root
    shutil.rmtree(root, ignore_errors=True)


def reaped(pid: int) -> bool:
    """Tell whether no process ``pid`` exists, not even a zombie."""
    return not Path(f"/proc/{pid}").exists()


def test_database_command_postmaster_left_as_zombie_starts_on_its_data(
    private_root: Path,
) -> None:
    database = EmbeddedPostgres(private_root / "postgres", port=free_port())
    database.start()
    try:
        with psycopg.connect(database.url, autocommit=True) as conn:
            conn.execute("create table kept (id int primary key); insert into kept values (7)")
        zombie = database.pid
        assert zombie is not None
        # Its parent (this test) does not reap it: a zombie, with its postmaster.pid.
        os.kill(zombie, signal.SIGKILL)
        while pid_alive(zombie):
            time.sleep(0.01)
        assert not reaped(zombie)
        assert database.lock_file.read_text().split()[0] == str(zombie)

        command = subprocess.Popen(
            [sys.executable, "-m", "cli", "database"],
            env=_clean_env(data_dir=private_root, database_port=database.port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=die_with_parent(),
        )
        out = Transcript(command)
        try:
            out.wait_for(r"PostgreSQL .* ready", timeout=60)
            with psycopg.connect(database.url) as conn:
                assert conn.execute("select id from kept").fetchall() == [(7,)]
        finally:
            stop_process(command, sig=signal.SIGTERM, timeout=30)
        assert out.printed(rf"removed the stale postmaster\.pid of pid {zombie} \(a zombie")
    finally:
        database.stop()


def test_up_scaled_runs_every_replica_restarts_a_dead_one_and_status_lists_them(
    private_root: Path,
) -> None:
    scale = ("engine=2", "projector=2", "gateway=2", "triggers=2")
    running = Up(private_root, scale=scale)
    try:
        running.out.wait_for(r"oee \| API: ", timeout=240)
        running.out.wait_for(r"replicas: triggers: 2, engine: 2, projector: 2, gateway: 2")
        pids = running.service_pids()
        replicas = {
            f"{name}-{i}" for name in ("engine", "projector", "gateway", "triggers") for i in (0, 1)
        }
        assert replicas | {"venues", "market", "sweeper"} == set(pids)
        # One order all the way through the gateways' one address.
        asyncio.run(warm_up(running))

        # Every replica answers on its own operations port; the gateways share theirs.
        deadline = time.monotonic() + BACK_WITHIN_S
        while True:
            status = subprocess.run(
                [sys.executable, "-m", "cli", "status"],
                env=running.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if status.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert status.returncode == 0, status.stdout + status.stderr
        rows = {line.split()[0] for line in status.stdout.splitlines()[1:]}
        assert rows == (replicas - {"gateway-0", "gateway-1"}) | {
            "gateway",
            "market",
            "sweeper",
        }
        assert "2 replicas share the port" in status.stdout

        # A replica that dies is restarted under its own name, as any service is.
        after = len(running.out.lines)
        os.kill(pids["engine-1"], signal.SIGKILL)
        running.out.wait_for(r"engine-1 stopped unexpectedly \(killed by SIGKILL\)", after=after)
        restarted = running.out.wait_for(r"started engine-1 \(pid (\d+)\)", after=after)
        assert int(restarted.group(1)) != pids["engine-1"]
        assert pid_alive(pids["engine-0"])
    finally:
        stop_process(running.out.process, sig=signal.SIGTERM, timeout=60)
