"""A listener's bounded queue: a listener that lets it fill up is dropped, never waited for.

So one slow socket can neither delay the others nor make the gateway hold its backlog.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class Mailbox(Generic[T]):
    """Up to ``capacity`` items waiting for one listener, and whether it was dropped."""

    def __init__(self, capacity: int) -> None:
        self.queue: asyncio.Queue[T] = asyncio.Queue(maxsize=capacity)
        self.dropped = asyncio.Event()

    def offer(self, item: T) -> bool:
        """Queue ``item``, or mark the listener dropped when it is full; return whether queued."""
        if self.dropped.is_set():
            return False
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped.set()
            return False
        return True
