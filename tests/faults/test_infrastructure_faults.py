"""The broker and PostgreSQL killed with SIGKILL under load: nothing accepted is lost.

Each scenario runs ``oee up`` privately (its own data dir, free ports, realistic
venue latency) so that its embedded Kafka broker and PostgreSQL are its own to
kill. ``oee up`` reaps the dead server and starts it again on its data; the
services reconnect by themselves. Meanwhile the careful client keeps submitting,
retrying each order with its key until the gateway accepts it.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from cli.bench.system import RunningSystem, private_system
from tests.auth import AUTH, DEV_KEY
from tests.faults.harness import (
    FAULT_ORDERS,
    Load,
    Verdict,
    assert_clean,
    eventually,
    kill_member,
    verdict,
)

ORDERS = FAULT_ORDERS
RATE = 10.0


@pytest.fixture
async def up() -> AsyncIterator[RunningSystem]:
    """Run ``oee up`` on a data dir and ports of this test's own."""
    with tempfile.TemporaryDirectory(prefix="oee-faults-") as data_dir:
        os.chmod(data_dir, 0o755)  # the embedded PostgreSQL runs as another user
        with private_system(
            data_dir, venue_profile="realistic", sweep_submit_after_s=20.0, dev_api_key=DEV_KEY
        ) as running:
            yield running


async def run_through(system: RunningSystem, group: str) -> tuple[Load, dict[str, float]]:
    """Kill ``group`` three seconds into the load; return the load and recovery figures."""
    load = Load(system.base_url, ORDERS, RATE, deadline_s=240)
    running = asyncio.create_task(load.run())
    await asyncio.sleep(3)
    killed = time.monotonic()
    kill_member(system, group)

    async def accepted_again() -> float | None:
        return load.first_accepted_after(killed + 1)

    first = await eventually(accepted_again, within_s=180, every_s=0.5)
    await running
    recovery = {"first order accepted after the kill": (first or float("nan")) - killed}
    return load, recovery


async def test_broker_killed_under_load_loses_and_repeats_nothing(
    up: RunningSystem, record_verdict: Callable[[Verdict], None]
):
    load, recovery = await run_through(up, "kafka")
    found = await verdict("broker killed once", up, load, recovery=recovery, within_s=180)
    record_verdict(found)
    assert_clean(found)
    # Every order was retried with its key until accepted, and none became two orders.
    assert found.accepted == ORDERS
    assert len(set(load.accepted)) == ORDERS


async def test_database_killed_under_load_loses_and_repeats_nothing(
    up: RunningSystem, record_verdict: Callable[[Verdict], None]
):
    load = Load(up.base_url, ORDERS, RATE, deadline_s=240)
    running = asyncio.create_task(load.run())
    await asyncio.sleep(3)
    killed = time.monotonic()
    kill_member(up, "postgres")

    async def reads_again() -> float | None:
        async with httpx.AsyncClient(base_url=up.base_url, headers=AUTH, timeout=5) as http:
            try:
                answer = await http.get("/api/orders", params={"limit": "1"})
            except httpx.HTTPError:
                return None
        return time.monotonic() if answer.status_code == 200 else None

    await asyncio.sleep(0.5)
    back = await eventually(reads_again, within_s=120, every_s=0.5)
    await running
    recovery = {"order list answers again after the kill": (back or float("nan")) - killed}
    found = await verdict("database killed once", up, load, recovery=recovery, within_s=180)
    record_verdict(found)
    assert_clean(found)
    assert found.accepted == ORDERS
    assert len(set(load.accepted)) == ORDERS
