"""Each service process killed with SIGKILL under load: nothing accepted is lost.

A careful client submits market orders at a steady rate (each with its own
Idempotency-Key, retried until accepted) while orders are in flight at venues with
realistic latency. The process is killed mid-load and started again a second later,
as ``oee up`` does. Then every guarantee is checked (see ``harness``), and the time
the system took to recover is recorded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import psycopg

from tests.faults.harness import (
    FAULT_ORDERS,
    Load,
    Verdict,
    assert_clean,
    eventually,
    first_event_after,
    order_events,
    utc_now,
    verdict,
)
from tests.integration.system import System

ORDERS = FAULT_ORDERS
RATE = 15.0  # orders per second: ten seconds of load
RESTART_AFTER_S = 1.0  # as `oee up` restarts a dead service


async def kill_and_restart(system: System, name: str) -> None:
    system.kill(name)
    await asyncio.sleep(RESTART_AFTER_S)
    system.start(name)


async def under_load(
    system: System,
    fault: Callable[[Load], Awaitable[dict[str, float]]],
    *,
    orders: int = ORDERS,
    limit_every: int = 0,
) -> tuple[Load, dict[str, float]]:
    """Run the load and, alongside it, ``fault``; return the load and recovery times."""
    load = Load(system.base_url, orders, RATE, limit_every=limit_every)
    running = asyncio.create_task(load.run())
    recovery = await fault(load)
    await running
    return load, recovery


async def engine_kills(system: System, times: int, apart_s: float) -> dict[str, float]:
    recovery: dict[str, float] = {}
    await asyncio.sleep(3)
    for number in range(1, times + 1):
        killed_at = utc_now()
        await kill_and_restart(system, "engine")
        if number < times:
            await asyncio.sleep(apart_s - RESTART_AFTER_S)

    async def next_event() -> datetime | None:
        return first_event_after(await order_events(system.settings), killed_at)

    # The first event any engine wrote after the last kill.
    after = await eventually(next_event, within_s=60, every_s=0.5)
    if after is not None:
        recovery["next event after the last kill"] = (after - killed_at).total_seconds()
    return recovery


async def test_engine_killed_once_under_load_loses_and_repeats_nothing(
    fault_system: System, record_verdict: Callable[[Verdict], None]
):
    async def fault(load: Load) -> dict[str, float]:
        return await engine_kills(fault_system, times=1, apart_s=0)

    load, recovery = await under_load(fault_system, fault)
    found = await verdict("engine killed once", fault_system, load, recovery=recovery)
    record_verdict(found)
    assert_clean(found)
    assert found.accepted == ORDERS


async def test_engine_killed_three_times_five_seconds_apart_loses_and_repeats_nothing(
    fault_system: System, record_verdict: Callable[[Verdict], None]
):
    async def fault(load: Load) -> dict[str, float]:
        return await engine_kills(fault_system, times=3, apart_s=5)

    load, recovery = await under_load(fault_system, fault)
    found = await verdict("engine killed 3 times, 5 s apart", fault_system, load, recovery=recovery)
    record_verdict(found)
    assert_clean(found)
    assert found.accepted == ORDERS


async def projected_offsets(system: System) -> int:
    async with await psycopg.AsyncConnection.connect(system.settings.database_url or "") as conn:
        cur = await conn.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM projection_offsets WHERE projection = %s",
            ("orders",),
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def test_projector_killed_under_load_projects_every_event_once(
    fault_system: System, record_verdict: Callable[[Verdict], None]
):
    async def fault(load: Load) -> dict[str, float]:
        await asyncio.sleep(3)
        before = await projected_offsets(fault_system)
        started = time.monotonic()
        await kill_and_restart(fault_system, "projector")

        async def moved() -> int | None:
            offsets = await projected_offsets(fault_system)
            return offsets if offsets > before else None

        await eventually(moved, within_s=60)
        return {"first batch projected after the kill": time.monotonic() - started}

    load, recovery = await under_load(fault_system, fault)
    found = await verdict("projector killed once", fault_system, load, recovery=recovery)
    record_verdict(found)
    assert_clean(found)
    assert found.accepted == ORDERS


async def test_gateway_killed_under_load_accepts_every_retried_order_once(
    fault_system: System, record_verdict: Callable[[Verdict], None]
):
    async def fault(load: Load) -> dict[str, float]:
        await asyncio.sleep(3)
        killed = time.monotonic()
        await kill_and_restart(fault_system, "gateway")

        async def accepted() -> float | None:
            return load.first_accepted_after(killed + RESTART_AFTER_S)

        first = await eventually(accepted, within_s=60)
        return {"first order accepted after the kill": (first or float("nan")) - killed}

    load, recovery = await under_load(fault_system, fault)
    found = await verdict("gateway killed once", fault_system, load, recovery=recovery)
    record_verdict(found)
    assert_clean(found)
    # Every order was retried with its key until accepted: all of them made it, and
    # none twice (one order per key).
    assert found.accepted == ORDERS
    assert len(set(load.accepted)) == ORDERS


CHAOS = ("engine", "projector", "triggers", "gateway", "sweeper", "market")


async def test_every_service_killed_in_turn_twice_loses_and_repeats_nothing(
    fault_system: System, record_verdict: Callable[[Verdict], None]
):
    """Market and limit orders (a fifth of them fire at once) while every service
    dies in turn, one every two seconds, twice over."""

    async def fault(load: Load) -> dict[str, float]:
        await asyncio.sleep(2)
        for name in CHAOS * 2:
            await kill_and_restart(fault_system, name)
            await asyncio.sleep(1)
        return {}

    load, recovery = await under_load(fault_system, fault, orders=200, limit_every=5)
    found = await verdict(
        "every service killed in turn, twice", fault_system, load, recovery=recovery
    )
    record_verdict(found)
    assert_clean(found)
    assert found.accepted == 200
