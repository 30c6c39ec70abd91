"""Read-only queries on the orders read model, for the gateway."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row

from adapters.postgres import Connection


async def get_order(conn: Connection, order_id: uuid.UUID) -> dict[str, Any] | None:
    """Return an order's current row (money as ``Decimal``), or ``None`` if unknown."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM orders WHERE order_id = %s", (order_id,))
        return await cur.fetchone()


async def list_events(conn: Connection, order_id: uuid.UUID) -> list[dict[str, Any]]:
    """Return an order's applied events, oldest first, with their log positions."""
    async with conn.cursor(row_factory=dict_row) as cur:
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


async def list_orders(
    conn: Connection, limit: int, before: tuple[datetime, uuid.UUID] | None = None
) -> list[dict[str, Any]]:
    """Return up to ``limit`` orders, newest first, created before the ``before`` key.

    Keyset pagination on ``(created_at, order_id)``: the order id breaks ties between
    orders created in the same microsecond, so no page repeats or skips a row.
    """
    async with conn.cursor(row_factory=dict_row) as cur:
        if before is None:
            await cur.execute(
                "SELECT * FROM orders ORDER BY created_at DESC, order_id DESC LIMIT %s",
                (limit,),
            )
        else:
            await cur.execute(
                """
                SELECT * FROM orders
                WHERE (created_at, order_id) < (%s, %s)
                ORDER BY created_at DESC, order_id DESC
                LIMIT %s
                """,
                (*before, limit),
            )
        return await cur.fetchall()


async def order_facts(conn: Connection, order_ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    """Return the type, tokens and venue of each known order among ``order_ids``."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT order_id, order_type, token_in, token_out, venue FROM orders"
            " WHERE order_id = ANY(%s)",
            (order_ids,),
        )
        return await cur.fetchall()


async def known_orders(conn: Connection, order_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Return which of ``order_ids`` the read model has (the engine accepted them)."""
    cur = await conn.execute("SELECT order_id FROM orders WHERE order_id = ANY(%s)", (order_ids,))
    return {row[0] for row in await cur.fetchall()}
