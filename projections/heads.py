"""Where the read models stand, order by order: the seq and status each of them holds.

``oee audit`` compares these with its own fold of the log. All of them are read in
one REPEATABLE READ transaction, so they are as of one moment: the projector writes
each batch's rows, in every table of a projection, in one transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from adapters.postgres import Connection

# The tables and what each one tells of an order: its folded seq and status, or (the
# audit trail) how many of its events it holds and the last seq among them.
_HEAD_QUERIES = {
    "orders": "SELECT order_id, seq, status, NULL FROM orders",
    "order_events": "SELECT order_id, max(seq), NULL, count(*) FROM order_events GROUP BY 1",
    "analytics_orders": "SELECT order_id, seq, status, NULL FROM analytics_orders",
}
TABLES: tuple[str, ...] = tuple(_HEAD_QUERIES)


@dataclass(frozen=True, slots=True)
class Head:
    """One order in one read-model table: the seq and status of its row, or for the
    audit trail (one row per event, no status) its last seq and how many rows it has."""

    seq: int
    status: str | None = None
    events: int | None = None


# Table name -> order id -> head; a table that does not exist is absent.
ReadModelHeads = dict[str, dict[uuid.UUID, Head]]


async def read_heads(conn: Connection) -> ReadModelHeads:
    """Return the head of every order in each read-model table that exists."""
    heads: ReadModelHeads = {}
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for table, query in _HEAD_QUERIES.items():
            cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
            found = await cur.fetchone()
            if found is None or not found[0]:
                continue
            cur = await conn.execute(query)
            heads[table] = {
                order_id: Head(seq, status, events)
                for order_id, seq, status, events in await cur.fetchall()
            }
    return heads
