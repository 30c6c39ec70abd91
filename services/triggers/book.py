"""The armed orders, indexed for the questions the trigger service asks. Pure, no I/O.

* Limit orders, per market and side, sorted by limit price: "which orders does
  spot price P reach?" is a bisection plus the orders it returns (O(log n + k)).
* Snipers by the token they buy: "who waits for this token's pool?" is a lookup.
* A heap of expiry times: "which orders expired by now?" pops only those.

Each side is kept as a list sorted by a key that makes both sides read the same way:
a sell (fires at or above its limit) is keyed by its limit, a buy (fires at or below)
by minus its limit, so the orders a price reaches are always a prefix of the list,
most favourable limit first, then first armed first (price-time priority).
"""

from __future__ import annotations

import heapq
import itertools
import uuid
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from domain.pricing import Market, Side, market_of, reaches, side_of
from events.messages import OrderSpec

# (key, arrival, order id): key is limit (sell) or -limit (buy); arrival breaks ties by time.
_Entry = tuple[Decimal, int, uuid.UUID]


@dataclass(frozen=True, slots=True)
class Armed:
    """An order waiting for its condition, as armed at version ``seq``."""

    order_id: uuid.UUID
    seq: int
    correlation_id: uuid.UUID
    spec: OrderSpec
    market: Market
    side: Side

    @classmethod
    def of(cls, order_id: uuid.UUID, seq: int, correlation_id: uuid.UUID, spec: OrderSpec) -> Armed:
        """Return the armed entry of an order whose spec waits (limit or sniper)."""
        if not spec.waits:
            raise ValueError(f"a {spec.order_type} order is never armed")
        return cls(
            order_id=order_id,
            seq=seq,
            correlation_id=correlation_id,
            spec=spec,
            market=market_of(spec.token_in, spec.token_out),
            side=side_of(spec.token_in, spec.token_out),
        )

    @property
    def bound(self) -> Decimal | None:
        """Return the price the execution must reach: the limit, or a sniper's maximum."""
        return self.spec.limit_price if self.spec.order_type == "limit" else self.spec.max_price

    def reached_by(self, price: Decimal) -> bool:
        """Tell whether executing at ``price`` honours the order's bound (none: always)."""
        bound = self.bound
        return bound is None or reaches(self.side, price, bound)


def _key(side: Side, limit: Decimal) -> Decimal:
    return limit if side == "sell" else -limit


def _first(entry: _Entry) -> Decimal:
    return entry[0]


