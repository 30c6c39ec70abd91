"""Two replicas of the engine, projector, gateway, trigger and market service; one of
each killed.

The system runs as ``oee up --scale engine=2 --scale projector=2 --scale gateway=2
--scale triggers=2 --scale market=2`` would run it, on the real broker and PostgreSQL.
A careful client submits market orders and crossing limit orders (armed, then fired by the trigger
service) through the one gateway address while one replica of each service is killed
with SIGKILL in turn and not started again, so its survivor must take over its
partitions. Then every guarantee of the fault suite is checked, and each armed order
must have fired once. The failover time of each kill is printed: from the kill to the
first thing the survivor did for the dead replica's partitions (an engine's event, a
projected batch, an accepted order, a trigger command, a market message from the
market service that took the lead).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from adapters.kafka import ensure_topics
from adapters.log_reader import read_topics
from adapters.ops import ops_address
from adapters.postgres import connect
from adapters.settings import Settings
from events.market import decode_market
from events.messages import Event, OrderTriggered, TriggerOrder
from tests.faults.conftest import FAULT_SETTINGS
from tests.faults.harness import Load, Verdict, assert_clean, read_log, utc_now, verdict
from tests.integration.system import System

SCALE = {"engine": 2, "projector": 2, "gateway": 2, "triggers": 2, "market": 2}
ORDERS = int(os.environ.get("OEE_SCALE_ORDERS", "200"))
RATE = 8.0  # orders per second: 25 s of load at 200 orders
LIMIT_EVERY = 5  # every fifth order is a limit order that fires at once
# When each replica dies, in seconds after the load starts (all within the load).
KILLS = (
    ("engine-1", 4.0),
    ("projector-1", 10.0),
    ("gateway-1", 14.0),
    ("triggers-1", 18.0),
    ("market", 21.0),  # whichever replica leads
)
# How long a survivor may take: the dead member's session (6 s in the tests), a
# rebalance and a table recovery, on 2 busy cores.
FAILOVER_WITHIN_S = 60.0


@pytest.fixture
async def scaled_system(
    isolated_settings: Callable[..., Settings], fresh_database_url: str, tmp_path: Path
):
    settings = isolated_settings(tmp_path, database_url=fresh_database_url, **FAULT_SETTINGS)
    await ensure_topics(settings)
    running = System(settings, Path(settings.data_dir) / "logs", scale=SCALE)
    try:
        running.start_all()
        await asyncio.to_thread(running.wait_healthy, 120.0)
        yield running
    finally:
        # Ask every process to stop at once: one after the other, eleven of them on
        # two busy cores can take longer than the test.
        for process in running.processes.values():
            process.terminate()
        running.stop_all()


async def owned_partitions(settings: Settings, service: str, check: str) -> list[set[int]]:
    """Wait until both replicas of ``service`` report partitions of their own in their
    readiness check ``check`` (the group settled); return each one's."""
    urls = [f"http://{ops_address(settings, service, i)}/health/ready" for i in (0, 1)]
    owned: list[set[int]] = []
    async with httpx.AsyncClient(timeout=5) as http:
        for _ in range(240):
            owned = []
            for url in urls:
                try:
                    checks = (await http.get(url)).json()["checks"]
                except (httpx.HTTPError, ValueError, KeyError):
                    break
                found = re.search(r"\[([\d, ]+)\]", checks.get(check, {}).get("detail", ""))
                if found is None:
                    break
                owned.append({int(p) for p in found.group(1).split(",")})
            if len(owned) == 2 and owned[0] and owned[1] and not owned[0] & owned[1]:
                return owned
            await asyncio.sleep(0.5)
    raise AssertionError(f"the {service} replicas did not share the partitions: {owned}")


async def first_written_in(
    settings: Settings,
    partitions: set[int],
    after: datetime,
    only: type[Event] | type[TriggerOrder],
) -> float | None:
    """Wait for the first message of type ``only`` made after ``after`` (its own
    ``occurred_at``) in ``partitions``; return how long after, or None if none came.

    By its time of making, not of writing: what the dead replica made before it died
    and reached the log after it does not count."""
    topic = settings.commands_topic if only is TriggerOrder else settings.events_topic
    deadline = time.monotonic() + FAILOVER_WITHIN_S
    while time.monotonic() < deadline:
        later = [
            message.occurred_at
            for partition, _, message in await read_log(settings, topic)
            if partition in partitions and isinstance(message, only) and message.occurred_at > after
        ]
        if later:
            return (min(later) - after).total_seconds()
        await asyncio.sleep(1.0)
    return None


async def stored_offsets(settings: Settings, partitions: set[int]) -> dict[int, int]:
    conn = await connect(settings)
    try:
        cur = await conn.execute(
            "SELECT partition, next_offset FROM projection_offsets"
            " WHERE projection = 'orders' AND topic = %s",
            (settings.events_topic,),
        )
        return {p: o for p, o in await cur.fetchall() if p in partitions}
    finally:
        await conn.close()


async def first_batch_in(settings: Settings, partitions: set[int], killed: float) -> float | None:
    """Wait until a partition of ``partitions`` is projected further than at the kill."""
    at_kill = await stored_offsets(settings, partitions)
    while time.monotonic() < killed + FAILOVER_WITHIN_S:
        now = await stored_offsets(settings, partitions)
        if any(offset > at_kill.get(p, 0) for p, offset in now.items()):
            return time.monotonic() - killed
        await asyncio.sleep(0.2)
    return None


async def settled(settings: Settings) -> dict[str, set[int]]:
    """Wait until each group shares its partitions between its two replicas; return
    the partitions of each replica to be killed."""
    owners = {
        "engine-1": (await owned_partitions(settings, "engine", "group"))[1],
        "projector-1": (await owned_partitions(settings, "projector", "group"))[1],
        "triggers-1": (await owned_partitions(settings, "triggers", "group"))[1],
    }
    print(f"partitions of the replicas to be killed: {owners}")
    return owners


