"""The waiting orders of the read model and the log position they reflect, read together.

The ``orders`` projection writes its rows and its offsets (``projection_offsets``)
in one transaction per batch, so one REPEATABLE READ transaction that reads both
sees the waiting orders exactly as of those offsets. Tailing the events topic from
there misses nothing and folds nothing twice (and a duplicate would be a no-op):
the trigger service starts from this snapshot.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row

from adapters.postgres import Connection
from domain.lifecycle import TERMINAL_STATUSES
from events.messages import OrderSpec, Status
from projections.orders.handler import SPEC_COLUMNS, OrdersProjection, spec_from_row

WAITING_TYPES = ("limit", "sniper")

_OFFSETS_SQL = """
SELECT partition, next_offset FROM projection_offsets
WHERE projection = %s AND topic = %s
"""

# Every limit or sniper order that is not finished: armed ones go in the book, the
# executing ones hold a slot of the gate, pending ones wait for their arming.
_WAITING_SQL = f"""
SELECT order_id, seq, status, correlation_id, {", ".join(SPEC_COLUMNS)}
FROM orders
WHERE order_type = ANY(%s) AND NOT (status = ANY(%s))
ORDER BY created_at, order_id
"""


@dataclass(frozen=True, slots=True)
class WaitingOrder:
    """A limit or sniper order as the read model has it."""

    order_id: uuid.UUID
    seq: int
    status: Status
    correlation_id: uuid.UUID
    spec: OrderSpec


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The waiting orders as of ``offsets`` (events-topic partition -> next offset)."""

    offsets: dict[int, int]
    orders: tuple[WaitingOrder, ...]


def waiting_from_row(row: Mapping[str, Any]) -> WaitingOrder:
    """Return the waiting order of an ``orders`` row; raise ``ValidationError`` if invalid."""
    spec = spec_from_row(row)
    return WaitingOrder(
        order_id=row["order_id"],
        seq=row["seq"],
        status=row["status"],
        correlation_id=row["correlation_id"],
        spec=spec,
    )


async def read_snapshot(conn: Connection, events_topic: str) -> Snapshot | None:
    """Read the waiting orders and their offsets in one REPEATABLE READ transaction.

    Return None when the orders projection has stored no offsets for ``events_topic``.
    Raise ``psycopg.Error`` when the tables (or the spec columns) are missing, and
    ``ValidationError`` when a row is not a valid order.
    """
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        await cur.execute(_OFFSETS_SQL, (OrdersProjection.name, events_topic))
        offsets = {int(r["partition"]): int(r["next_offset"]) for r in await cur.fetchall()}
        if not offsets:
            return None
        await cur.execute(_WAITING_SQL, (list(WAITING_TYPES), sorted(TERMINAL_STATUSES)))
        rows = await cur.fetchall()
    return Snapshot(offsets, tuple(waiting_from_row(row) for row in rows))