@dataclass
class ArmedBook:
    """Every armed order of the trigger service, each at the version it was armed."""

    _orders: dict[uuid.UUID, Armed] = field(default_factory=dict)
    _limits: dict[tuple[str, Side], list[_Entry]] = field(default_factory=dict)
    _entries: dict[uuid.UUID, _Entry] = field(default_factory=dict)
    _snipers: dict[str, dict[uuid.UUID, Armed]] = field(default_factory=dict)
    _expiries: list[tuple[datetime, int, uuid.UUID, int]] = field(default_factory=list)
    # Expiries that came due for orders another replica expires (``expire``'s ``mine``).
    _elsewhere: list[tuple[datetime, int, uuid.UUID, int]] = field(default_factory=list)
    _arrivals: itertools.count[int] = field(default_factory=itertools.count)

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._orders

    def get(self, order_id: uuid.UUID) -> Armed | None:
        """Return the order's armed entry, if it is in the book."""
        return self._orders.get(order_id)

    def is_armed(self, order_id: uuid.UUID, seq: int) -> bool:
        """Tell whether the order is in the book at exactly version ``seq``."""
        armed = self._orders.get(order_id)
        return armed is not None and armed.seq == seq

    def orders(self) -> list[Armed]:
        """Return every armed order, oldest arming first."""
        return list(self._orders.values())

    def arm(self, order: Armed) -> bool:
        """Put ``order`` in the book; a later arming of the same order replaces the earlier.

        Return False (and change nothing) when the book holds it at this version or later.
        """
        current = self._orders.get(order.order_id)
        if current is not None:
            if current.seq >= order.seq:
                return False
            self.remove(order.order_id)
        arrival = next(self._arrivals)
        self._orders[order.order_id] = order
        if order.spec.order_type == "limit":
            assert order.spec.limit_price is not None  # OrderSpec guarantees it for limits
            entry = (_key(order.side, order.spec.limit_price), arrival, order.order_id)
            insort(self._limits.setdefault((order.market.name, order.side), []), entry)
            self._entries[order.order_id] = entry
        else:
            self._snipers.setdefault(order.spec.token_out, {})[order.order_id] = order
        if order.spec.expires_at is not None:
            heapq.heappush(
                self._expiries, (order.spec.expires_at, arrival, order.order_id, order.seq)
            )
        return True

    def remove(self, order_id: uuid.UUID) -> Armed | None:
        """Take the order out of the book; return what it was, or None if absent."""
        order = self._orders.pop(order_id, None)
        if order is None:
            return None
        entry = self._entries.pop(order_id, None)
        if entry is not None:
            side_key = (order.market.name, order.side)
            entries = self._limits[side_key]
            at = bisect_left(entries, entry)
            assert entries[at] == entry, "the limit index lost an entry"
            del entries[at]
            if not entries:
                del self._limits[side_key]
        else:
            snipers = self._snipers[order.spec.token_out]
            del snipers[order_id]
            if not snipers:
                del self._snipers[order.spec.token_out]
        # The expiry heap forgets lazily (entries are checked when they come due);
        # it is rebuilt when most of it is stale, so it never outgrows the book by much.
        if len(self._expiries) + len(self._elsewhere) > 2 * len(self._orders) + 64:
            self._expiries = [e for e in self._expiries if self.is_armed(e[2], e[3])]
            heapq.heapify(self._expiries)
            self._elsewhere = [e for e in self._elsewhere if self.is_armed(e[2], e[3])]
        return order

    def reached(self, market: Market, side: Side, price: Decimal) -> list[Armed]:
        """Return the limit orders of ``market`` and ``side`` whose limit ``price`` reaches.

        Sells whose limit is at or below ``price``, lowest limit first; buys whose limit
        is at or above it, highest limit first; ties in the order they were armed.
        """
        entries = self._limits.get((market.name, side))
        if not entries:
            return []
        end = bisect_right(entries, _key(side, price), key=_first)
        return [self._orders[order_id] for _, _, order_id in entries[:end]]

    def crossed(self, market: Market, price: Decimal) -> list[Armed]:
        """Return the limit orders of ``market`` (sells, then buys) that ``price`` reaches."""
        return self.reached(market, "sell", price) + self.reached(market, "buy", price)

    def snipers(self, token: str) -> list[Armed]:
        """Return the snipers waiting for a pool of ``token``, first armed first."""
        return list(self._snipers.get(token, {}).values())

    def next_expiry(self) -> datetime | None:
        """Return the earliest ``expires_at`` among the armed orders, if any has one."""
        while self._expiries and not self.is_armed(self._expiries[0][2], self._expiries[0][3]):
            heapq.heappop(self._expiries)
        return self._expiries[0][0] if self._expiries else None

    def expire(
        self, now: datetime, mine: Callable[[uuid.UUID], bool] = lambda _order_id: True
    ) -> list[Armed]:
        """Take out and return the orders whose ``expires_at`` is at or before ``now``.

        Earliest expiry first; each arming expires once. An order that is not ``mine``
        (another replica expires it) stays in the book, its expiry set aside until
        ``reclaim``: its owner's event takes it out, or its owner's partitions come here.
        """
        due: list[Armed] = []
        while self._expiries and self._expiries[0][0] <= now:
            entry = heapq.heappop(self._expiries)
            _, _, order_id, seq = entry
            if not self.is_armed(order_id, seq):
                continue
            if not mine(order_id):
                self._elsewhere.append(entry)
                continue
            removed = self.remove(order_id)
            assert removed is not None
            due.append(removed)
        return due

    def reclaim(self) -> None:
        """Take back the expiries set aside as another replica's (the owners changed)."""
        for entry in self._elsewhere:
            if self.is_armed(entry[2], entry[3]):
                heapq.heappush(self._expiries, entry)
        self._elsewhere = []
