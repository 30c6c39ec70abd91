"""The client: the typed module, ``oee submit|cancel|follow|watch`` and the example script.

Every service runs as its own process against the real broker and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.gateway_client import ApiError, GatewayClient, OrderEvent, OrderRequest
from tests.auth import DEV_KEY
from tests.integration.system import System

ROOT = Path(__file__).resolve().parents[2]
MARKET = OrderRequest("SOL", "USDC", "1.5", slippage_bps=100)
# A limit sell far above the market: it waits, armed, until cancelled.
WAITING = OrderRequest("SOL", "USDC", "0.5", type="limit", limit_price="100000")


async def collect(events: object, within: float = 60) -> list[OrderEvent]:
    got: list[OrderEvent] = []
    async with asyncio.timeout(within):
        async for event in events:  # type: ignore[attr-defined]
            got.append(event)
    return got


def oee(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **system.settings.as_env(), "COLUMNS": "200", "OEE_API_KEY": DEV_KEY}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args, "--url", system.base_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_follow_yields_the_whole_lifecycle_then_stops(system: System) -> None:
    async with GatewayClient(system.base_url, api_key=DEV_KEY) as api:
        submitted = await api.submit(MARKET)
        events = await collect(api.follow(submitted.order_id))
        later = await collect(api.follow(submitted.order_id, last_seq=2))

    assert [e.status for e in events] == [
        "pending",
        "routing",
        "building",
        "submitted",
        "confirmed",
    ]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert [e.seq for e in later] == [3, 4, 5]


async def test_follow_reconnects_across_a_gateway_restart_and_misses_nothing(
    system: System,
) -> None:
    async with GatewayClient(system.base_url, api_key=DEV_KEY) as api:
        submitted = await api.submit(WAITING)
        seen: list[OrderEvent] = []
        armed = asyncio.Event()

        async def follow() -> None:
            async for event in api.follow(submitted.order_id):
                seen.append(event)
                if event.status == "armed":
                    armed.set()

        following = asyncio.create_task(follow())
        await asyncio.wait_for(armed.wait(), 30)
        await asyncio.to_thread(system.stop, "gateway")
        system.start("gateway")
        await asyncio.to_thread(system.wait_healthy)
        assert await api.cancel(submitted.order_id) in ("cancelled", "requested")
        await asyncio.wait_for(following, 60)

    assert [e.status for e in seen] == ["pending", "armed", "cancelled"]
    assert [e.seq for e in seen] == [1, 2, 3]


async def test_watch_filters_the_firehose_and_a_refusal_is_typed(system: System) -> None:
    async with GatewayClient(system.base_url, api_key=DEV_KEY) as api:
        submitted = await api.submit(MARKET)
        confirmed = await collect(api.follow(submitted.order_id))
        assert confirmed[-1].status == "confirmed"

        async def first_confirmed() -> OrderEvent:
            async for event in api.watch(status="confirmed", start="earliest"):
                if event.order_id == submitted.order_id:
                    return event
            raise AssertionError("the firehose ended")

        event = await asyncio.wait_for(first_confirmed(), 30)
        assert event.status == "confirmed"
        assert event.cursor

        with pytest.raises(ApiError) as refused:
            await api.submit(OrderRequest("SOL", "USDC", "-1"))
    assert refused.value.status == 422
    assert refused.value.field == "amount"


def test_the_commands_submit_follow_cancel_and_refuse(system: System) -> None:
    done = oee(system, "submit", "SOL", "USDC", "1.5", "--slippage-bps", "100")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "confirmed" in done.stdout
    assert "routing" in done.stdout

    waiting = oee(
        system, "submit", "SOL", "USDC", "0.5", "--type", "limit", "--limit-price", "100000",
        "--no-follow",
    )  # fmt: skip
    assert waiting.returncode == 0, waiting.stdout + waiting.stderr
    order_id = waiting.stdout.split()[1]
    cancelled = oee(system, "cancel", order_id)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    followed = oee(system, "follow", order_id)
    assert followed.returncode == 2  # ended, but not confirmed
    assert [line.split()[3] for line in followed.stdout.splitlines()] == [
        "pending",
        "armed",
        "cancelled",
    ]

    refused = oee(system, "submit", "SOL", "USDC", "0")
    assert refused.returncode == 1
    assert "refused" in refused.stdout
    assert "amount" in refused.stdout

    watched = oee(system, "watch", "--from", "earliest", "--status", "cancelled", "--count", "1")
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "cancelled" in watched.stdout


def test_the_example_script_uses_the_same_client(system: System) -> None:
    ran = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "client.py"),
            "SOL",
            "USDC",
            "1",
            "--url",
            system.base_url,
            "--key",
            DEV_KEY,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "1 confirmed" in ran.stdout
