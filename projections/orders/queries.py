"""Read-only queries on the orders read model, for the gateway: typed rows, not dicts.

An order comes back as the ``OrderState`` its row was written from, an event of
the audit trail as a ``StoredEvent``, what the firehose filters on as
``OrderLabels``, and the armed limit orders of a pair as ``LimitLevel`` rows.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg.rows import class_row, kwargs_row

from adapters.postgres import Connection
from domain.lifecycle import OrderState
from events.messages import Status
from projections.orders.handler import row_to_state, state_to_row


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One applied event of an order (``payload``: the message as JSON) and where it
    sits on the log."""

    message_id: uuid.UUID
    seq: int
    type: str
    status: Status
    occurred_at: datetime
    payload: dict[str, Any]
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class OrderLabels:
    """What a stream filter asks of an order: its type, tokens, venue and account."""

    order_id: uuid.UUID
    order_type: str
    token_in: str
    token_out: str
    venue: str | None
    account: str | None


@dataclass(frozen=True, slots=True)
class LimitLevel:
    """The armed limit orders that sell ``token_in`` at one limit price: how many, how much."""

    token_in: str
    limit_price: Decimal
    orders: int
    amount: Decimal


def _state(**row: Any) -> OrderState:
    return row_to_state(row)


_STATE_ROW = kwargs_row(_state)


async def find_order(conn: Connection, order_id: uuid.UUID) -> OrderState | None:
    """Return an order's current state, or ``None`` if unknown."""
    async with conn.cursor(row_factory=_STATE_ROW) as cur:
        await cur.execute("SELECT * FROM orders WHERE order_id = %s", (order_id,))
        return await cur.fetchone()


async def stored_events(conn: Connection, order_id: uuid.UUID) -> list[StoredEvent]:
    """Return an order's applied events, oldest first, with their log positions."""
    async with conn.cursor(row_factory=class_row(StoredEvent)) as cur:
        await cur.execute(
            """
            SELECT message_id, seq, type, status, occurred_at, payload,
                   topic, partition, "offset"
            FROM order_events
            WHERE order_id = %s
            ORDER BY seq
            """,
            (order_id,),
        )
        return await cur.fetchall()


async def newest_orders(
    conn: Connection,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None = None,
    account: str | None = None,
) -> list[OrderState]:
    """Return up to ``limit`` orders, newest first, created before the ``before`` key;
    only those ``account`` placed, when it is given.

    Keyset pagination on ``(created_at, order_id)``: the order id breaks ties between
    orders created in the same microsecond, so no page repeats or skips a row.
    """
    where: list[str] = []
    params: list[Any] = []
    if account is not None:
        where.append("account = %s")
        params.append(account)
    if before is not None:
        where.append("(created_at, order_id) < (%s, %s)")
        params.extend(before)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    async with conn.cursor(row_factory=_STATE_ROW) as cur:
        await cur.execute(
            f"SELECT * FROM orders {clause} ORDER BY created_at DESC, order_id DESC LIMIT %s",
            (*params, limit),
        )
        return await cur.fetchall()


async def order_labels(conn: Connection, order_ids: list[uuid.UUID]) -> list[OrderLabels]:
    """Return the type, tokens and venue of each known order among ``order_ids``."""
    async with conn.cursor(row_factory=class_row(OrderLabels)) as cur:
        await cur.execute(
            "SELECT order_id, order_type, token_in, token_out, venue, account FROM orders"
            " WHERE order_id = ANY(%s)",
            (order_ids,),
        )
        return await cur.fetchall()


async def armed_limit_levels(
    conn: Connection, token_a: str, token_b: str, account: str | None = None
) -> list[LimitLevel]:
    """Return the armed limit orders between ``token_a`` and ``token_b`` (either way
    round) by the token they sell and their limit price, highest price first; only
    those ``account`` placed, when it is given."""
    params: list[Any] = [token_a, token_b, token_b, token_a]
    mine = ""
    if account is not None:
        mine = "AND account = %s"
        params.append(account)
    async with conn.cursor(row_factory=class_row(LimitLevel)) as cur:
        await cur.execute(
            f"""
            SELECT token_in, limit_price, count(*)::integer AS orders, sum(amount) AS amount
            FROM orders
            WHERE status = 'armed' AND order_type = 'limit'
              AND ((token_in = %s AND token_out = %s) OR (token_in = %s AND token_out = %s))
              {mine}
            GROUP BY token_in, limit_price
            ORDER BY limit_price DESC, token_in
            """,
            params,
        )
        return await cur.fetchall()


async def known_orders(conn: Connection, order_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Return which of ``order_ids`` the read model has (the engine accepted them)."""
    cur = await conn.execute("SELECT order_id FROM orders WHERE order_id = ANY(%s)", (order_ids,))
    return {row[0] for row in await cur.fetchall()}


# The gateway still reads rows as dicts under these names, until it moves to the
# typed queries above; each is that query's answer as the dicts it had.


async def get_order(conn: Connection, order_id: uuid.UUID) -> dict[str, Any] | None:
    """Return ``find_order`` as an ``orders`` row."""
    state = await find_order(conn, order_id)
    return None if state is None else state_to_row(state)


async def list_events(conn: Connection, order_id: uuid.UUID) -> list[dict[str, Any]]:
    """Return ``stored_events`` as dicts."""
    return [asdict(event) for event in await stored_events(conn, order_id)]


async def list_orders(
    conn: Connection,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None = None,
    account: str | None = None,
) -> list[dict[str, Any]]:
    """Return ``newest_orders`` as ``orders`` rows."""
    return [state_to_row(state) for state in await newest_orders(conn, limit, before, account)]


async def order_facts(conn: Connection, order_ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    """Return ``order_labels`` as dicts."""
    return [asdict(labels) for labels in await order_labels(conn, order_ids)]
