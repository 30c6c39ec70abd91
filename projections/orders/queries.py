"""Read-only queries on the orders read model, for the gateway."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg.rows import dict_row

from projections.tracking import Connection


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
