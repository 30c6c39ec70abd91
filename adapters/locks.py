"""Locks by key that exist only while somebody holds or waits for them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class KeyedLocks:
    """One asyncio lock per key, forgotten when no coroutine holds or awaits it."""

    def __init__(self) -> None:
        # The lock of each key and how many coroutines hold or await it.
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        """Run the block while holding ``key``'s lock."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            # Counted, not judged by ``lock.locked()``: a released lock reads as free
            # until the waiter it woke runs, and forgetting it then would let a newcomer
            # take a second lock for the same key while that waiter takes the first.
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
