"""The events the log tail saw of recent orders, and who is listening for each order.

A client reads its own writes through this cache before the projector has caught
up, and a per-order WebSocket subscribes here before it reads history, so an
event that lands in between reaches it anyway. The cache holds at most
``max_orders`` orders: when it is full, the order that ended longest ago goes
first (the read models have it by then), and only when none has ended the order
least recently heard of. An order somebody is watching stays.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from events.messages import TERMINAL_STATUSES
from services.gateway.mailbox import Mailbox
from services.gateway.tail import Logged


@dataclass(slots=True)
class _Order:
    events: dict[int, Logged] = field(default_factory=dict)
    subscribers: set[Mailbox[Logged]] = field(default_factory=set)


class RecentEvents:
    """Keep the events of a bounded number of recent orders and hand them to subscribers."""

    def __init__(self, max_orders: int = 2000) -> None:
        self._max_orders = max_orders
        # Least recently heard of first, in each.
        self._running: OrderedDict[uuid.UUID, _Order] = OrderedDict()
        self._ended: OrderedDict[uuid.UUID, _Order] = OrderedDict()
        self._listeners = 0

    def __len__(self) -> int:
        return len(self._running) + len(self._ended)

    def add(self, logged: Logged) -> bool:
        """Record an event and pass it to the order's subscribers; return whether it was new.

        The first occurrence of a sequence number wins: a re-emitted copy is dropped.
        """
        event = logged.event
        order = self._touch(event.order_id)
        if event.seq in order.events:
            return False
        order.events[event.seq] = logged
        for mailbox in list(order.subscribers):
            if not mailbox.offer(logged):
                order.subscribers.discard(mailbox)  # it fell behind: its socket is closing
        if event.status in TERMINAL_STATUSES:
            self._ended[event.order_id] = self._running.pop(event.order_id, order)
        return True

    def recent(self, order_id: uuid.UUID) -> list[Logged]:
        """Return the events of an order seen since start-up, by sequence."""
        order = self._get(order_id)
        return [order.events[s] for s in sorted(order.events)] if order else []

    def knows(self, order_id: uuid.UUID) -> bool:
        """Tell whether an event of this order was seen."""
        order = self._get(order_id)
        return order is not None and bool(order.events)

    @property
    def listeners(self) -> int:
        """Count the per-order subscriptions open now."""
        return self._listeners

    @contextlib.asynccontextmanager
    async def subscribe(self, order_id: uuid.UUID, capacity: int) -> AsyncIterator[Mailbox[Logged]]:
        """Receive every new event of an order from now on, up to ``capacity`` unread."""
        order = self._touch(order_id)
        mailbox: Mailbox[Logged] = Mailbox(capacity)
        order.subscribers.add(mailbox)
        self._listeners += 1
        try:
            yield mailbox
        finally:
            order.subscribers.discard(mailbox)
            self._listeners -= 1
            if not order.events and not order.subscribers:
                self._running.pop(order_id, None)  # nothing was heard of it: forget it

    def _get(self, order_id: uuid.UUID) -> _Order | None:
        return self._running.get(order_id) or self._ended.get(order_id)

    def _touch(self, order_id: uuid.UUID) -> _Order:
        for orders in (self._running, self._ended):
            if order_id in orders:
                orders.move_to_end(order_id)
                return orders[order_id]
        self._evict(room_for=1)
        order = self._running[order_id] = _Order()
        return order

    def _evict(self, room_for: int) -> None:
        excess = len(self) + room_for - self._max_orders
        if excess <= 0:
            return
        for orders in (self._ended, self._running):
            # The oldest first, looking a little past the excess for unwatched ones.
            candidates = itertools.islice(orders.items(), 2 * excess + 16)
            idle = [oid for oid, order in candidates if not order.subscribers][:excess]
            for order_id in idle:
                del orders[order_id]
            excess -= len(idle)
            if excess <= 0:
                return
