"""The firehose's fan-out: every new event, rendered once, to every feed whose filter passes it.

A ``Feed`` is one firehose socket's filter and bounded queue (``mailbox.py``): a
feed that falls behind is dropped, never waited for. Filters on type, token or venue
need each order's facts; the fan-out keeps them for recent orders and looks up
those of older orders in the read models.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from events.messages import TERMINAL_STATUSES, Command, Event, OrderAccepted
from services.gateway.errors import ApiError
from services.gateway.mailbox import Mailbox
from services.gateway.sockets import FrameWriter, text_frame
from services.gateway.tail import Cursor, Logged, format_cursor

log = logging.getLogger(__name__)

# How long the log tail waits for the read models to describe older orders.
_RESOLVE_TIMEOUT_S = 0.5
# Sockets written to in one go before the event loop gets to run other work.
_FLUSH_CHUNK = 16


@dataclass(frozen=True, slots=True)
class OrderFacts:
    """What a firehose filter asks of an order besides its event: type, pair, venue, and
    the account that placed it."""

    order_type: str
    token_in: str
    token_out: str
    venue: str | None = None
    account: str | None = None

    def after(self, event: Event) -> OrderFacts:
        """Return the facts once ``event`` happened (a routing may change the venue)."""
        venue = getattr(event, "venue", None)
        if venue is None or venue == self.venue:
            return self
        return OrderFacts(self.order_type, self.token_in, self.token_out, venue, self.account)


def facts_of(accepted: OrderAccepted) -> OrderFacts:
    """Return the facts an order starts with."""
    spec = accepted.spec
    return OrderFacts(spec.order_type, spec.token_in, spec.token_out, account=accepted.account)


def facts_after(known: OrderFacts | None, event: Event) -> OrderFacts | None:
    """Return an order's facts once ``event`` happened, from what was known before it."""
    if isinstance(event, OrderAccepted):
        return facts_of(event)
    return known.after(event) if known is not None else None


# Looks up the facts of orders accepted before this gateway started (read models).
Resolver = Callable[[list[uuid.UUID]], Awaitable[dict[uuid.UUID, OrderFacts]]]
# Renders an event and the cursor after it as a firehose message.
Renderer = Callable[[Logged, str], str]


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """Which events a firehose passes: each given field must match (values OR'd within)."""

    statuses: frozenset[str] = frozenset()
    tokens: frozenset[str] = frozenset()
    venues: frozenset[str] = frozenset()
    order_types: frozenset[str] = frozenset()
    # The caller's account: a firehose shows only its orders (None: an admin's, all).
    account: str | None = None

    @property
    def needs_facts(self) -> bool:
        return bool(self.tokens or self.venues or self.order_types or self.account)

    def matches(self, event: Event, facts: OrderFacts | None) -> bool:
        """Tell whether ``event`` (with its order's facts after it) passes this filter."""
        if self.statuses and event.status not in self.statuses:
            return False
        if not self.needs_facts:
            return True
        if facts is None:
            return False  # an order nobody can describe matches no attribute filter
        if self.account is not None and facts.account != self.account:
            return False
        if self.order_types and facts.order_type not in self.order_types:
            return False
        if self.tokens and not {facts.token_in, facts.token_out} & self.tokens:
            return False
        return not self.venues or facts.venue in self.venues


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A firehose message, rendered once for every socket: its text and its frame."""

    text: str
    frame: bytes

    @classmethod
    def of(cls, text: str) -> Outgoing:
        return cls(text, text_frame(text))


class Feed(Mailbox[Outgoing]):
    """One firehose subscriber: a filter, and how its messages reach the socket.

    Once the socket is live (``writer`` set), a feed that keeps up has its frames
    written straight to the connection, all of one tail batch at once (``flush``):
    no task wakes per socket and event. A feed whose connection is paused, or whose
    sender still holds earlier messages (``busy``), queues them for its sender
    instead, up to ``capacity``: beyond that it is dropped.
    """

    def __init__(self, stream_filter: StreamFilter, capacity: int) -> None:
        super().__init__(capacity)
        self.filter = stream_filter
        self.writer: FrameWriter | None = None
        self.busy = False
        self._held: list[Outgoing] = []

    def offer(self, item: Outgoing) -> bool:
        """Hold ``item`` for this batch's direct write, or queue it; False once dropped."""
        if self.writer is not None and not self.busy and self.queue.empty():
            if not self.dropped.is_set():
                self._held.append(item)
            return not self.dropped.is_set()
        return super().offer(item)

    def flush(self) -> bool:
        """Write the held messages, or queue them if the connection takes no more now;
        return whether the feed is still fed."""
        held, self._held = self._held, []
        if not held or self.writer is None:
            return True
        if self.writer.write_now([message.frame for message in held]):
            return True
        return all(Mailbox.offer(self, message) for message in held)


