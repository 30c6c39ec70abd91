"""Where the trigger service starts: the orders read model and the log position it reflects.

The ``orders`` projection writes its rows and its offsets (``projection_offsets``)
in one transaction per batch, so one REPEATABLE READ transaction that reads both
sees the waiting orders exactly as of those offsets. Tailing the events topic from
there misses nothing and folds nothing twice (and a duplicate would be a no-op).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from pydantic import ValidationError

from adapters.postgres import Connection, connect
from adapters.settings import Settings
from events.messages import TERMINAL_STATUSES, OrderSpec, Status
from projections.orders.handler import OrdersProjection, spec_from_row

log = logging.getLogger(__name__)

WAITING_TYPES = ("limit", "sniper")

_OFFSETS_SQL = """
SELECT partition, next_offset FROM projection_offsets
WHERE projection = %s AND topic = %s
"""

# Every limit or sniper order that is not finished: armed ones go in the book, the
# executing ones hold a slot of the gate, pending ones wait for their arming.
_WAITING_SQL = """
SELECT order_id, seq, status, correlation_id, order_type, token_in, token_out, amount,
       slippage_bps, client_order_id, limit_price, max_price, expires_at
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


async def load_snapshot(settings: Settings, timeout_s: float = 10.0) -> Snapshot | None:
    """Return the snapshot to start from, or None to read the events from the beginning.

    None when PostgreSQL cannot be reached, the read model is missing or incomplete,
    or nothing was projected yet; the reason is logged.
    """
    try:
        conn = await asyncio.wait_for(connect(settings), timeout_s)
    except (psycopg.Error, OSError, TimeoutError) as exc:
        log.warning(
            "no snapshot: PostgreSQL is not reachable (%s); reading events from the start", exc
        )
        return None
    try:
        snapshot = await asyncio.wait_for(read_snapshot(conn, settings.events_topic), timeout_s)
    except (psycopg.Error, TimeoutError) as exc:
        log.warning(
            "no snapshot: cannot read the orders read model (%s); reading events from the start",
            exc,
        )
        return None
    except ValidationError as exc:
        log.warning(
            "no snapshot: an orders row is not a valid order (%s); reading events from the start",
            exc,
        )
        return None
    finally:
        await conn.close()
    if snapshot is None:
        log.info(
            "no snapshot: the orders projection stored no offsets; reading events from the start"
        )
    return snapshot
