"""The engine killed with SIGKILL in the middle of a 2,000-order run, as ``oee bench orders`` runs.

A private ``oee up`` with instant venues and a still market (the benchmark's system)
takes orders faster than it executes them, so hundreds are queued on the log when
the engine dies; ``oee up`` starts it again. Every accepted order must end once.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import pytest

from cli.bench.system import RunningSystem, private_system
from tests.auth import DEV_KEY
from tests.faults.harness import (
    Load,
    Verdict,
    assert_clean,
    eventually,
    first_event_after,
    kill_member,
    order_events,
    utc_now,
    verdict,
)

ORDERS = int(os.environ.get("OEE_FAULT_BUSY_ORDERS", "2000"))
RATE = 40.0  # offered orders a second: about twice what this machine executes
KILL_AFTER_S = 20.0


@pytest.fixture
async def bench_system() -> AsyncIterator[RunningSystem]:
    """Run ``oee up`` as ``oee bench orders`` does: its own data dir, instant venues."""
    with tempfile.TemporaryDirectory(prefix="oee-faults-busy-") as data_dir:
        os.chmod(data_dir, 0o755)  # the embedded PostgreSQL runs as another user
        with private_system(data_dir, dev_api_key=DEV_KEY) as running:
            yield running


async def test_engine_killed_during_a_busy_run_ends_every_order_once(
    bench_system: RunningSystem, record_verdict: Callable[[Verdict], None]
) -> None:
    load = Load(bench_system.base_url, ORDERS, RATE, deadline_s=300)
    running = asyncio.create_task(load.run())
    await asyncio.sleep(KILL_AFTER_S)
    kill_member(bench_system, "engine")
    # Stamped once it is dead: any event stamped later is the restarted engine's.
    killed_at = utc_now()

    async def next_event() -> datetime | None:
        return first_event_after(await order_events(bench_system.settings), killed_at)

    after = await eventually(next_event, within_s=120, every_s=1)
    await running
    recovery = {}
    if after is not None:
        recovery["next event after the kill"] = (after - killed_at).total_seconds()
    found = await verdict(
        f"engine killed in a {ORDERS}-order run",
        bench_system,
        load,
        recovery=recovery,
        within_s=600,
    )
    record_verdict(found)
    assert_clean(found)
    assert found.accepted == ORDERS
