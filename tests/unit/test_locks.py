"""Keyed locks: one holder per key at a time, nothing kept once released."""

from __future__ import annotations

import asyncio

from adapters.locks import KeyedLocks


async def test_hold_same_key_runs_one_at_a_time_in_arrival_order():
    locks = KeyedLocks()
    trace: list[str] = []

    async def work(name: str) -> None:
        async with locks.hold("order-1"):
            trace.append(f"{name} in")
            await asyncio.sleep(0.01)
            trace.append(f"{name} out")

    await asyncio.gather(work("a"), work("b"))
    assert trace == ["a in", "a out", "b in", "b out"]


async def test_hold_different_keys_do_not_wait_for_each_other():
    locks = KeyedLocks()
    inside = asyncio.Event()

    async def first() -> None:
        async with locks.hold("x"):
            await asyncio.wait_for(inside.wait(), 1)

    async def second() -> None:
        async with locks.hold("y"):
            inside.set()

    await asyncio.gather(first(), second())


async def test_hold_released_keys_are_forgotten():
    locks = KeyedLocks()
    for key in range(100):
        async with locks.hold(key):
            assert len(locks) == 1
    assert len(locks) == 0


async def test_hold_newcomer_during_a_handover_still_waits_its_turn():
    # A releases while B waits; C arrives before B has run. Two holders at once
    # (B and C) was the bug: the lock was forgotten in between.
    locks = KeyedLocks()
    holders = 0
    most = 0

    async def work() -> None:
        nonlocal holders, most
        async with locks.hold("order-1"):
            holders += 1
            most = max(most, holders)
            await asyncio.sleep(0)
            holders -= 1

    async def a_then_c() -> None:
        async with locks.hold("order-1"):
            await asyncio.sleep(0.01)  # B queues meanwhile
        await work()  # C: right after the release, before B has woken

    await asyncio.gather(a_then_c(), work())
    assert most == 1
    assert len(locks) == 0
