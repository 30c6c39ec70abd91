"""The gateway's adapters: the log producer, its log tail, the read models and the venues.

The HTTP routes (``app.py``, ``browse.py``) reach the outside world only through
the ``Gateway`` object built here.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime

from aiokafka import AIOKafkaProducer
from psycopg_pool import AsyncConnectionPool

from adapters.locks import KeyedLocks
from adapters.settings import Settings
from adapters.venues.client import HttpVenue, http_venues
from events.messages import DecodeError, decode_stored_event
from projections.orders import queries
from services.gateway import stream
from services.gateway.hub import EventHub, Logged, OrderFacts

log = logging.getLogger(__name__)


class Gateway:
    """The gateway's adapters: the log producer, the log tail and the read models."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self.clock = clock
        self.hub = EventHub(settings, stream.render, resolve=self.lookup_facts)
        self._producer: AIOKafkaProducer | None = None
        if settings.database_url is None:
            raise RuntimeError("the gateway needs OEE_DATABASE_URL (the read models)")
        self.pool = AsyncConnectionPool(settings.database_url, min_size=1, max_size=10, open=False)
        self.key_locks = KeyedLocks()
        self.venues: list[HttpVenue] = []

    @property
    def producer(self) -> AIOKafkaProducer:
        assert self._producer is not None, "the gateway is not started"
        return self._producer

    async def start(self) -> None:
        await self.pool.open(wait=True, timeout=30)
        self.venues = await http_venues(self.settings)
        # aiokafka binds to the running loop, so it is created here and not in __init__.
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap, acks="all", enable_idempotence=True
        )
        await self._producer.start()
        topics = (self.settings.commands_topic, self.settings.events_topic)
        await self.hub.start({t: await self._producer.partitions_for(t) for t in topics})

    async def stop(self) -> None:
        await self.hub.stop()
        await self.producer.stop()
        await self.pool.close()
        for venue in self.venues:
            await venue.aclose()

    async def history(self, order_id: uuid.UUID) -> list[Logged]:
        """Return an order's events known so far, by sequence (first occurrence wins)."""
        by_seq: dict[int, Logged] = {}
        async with self.pool.connection() as conn:
            rows = await queries.list_events(conn, order_id)
        for row in rows:
            try:
                event = decode_stored_event(row["payload"])
            except DecodeError:
                log.exception("stored event %s of %s does not decode", row["seq"], order_id)
                continue
            position = {
                "topic": row["topic"],
                "partition": row["partition"],
                "offset": row["offset"],
            }
            by_seq[event.seq] = Logged(event, position)
        for logged in self.hub.recent(order_id):
            by_seq.setdefault(logged.event.seq, logged)
        return [by_seq[s] for s in sorted(by_seq)]

    async def lookup_facts(self, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, OrderFacts]:
        """Return what the read models know of orders' types, tokens and venues."""
        async with self.pool.connection() as conn:
            rows = await queries.order_facts(conn, order_ids)
        return {
            row["order_id"]: OrderFacts(
                row["order_type"], row["token_in"], row["token_out"], row["venue"]
            )
            for row in rows
        }

    async def exists(self, order_id: uuid.UUID) -> bool:
        if self.hub.knows(order_id):
            return True
        async with self.pool.connection() as conn:
            return await queries.get_order(conn, order_id) is not None
