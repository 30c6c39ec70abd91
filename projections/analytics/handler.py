"""The analytics projection: fold order events into one fact row per order.

Each row (``AnalyticsFacts``) keeps what the execution figures need: the order's pair,
what it sold, the venue of its latest routing and that routing's price improvement,
when the confirming attempt was submitted and confirmed, and the final failure
code. ``projections.analytics.queries`` aggregates the rows per venue and per pair
at query time, so a row never depends on another order and every value derives
from the events alone (no clock): a replay rebuilds identical rows.

The fold (``fold_facts``) is the lifecycle's checked fold
(``domain.lifecycle.fold_event``, as ``evolve`` is), so this read model and the orders
one agree on which events count. A redelivered or stale event (its seq at or below
the row's) is a no-op; an illegal or undecodable one is rejected.

Definitions, per group (a venue or a pair):

* pair: the two symbols sorted alphabetically and joined by "/" ("SOL/USDC" for
  both directions);
* a venue's orders are those routed at least once, attributed to the venue of
  their latest ``OrderRouted``; an order that failed before any routing
  (``NO_ROUTE``) counts in its pair's figures and in no venue's;
* orders routed: orders with at least one ``OrderRouted``;
* fill rate: confirmed / (confirmed + failed) over the group's finished orders,
  null when none finished; in-flight orders count in neither, and neither do
  cancelled or expired ones (a limit or sniper order whose condition never held
  was not an execution that failed);
* cancelled, expired: the group's orders that ended so (only limit and sniper
  orders do); such an order counts in a venue's figures only if it was routed
  before being armed again;
* volume in: the sum of ``amount`` (in ``token_in`` units) of confirmed orders,
  per ``token_in`` symbol;
* confirm latency: ``OrderConfirmed.occurred_at`` minus the ``occurred_at`` of the
  first ``TransactionSubmitted`` of the attempt that confirmed, in ms, with its
  mean and its 50th/99th percentiles (linear interpolation) over confirmed orders;
* price improvement: the mean ``improvement_bps`` of the latest ``OrderRouted`` of
  the group's routed orders, over those where it is not null (a single usable
  quote has nothing to improve on);
* failure reasons: the count of final ``OrderFailed`` codes; a ``SwapAttemptFailed``
  that was retried is not a failure of the order.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from decimal import Decimal
from importlib.resources import files
from typing import Any

from psycopg.rows import dict_row

from adapters.postgres import Connection
from domain.lifecycle import fold_event
from events.messages import (
    Event,
    OrderAccepted,
    OrderConfirmed,
    OrderFailed,
    OrderRouted,
    Status,
    TransactionSubmitted,
)
from projections import batch
from projections.contract import BatchResult, Decoded


def pair_of(token_a: str, token_b: str) -> str:
    """Return the pair two tokens trade in, the same for both directions."""
    return "/".join(sorted((token_a, token_b)))


@dataclass(frozen=True)
class AnalyticsFacts:
    """One order as the analytics need it: a row of ``analytics_orders``."""

    order_id: uuid.UUID
    seq: int
    status: Status
    pair: str
    token_in: str
    amount_in: Decimal
    venue: str | None = None
    improvement_bps: Decimal | None = None
    submitted_attempt: int | None = None
    submitted_at: datetime | None = None
    confirmed_at: datetime | None = None
    amount_out: Decimal | None = None
    failure_code: str | None = None

    @property
    def routed(self) -> bool:
        return self.venue is not None


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(AnalyticsFacts))
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM analytics_orders"
_UPSERT = (
    f"INSERT INTO analytics_orders ({', '.join(COLUMNS)})"
    f" VALUES ({', '.join(f'%({c})s' for c in COLUMNS)})"
    " ON CONFLICT (order_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c != "order_id")
    # Never move an order backwards, whatever reaches this statement.
    + " WHERE analytics_orders.seq < EXCLUDED.seq"
)


# The pure fold ---------------------------------------------------------------------


def fold_facts(facts: AnalyticsFacts | None, event: Event) -> AnalyticsFacts:
    """Fold one event into an order's facts, or raise ``IllegalTransition`` as ``evolve`` does."""
    return fold_event(facts, event, _accepted, _changed)


def _accepted(event: OrderAccepted) -> AnalyticsFacts:
    return AnalyticsFacts(
        order_id=event.order_id,
        seq=event.seq,
        status=event.status,
        pair=pair_of(event.spec.token_in, event.spec.token_out),
        token_in=event.spec.token_in,
        amount_in=event.spec.amount,
    )


def _changed(facts: AnalyticsFacts, event: Event) -> AnalyticsFacts:
    facts = replace(facts, seq=event.seq, status=event.status)
    match event:
        case OrderRouted():
            # Each routing replaces the last: the order is attributed to where it went.
            return replace(facts, venue=event.venue, improvement_bps=event.improvement_bps)
        case TransactionSubmitted() if event.attempt != facts.submitted_attempt:
            return replace(facts, submitted_attempt=event.attempt, submitted_at=event.occurred_at)
        case OrderConfirmed():
            return replace(
                facts,
                venue=event.venue,
                confirmed_at=event.occurred_at,
                amount_out=event.amount_out,
            )
        case OrderFailed():
            return replace(facts, failure_code=event.code)
    # Any other event changes only the status and seq here. A re-armed order keeps its
    # latest routing's venue: it was routed there, whatever comes next. The same attempt
    # submitted again (after a failed confirmation the engine found that the swap had
    # reached the venue) keeps the time of its first submission, when it was sent.
    return facts


def plan(
    decoded: Sequence[Decoded], stored: Mapping[uuid.UUID, AnalyticsFacts]
) -> batch.Plan[AnalyticsFacts]:
    """Fold a batch into the stored facts, skipping redeliveries and rejecting the illegal."""
    return batch.plan(decoded, stored, fold_facts)


def facts_to_row(facts: AnalyticsFacts) -> dict[str, Any]:
    """Return the ``analytics_orders`` row of an order's facts."""
    return {c: getattr(facts, c) for c in COLUMNS}


def row_to_facts(row: Mapping[str, Any]) -> AnalyticsFacts:
    """Rebuild the facts an ``analytics_orders`` row was written from."""
    return AnalyticsFacts(**{c: row[c] for c in COLUMNS})


# The projection -------------------------------------------------------------------


class AnalyticsProjection:
    """The ``analytics_orders`` read model."""

    name = "analytics"
    tables = ("analytics_orders",)

    def ddl(self) -> str:
        return files(__package__).joinpath("schema.sql").read_text()

    def drop_ddl(self) -> str:
        return f"DROP TABLE IF EXISTS {', '.join(self.tables)}"

    async def apply(self, conn: Connection, decoded: Sequence[Decoded]) -> BatchResult:
        """Fold the decoded records into the read model inside the caller's transaction."""
        order_ids = sorted({item.order_id for _, item in decoded if not isinstance(item, str)})
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                # FOR UPDATE: a concurrent projector (mid-rebalance) waits, then re-reads.
                f"{_SELECT} WHERE order_id = ANY(%s) ORDER BY order_id FOR UPDATE",
                (order_ids,),
            )
            stored = {row["order_id"]: row_to_facts(row) for row in await cur.fetchall()}
            planned = plan(decoded, stored)
            if planned.states:
                await cur.executemany(
                    _UPSERT, [facts_to_row(planned.states[k]) for k in sorted(planned.states)]
                )
        return planned.result()