async def market_leader(settings: Settings) -> str:
    """Return the name of the market replica that leads (publishes)."""
    async with httpx.AsyncClient(timeout=5) as http:
        for _ in range(120):
            for replica in (0, 1):
                url = f"http://{ops_address(settings, 'market', replica)}/health/ready"
                try:
                    detail = (await http.get(url)).json()["checks"]["leader"]["detail"]
                except (httpx.HTTPError, ValueError, KeyError):
                    continue
                if detail.startswith("leads"):
                    return f"market-{replica}"
            await asyncio.sleep(0.5)
    raise AssertionError("no market service leads")


async def first_market_message(settings: Settings, after: datetime) -> float | None:
    """Wait for the first market message published after ``after``; return how long after."""
    since_ms = after.timestamp() * 1000
    deadline = time.monotonic() + FAILOVER_WITHIN_S
    while time.monotonic() < deadline:
        later: list[float] = []
        async with read_topics(settings, [settings.market_topic]) as snapshot:
            async for batch in snapshot.batches():
                later += [r.timestamp for r in batch if r.timestamp > since_ms]
        if later:
            return (min(later) - since_ms) / 1000
        await asyncio.sleep(1.0)
    return None


async def market_seqs_out_of_order(settings: Settings) -> list[str]:
    """Return the pools whose states on the log do not rise in seq one after the other:
    what two writers at once would leave."""
    last: dict[str, int] = {}
    wrong: list[str] = []
    async with read_topics(settings, [settings.market_topic]) as snapshot:
        async for batch in snapshot.batches():
            for record in sorted(batch, key=lambda r: (r.partition, r.offset)):
                if record.value is None:
                    continue
                pool = decode_market(record.value)
                if pool.seq <= last.get(pool.pool_id, -1):
                    wrong.append(f"{pool.pool_id}: #{pool.seq} after #{last[pool.pool_id]}")
                last[pool.pool_id] = max(pool.seq, last.get(pool.pool_id, -1))
    return wrong


async def kill_in_turn(
    system: System, load: Load, started: float, owners: dict[str, set[int]]
) -> dict[str, float]:
    """Kill one replica of each service at its moment; return each failover time."""
    settings = system.settings
    measures: dict[str, asyncio.Task[float | None]] = {}
    for name, at_s in KILLS:
        await asyncio.sleep(max(0.0, started + at_s - time.monotonic()))
        if name == "market":
            name = await market_leader(settings)
        when, killed = utc_now(), time.monotonic()
        system.kill(name)
        print(f"killed {name} at {at_s:.0f}s into the load")
        if name == "engine-1":
            probe = first_written_in(settings, owners[name], when, Event)  # type: ignore[arg-type]
        elif name == "projector-1":
            probe = first_batch_in(settings, owners[name], killed)
        elif name == "triggers-1":
            probe = first_written_in(settings, owners[name], when, TriggerOrder)
        elif name.startswith("market"):
            probe = first_market_message(settings, when)
        else:
            probe = _first_accepted(load, killed)
        measures[name] = asyncio.create_task(probe)
    failover: dict[str, float] = {}
    for name, task in measures.items():
        seconds = await task
        assert seconds is not None, f"no survivor took over from {name}\n{system.logs()}"
        failover[name] = seconds
    return failover


async def _first_accepted(load: Load, killed: float) -> float | None:
    deadline = time.monotonic() + FAILOVER_WITHIN_S
    while time.monotonic() < deadline:
        accepted = load.first_accepted_after(killed)
        if accepted is not None:
            return accepted - killed
        await asyncio.sleep(0.1)
    return None


@pytest.mark.timeout(900)
async def test_one_replica_of_each_service_killed_survivors_take_over_and_nothing_is_lost(
    scaled_system: System, record_verdict: Callable[[Verdict], None]
):
    began = time.monotonic()
    system = scaled_system
    load = Load(system.base_url, ORDERS, RATE, limit_every=LIMIT_EVERY)
    owners = await settled(system.settings)
    started = time.monotonic()
    running = asyncio.create_task(load.run())
    failover = await kill_in_turn(system, load, started, owners)
    await running

    found = await verdict("one replica of each killed (x2)", system, load, recovery=failover)
    record_verdict(found)
    # Armed orders fired once: one trigger per limit order on the log's first occurrences.
    events = await read_log(system.settings, system.settings.events_topic)
    first: dict[tuple[str, int], Event] = {}
    for _, _, message in events:
        if isinstance(message, Event):
            first.setdefault((str(message.order_id), message.seq), message)
    triggered: dict[str, int] = {}
    for (order_id, _), event in first.items():
        if isinstance(event, OrderTriggered):
            triggered[order_id] = triggered.get(order_id, 0) + 1
    limits = {s.order_id for s in load.submissions if s.body["type"] == "limit" and s.order_id}
    commands = [m for _, _, m in await read_log(system.settings, system.settings.commands_topic)]
    sent = sum(isinstance(m, TriggerOrder) for m in commands)
    print(
        f"\n{found.row()}\nfailover: "
        + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in failover.items())
        + f"\nlimit orders {len(limits)}, fired {sum(triggered.values())}, "
        f"trigger commands sent {sent}; wall time {time.monotonic() - began:.0f}s"
    )
    assert_clean(found)
    # One writer at a time: every pool's states rise in seq on the log.
    assert await market_seqs_out_of_order(system.settings) == []
    assert {o: triggered.get(o, 0) for o in limits} == dict.fromkeys(limits, 1)
