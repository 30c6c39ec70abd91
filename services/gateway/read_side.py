"""What the gateway reads: the PostgreSQL read models merged with what its log tail saw.

An order's state is its ``orders`` row with whatever newer events the tail holds
folded on top, so a client reads its own writes before the projector has caught
up; an order known only from its submission is pending. The audit trail reads
``order_events``, with the tail's events filling in what is not projected yet.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from adapters.postgres import Connection
from domain.lifecycle import IllegalTransition, OrderState, evolve, is_stale
from events.messages import DecodeError, decode_stored_event
from projections.analytics.queries import analytics
from projections.orders import queries
from projections.orders.handler import row_to_state
from services.gateway.errors import DatabaseUnavailable, database_unavailable
from services.gateway.fanout import OrderFacts
from services.gateway.recent import RecentEvents
from services.gateway.submissions import Submissions
from services.gateway.tail import Logged

log = logging.getLogger(__name__)


def fold_onto(state: OrderState | None, events: Iterable[Logged]) -> OrderState | None:
    """Return ``state`` with the events that follow it folded on, up to the first gap.

    Events at or below the state's sequence number are already in it and skipped.
    """
    for logged in sorted(events, key=lambda item: item.event.seq):
        if is_stale(state, logged.event):
            continue
        try:
            state = evolve(state, logged.event)
        except IllegalTransition:
            break  # a gap: the rest is not known yet
    return state


def connection_pool(url: str, timeout_s: float) -> AsyncConnectionPool:
    """Return a pool (not open yet) that fails fast while the database is down and
    reconnects within seconds once it is back."""
    return AsyncConnectionPool(
        url,
        min_size=1,
        max_size=10,
        open=False,
        timeout=timeout_s,
        # A connection the server dropped while idle is noticed before it is lent.
        check=AsyncConnectionPool.check_connection,
        # The pool's reconnection backoff doubles without bound; giving up early
        # lets the next read start a fresh attempt at once instead of waiting it out.
        reconnect_timeout=2 * timeout_s,
        kwargs={"connect_timeout": max(1, math.ceil(timeout_s)), "options": "-c TimeZone=UTC"},
    )


# What a read raises when the database cannot answer: down, unreachable, too slow,
# or its read models not created yet.
_UNAVAILABLE = (psycopg.OperationalError, psycopg.errors.UndefinedTable, TimeoutError)
# After a failed read, further reads fail at once for this long instead of each
# waiting out the timeout; the first read after it tries the database again.
_FAIL_FAST_S = 1.0


class ReadSide:
    """The read models, through a connection pool, and the log tail's recent memory."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        recent: RecentEvents,
        submissions: Submissions,
        timeout_s: float = 2.0,
    ) -> None:
        self._pool = pool
        self._recent = recent
        self._submissions = submissions
        self._timeout_s = timeout_s
        self._failed_at: float | None = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """Lend a connection of the pool for one read; raise 503 when the database is down."""
        loop = asyncio.get_running_loop()
        if self._failed_at is not None and loop.time() - self._failed_at < _FAIL_FAST_S:
            raise database_unavailable()
        try:
            # The pool bounds the wait for a connection; this bounds the answer too.
            async with asyncio.timeout(2 * self._timeout_s):
                async with self._pool.connection(timeout=self._timeout_s) as conn:
                    yield conn
        except _UNAVAILABLE as exc:
            log.warning("the read models are unavailable: %r", exc)
            self._failed_at = loop.time()
            raise database_unavailable() from exc
        self._failed_at = None

    async def reachable(self) -> bool:
        """Tell whether the read models answer now."""
        try:
            async with self.connection() as conn:
                await conn.execute("SELECT 1")
        except DatabaseUnavailable:
            return False
        return True

    async def state(self, order_id: uuid.UUID) -> OrderState | None:
        """Return an order's current state: its row, then the newer events the tail saw."""
        async with self.connection() as conn:
            row = await queries.get_order(conn, order_id)
        return fold_onto(row_to_state(row) if row else None, self._recent.recent(order_id))

    async def status(self, order_id: uuid.UUID) -> str:
        """Return an order's status; while the database is down, as far as the tail knows."""
        try:
            state = await self.state(order_id)
        except DatabaseUnavailable:
            state = fold_onto(None, self._recent.recent(order_id))
        return state.status if state is not None else "pending"

    def remembered(self, order_id: uuid.UUID) -> list[Logged]:
        """Return the events of an order the tail holds, by sequence (no database)."""
        return self._recent.recent(order_id)

    async def history(self, order_id: uuid.UUID) -> list[Logged]:
        """Return an order's events known so far, by sequence (first occurrence wins)."""
        by_seq: dict[int, Logged] = {}
        async with self.connection() as conn:
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
        for logged in self._recent.recent(order_id):
            by_seq.setdefault(logged.event.seq, logged)
        return [by_seq[s] for s in sorted(by_seq)]

    async def exists(self, order_id: uuid.UUID) -> bool:
        """Tell whether the order was submitted, as far as the tail or the read models know."""
        if self._recent.knows(order_id) or self._submissions.submitted(order_id) is not None:
            return True
        async with self.connection() as conn:
            return await queries.get_order(conn, order_id) is not None

    def submitted_by(self, order_id: uuid.UUID) -> str | None:
        """Return the account that placed an order known only from the log tail, if known."""
        command = self._submissions.submitted(order_id)
        if command is not None:
            return command.account
        state = fold_onto(None, self._recent.recent(order_id))
        return state.account if state is not None else None

    async def request_hash(self, order_id: uuid.UUID) -> str | None:
        """Return the digest of what the order's submission asked, if it was projected."""
        async with self.connection() as conn:
            row = await queries.get_order(conn, order_id)
        return str(row["request_hash"]) if row else None

    async def lookup_facts(self, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, OrderFacts]:
        """Return what the read models know of orders' types, tokens and venues."""
        async with self.connection() as conn:
            rows = await queries.order_facts(conn, order_ids)
        return {
            row["order_id"]: OrderFacts(
                row["order_type"], row["token_in"], row["token_out"], row["venue"], row["account"]
            )
            for row in rows
        }

    async def list_orders(
        self, limit: int, before: tuple[datetime, uuid.UUID] | None, account: str | None
    ) -> list[dict[str, Any]]:
        """Return up to ``limit`` order rows, newest first, created before ``before``;
        only ``account``'s, unless it is None (every order)."""
        async with self.connection() as conn:
            return await queries.list_orders(conn, limit, before, account)

    async def limit_levels(
        self, token_a: str, token_b: str, account: str | None
    ) -> list[queries.LimitLevel]:
        """Return the armed limit orders of a pair by side and price (``account``'s only,
        unless it is None)."""
        async with self.connection() as conn:
            return await queries.armed_limit_levels(conn, token_a, token_b, account)

    async def analytics(self) -> dict[str, Any]:
        """Return execution figures per venue and per pair."""
        async with self.connection() as conn:
            return await analytics(conn)