class Fanout:
    """Hand every new event to the feeds that want it, rendered once for all of them."""

    def __init__(
        self,
        render: Renderer,
        cursor: Callable[[], Cursor],
        resolve: Resolver | None = None,
        max_orders: int = 2000,
    ) -> None:
        self._render = render
        # The tail's position, read as each event is published: its cursor is the one after it.
        self._cursor = cursor
        self._resolve = resolve
        self._max_orders = max_orders
        self._feeds: set[Feed] = set()
        # Feeds with frames to write once the tail's current batch is in, oldest first.
        self._held: dict[Feed, None] = {}
        self._facts: OrderedDict[uuid.UUID, OrderFacts] = OrderedDict()

    async def prepare(self, messages: Sequence[Event | Command]) -> None:
        """Look up the facts of orders from before start-up, when a feed may need them."""
        if self._resolve is None or not any(f.filter.needs_facts for f in self._feeds):
            return
        unknown = {
            m.order_id
            for m in messages
            if isinstance(m, Event)
            and not isinstance(m, OrderAccepted)
            and m.order_id not in self._facts
        }
        if not unknown:
            return
        try:
            # Bounded: the whole log tail waits for this lookup.
            found = await asyncio.wait_for(self._resolve(sorted(unknown)), _RESOLVE_TIMEOUT_S)
        except (ApiError, TimeoutError) as exc:
            log.warning("cannot look up %d orders for the firehose filters: %r", len(unknown), exc)
            return
        for order_id, facts in found.items():
            self._remember(order_id, facts)

    def publish(self, logged: Logged) -> None:
        """Offer a new event to every feed whose filter passes it; drop feeds that are full."""
        facts = self._advance(logged.event)
        if logged.event.status in TERMINAL_STATUSES:
            self._facts.pop(logged.event.order_id, None)  # no event of it is to come
        if not self._feeds:
            return
        message: Outgoing | None = None  # rendered once, for every feed that wants it
        for feed in list(self._feeds):
            if not feed.filter.matches(logged.event, facts):
                continue
            if message is None:
                message = Outgoing.of(self._render(logged, format_cursor(self._cursor())))
            if not feed.offer(message):
                self._feeds.discard(feed)
            elif feed.writer is not None and feed.queue.empty():
                if not self._held:
                    # Right after the tail's current batch: one write per socket for all of it.
                    asyncio.get_running_loop().call_soon(self._flush)
                self._held[feed] = None

    def _flush(self) -> None:
        """Write the held frames of a few feeds, then let the loop run before the next few."""
        for _ in range(_FLUSH_CHUNK):
            if not self._held:
                return
            feed = next(iter(self._held))
            del self._held[feed]
            if not feed.flush():
                self._feeds.discard(feed)
        if self._held:
            # A write to a socket costs tens of microseconds: a thousand at once would
            # hold up every request for as many milliseconds.
            asyncio.get_running_loop().call_soon(self._flush)

    def facts(self, order_id: uuid.UUID) -> OrderFacts | None:
        """Return what the fan-out knows of an order's type, pair and venue."""
        return self._facts.get(order_id)

    async def resolve(self, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, OrderFacts]:
        """Look up facts of orders never seen accepted (empty without a resolver)."""
        return await self._resolve(order_ids) if self._resolve and order_ids else {}

    def open_feed(self, stream_filter: StreamFilter, capacity: int) -> tuple[Feed, Cursor]:
        """Start a firehose feed; return it and the cursor from which it receives events."""
        feed = Feed(stream_filter, capacity)
        self._feeds.add(feed)
        return feed, self._cursor()

    def close_feed(self, feed: Feed) -> None:
        """Stop feeding ``feed``."""
        self._feeds.discard(feed)

    @property
    def listeners(self) -> int:
        """Count the firehose feeds open now."""
        return len(self._feeds)

    def _advance(self, event: Event) -> OrderFacts | None:
        facts = facts_after(self._facts.get(event.order_id), event)
        if facts is not None:
            self._remember(event.order_id, facts)
        return facts

    def _remember(self, order_id: uuid.UUID, facts: OrderFacts) -> None:
        self._facts[order_id] = facts
        self._facts.move_to_end(order_id)
        while len(self._facts) > self._max_orders:
            self._facts.popitem(last=False)
