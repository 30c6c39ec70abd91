"""The orders projection: fold order events into ``orders`` and ``order_events``.

Each order row is an ``OrderState`` folded with ``domain.lifecycle.evolve``,
the same function the engine uses, so the read model and the engine agree; its
columns are derived from the state's fields (``ORDER_COLUMNS``). A batch
is planned by a pure function (``plan``) and then written in the caller's
transaction; redeliveries are no-ops and illegal or undecodable events are
rejected (the runner dead-letters them).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from importlib.resources import files
from typing import Any, get_origin

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, TypeAdapter

from adapters.postgres import Connection
from domain.lifecycle import OrderState, evolve
from events.messages import Event, OrderSpec
from projections import batch
from projections.contract import BatchResult, Decoded, LogRecord

# The orders table is OrderState's fields, with two changes: a nested model's fields
# are columns of their own (the spec's: order_type, token_in, ... are queried), and a
# collection (the quotes) is one jsonb column, stored JSON-ready.
_NESTED: dict[str, type[BaseModel]] = {
    name: info.annotation
    for name, info in OrderState.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
}
_JSON: dict[str, TypeAdapter[Any]] = {
    name: TypeAdapter(annotation)
    for name, info in OrderState.model_fields.items()
    if (annotation := info.annotation) is not None and get_origin(annotation) in (tuple, list, dict)
}
JSON_COLUMNS: tuple[str, ...] = tuple(_JSON)
SPEC_COLUMNS: tuple[str, ...] = tuple(OrderSpec.model_fields)
ORDER_COLUMNS: tuple[str, ...] = tuple(
    column
    for name in OrderState.model_fields
    for column in (_NESTED[name].model_fields if name in _NESTED else (name,))
)
EVENT_COLUMNS: tuple[str, ...] = (
    "message_id",
    "order_id",
    "seq",
    "type",
    "status",
    "occurred_at",
    "payload",
    "topic",
    "partition",
    "offset",
)


def _insert_sql(table: str, columns: Sequence[str]) -> str:
    names = ", ".join(f'"{c}"' for c in columns)
    values = ", ".join(f"%({c})s" for c in columns)
    return f"INSERT INTO {table} ({names}) VALUES ({values})"


_INSERT_EVENT = _insert_sql("order_events", EVENT_COLUMNS) + " ON CONFLICT DO NOTHING"
_UPSERT_ORDER = (
    _insert_sql("orders", ORDER_COLUMNS)
    + " ON CONFLICT (order_id) DO UPDATE SET "
    + ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in ORDER_COLUMNS if c != "order_id")
    # Never move an order backwards, whatever reaches this statement.
    + " WHERE orders.seq < EXCLUDED.seq"
)


# Pure mapping between OrderState and rows ---------------------------------------


def state_to_row(state: OrderState) -> dict[str, Any]:
    """Return the ``orders`` row of a state (quotes as JSON-ready dicts)."""
    row: dict[str, Any] = {}
    for name in OrderState.model_fields:
        value = getattr(state, name)
        if name in _NESTED:
            row.update((column, getattr(value, column)) for column in _NESTED[name].model_fields)
        elif name in _JSON:
            row[name] = _JSON[name].dump_python(value, mode="json")
        else:
            row[name] = value
    return row


def spec_from_row(row: Mapping[str, Any]) -> OrderSpec:
    """Rebuild the ``OrderSpec`` stored in an ``orders`` row's columns."""
    return OrderSpec.model_validate({column: row[column] for column in SPEC_COLUMNS})


def row_to_state(row: Mapping[str, Any]) -> OrderState:
    """Rebuild the ``OrderState`` an ``orders`` row was written from."""
    return OrderState.model_validate(
        {
            name: {c: row[c] for c in _NESTED[name].model_fields} if name in _NESTED else row[name]
            for name in OrderState.model_fields
        }
    )


def event_row(record: LogRecord, event: Event) -> dict[str, Any]:
    """Return the ``order_events`` row of an event (payload as its JSON dict)."""
    return {
        "message_id": event.message_id,
        "order_id": event.order_id,
        "seq": event.seq,
        "type": event.type,
        "status": event.status,
        "occurred_at": event.occurred_at,
        "payload": event.model_dump(mode="json"),
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
    }


# Pure planning of a batch --------------------------------------------------------


def plan(
    decoded: Sequence[Decoded],
    states: Mapping[uuid.UUID, OrderState],
    known_ids: Iterable[uuid.UUID],
) -> batch.Plan[OrderState]:
    """Fold a batch into the stored states, skipping redeliveries and rejecting the illegal.

    ``states`` are the stored states of the batch's orders; ``known_ids`` the
    batch's message ids already in ``order_events``.
    """
    return batch.plan(decoded, states, evolve, known_ids)


# The projection -------------------------------------------------------------------


class OrdersProjection:
    """The ``orders`` and ``order_events`` read models."""

    name = "orders"
    tables = ("order_events", "orders")

    def ddl(self) -> str:
        return files(__package__).joinpath("schema.sql").read_text()

    def drop_ddl(self) -> str:
        return f"DROP TABLE IF EXISTS {', '.join(self.tables)}"

    async def apply(self, conn: Connection, decoded: Sequence[Decoded]) -> BatchResult:
        """Fold the decoded records into the read models inside the caller's transaction."""
        events = [item for _, item in decoded if not isinstance(item, str)]
        order_ids = sorted({e.order_id for e in events})
        message_ids = sorted({e.message_id for e in events})
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                # FOR UPDATE: a concurrent projector (mid-rebalance) waits, then re-reads.
                "SELECT * FROM orders WHERE order_id = ANY(%s) ORDER BY order_id FOR UPDATE",
                (order_ids,),
            )
            states = {row["order_id"]: row_to_state(row) for row in await cur.fetchall()}
            await cur.execute(
                "SELECT message_id FROM order_events WHERE message_id = ANY(%s)", (message_ids,)
            )
            known = [row["message_id"] for row in await cur.fetchall()]
            planned = plan(decoded, states, known)
            if planned.events:
                await cur.executemany(
                    _INSERT_EVENT,
                    [_jsonb(event_row(r, e), ("payload",)) for r, e in planned.events],
                )
            if planned.states:
                await cur.executemany(
                    _UPSERT_ORDER,
                    [
                        _jsonb(state_to_row(planned.states[k]), JSON_COLUMNS)
                        for k in sorted(planned.states)
                    ],
                )
        return planned.result()


def _jsonb(row: dict[str, Any], columns: Iterable[str]) -> dict[str, Any]:
    return {**row, **{c: Jsonb(row[c]) for c in columns}}
