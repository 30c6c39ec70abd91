"""The events the log tail saw of recent orders, and who is listening for each order.

A client reads its own writes through this cache before the projector has caught
up, and a per-order WebSocket subscribes here before it reads history, so an
event that lands in between reaches it anyway. The cache is bounded: the orders
least recently heard of go first, except those somebody is watching.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from services.gateway.tail import Logged


@dataclass(slots=True)
class _Order:
    events: dict[int, Logged] = field(default_factory=dict)
    subscribers: set[asyncio.Queue[Logged]] = field(default_factory=set)


class RecentEvents:
    """Keep the events of a bounded number of recent orders and hand them to subscribers."""

    def __init__(self, max_orders: int = 50_000) -> None:
        self._max_orders = max_orders
        self._orders: OrderedDict[uuid.UUID, _Order] = OrderedDict()
        self._listeners = 0

    def add(self, logged: Logged) -> bool:
        """Record an event and pass it to the order's subscribers; return whether it was new.

        The first occurrence of a sequence number wins: a re-emitted copy is dropped.
        """
        event = logged.event
        order = self._touch(event.order_id)
        if event.seq in order.events:
            return False
        order.events[event.seq] = logged
        for queue in order.subscribers:
            queue.put_nowait(logged)
        return True

    def recent(self, order_id: uuid.UUID) -> list[Logged]:
        """Return the events of an order seen since start-up, by sequence."""
        order = self._orders.get(order_id)
        return [order.events[s] for s in sorted(order.events)] if order else []

    def knows(self, order_id: uuid.UUID) -> bool:
        """Tell whether an event of this order was seen."""
        order = self._orders.get(order_id)
        return order is not None and bool(order.events)

    @property
    def listeners(self) -> int:
        """Count the per-order subscriptions open now."""
        return self._listeners

    @contextlib.asynccontextmanager
    async def subscribe(self, order_id: uuid.UUID) -> AsyncIterator[asyncio.Queue[Logged]]:
        """Receive every new event of an order from now on."""
        order = self._touch(order_id)
        queue: asyncio.Queue[Logged] = asyncio.Queue()
        order.subscribers.add(queue)
        self._listeners += 1
        try:
            yield queue
        finally:
            order.subscribers.discard(queue)
            self._listeners -= 1

    def _touch(self, order_id: uuid.UUID) -> _Order:
        order = self._orders.get(order_id)
        if order is None:
            order = self._orders[order_id] = _Order()
            self._evict()
        else:
            self._orders.move_to_end(order_id)
        return order

    def _evict(self) -> None:
        excess = len(self._orders) - self._max_orders
        if excess <= 0:
            return
        # Oldest first; an order somebody is watching stays however old it is.
        candidates = itertools.islice(self._orders.items(), 2 * excess + 16)
        idle = [oid for oid, order in candidates if not order.subscribers][:excess]
        for order_id in idle:
            del self._orders[order_id]
