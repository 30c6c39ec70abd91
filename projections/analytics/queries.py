"""Read-only queries on the analytics read model: execution figures per venue and per pair.

The figures are aggregated from ``analytics_orders`` in one statement (one snapshot,
so the groups agree with each other); the definitions are in
``projections.analytics.handler``. ``figures`` answers one ``GroupFigures`` per venue
and per pair; ``analytics`` renders them as the API answers, JSON-ready and camelCase:
counts are ints, every other number a decimal string (latency in ms to 0.1, basis
points to 0.01, fill rate to 0.0001, rounded half away from zero) or null when
the group has nothing to measure it on.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from psycopg.rows import class_row

from adapters.postgres import Connection

# Each order once in its pair's group and, once routed, once in its venue's.
_ANALYTICS_SQL = """
WITH facts AS (
    SELECT 'venue' AS kind, venue AS name, o.*, o.confirmed_at - o.submitted_at AS latency
    FROM analytics_orders o
    WHERE o.venue IS NOT NULL
    UNION ALL
    SELECT 'pair', pair, o.*, o.confirmed_at - o.submitted_at
    FROM analytics_orders o
),
figures AS (
    SELECT
        kind,
        name,
        count(*) FILTER (WHERE routed) AS orders_routed,
        count(*) FILTER (WHERE status = 'confirmed') AS confirmed,
        count(*) FILTER (WHERE status = 'failed') AS failed,
        count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
        count(*) FILTER (WHERE status = 'expired') AS expired,
        avg(latency) FILTER (WHERE status = 'confirmed') AS latency_avg,
        percentile_cont(0.5) WITHIN GROUP (ORDER BY latency)
            FILTER (WHERE status = 'confirmed') AS latency_p50,
        percentile_cont(0.99) WITHIN GROUP (ORDER BY latency)
            FILTER (WHERE status = 'confirmed') AS latency_p99,
        avg(improvement_bps) FILTER (WHERE routed) AS improvement_avg
    FROM facts
    GROUP BY kind, name
),
volumes AS (
    SELECT kind, name, jsonb_object_agg(token_in, volume::text) AS volume_in
    FROM (
        SELECT kind, name, token_in, sum(amount_in) AS volume
        FROM facts
        WHERE status = 'confirmed'
        GROUP BY kind, name, token_in
    ) per_token
    GROUP BY kind, name
),
failures AS (
    SELECT kind, name, jsonb_object_agg(failure_code, orders) AS failure_reasons
    FROM (
        SELECT kind, name, failure_code, count(*) AS orders
        FROM facts
        WHERE status = 'failed'
        GROUP BY kind, name, failure_code
    ) per_code
    GROUP BY kind, name
)
SELECT
    kind,
    name,
    orders_routed,
    confirmed,
    failed,
    cancelled,
    expired,
    round(confirmed::numeric / nullif(confirmed + failed, 0), 4) AS fill_rate,
    coalesce(volume_in, '{}') AS volume_in,
    round((extract(epoch FROM latency_avg) * 1000)::numeric, 1) AS latency_avg_ms,
    round((extract(epoch FROM latency_p50) * 1000)::numeric, 1) AS latency_p50_ms,
    round((extract(epoch FROM latency_p99) * 1000)::numeric, 1) AS latency_p99_ms,
    round(improvement_avg, 2) AS improvement_avg_bps,
    coalesce(failure_reasons, '{}') AS failure_reasons
FROM figures
LEFT JOIN volumes USING (kind, name)
LEFT JOIN failures USING (kind, name)
ORDER BY kind, name COLLATE "C"
"""


@dataclass(frozen=True, slots=True)
class GroupFigures:
    """The figures of one venue or one pair, as the statement answers them."""

    kind: Literal["venue", "pair"]
    name: str
    orders_routed: int
    confirmed: int
    failed: int
    cancelled: int
    expired: int
    fill_rate: Decimal | None
    volume_in: dict[str, str]
    latency_avg_ms: Decimal | None
    latency_p50_ms: Decimal | None
    latency_p99_ms: Decimal | None
    improvement_avg_bps: Decimal | None
    failure_reasons: dict[str, int]


async def figures(conn: Connection) -> list[GroupFigures]:
    """Return the figures of every pair and every venue, by ``kind`` and then by name."""
    async with conn.cursor(row_factory=class_row(GroupFigures)) as cur:
        await cur.execute(_ANALYTICS_SQL)
        return await cur.fetchall()


def _text(value: Decimal | None) -> str | None:
    # Fixed-point: str(Decimal) would write a small volume as "1E-7".
    return None if value is None else f"{value:f}"


def _group(figures: GroupFigures) -> dict[str, Any]:
    return {
        "ordersRouted": figures.orders_routed,
        "confirmed": figures.confirmed,
        "failed": figures.failed,
        "cancelled": figures.cancelled,
        "expired": figures.expired,
        "fillRate": _text(figures.fill_rate),
        "volumeIn": dict(sorted(figures.volume_in.items())),
        "confirmLatencyMs": {
            "avg": _text(figures.latency_avg_ms),
            "p50": _text(figures.latency_p50_ms),
            "p99": _text(figures.latency_p99_ms),
        },
        "priceImprovementBps": {"avg": _text(figures.improvement_avg_bps)},
        "failureReasons": dict(sorted(figures.failure_reasons.items())),
    }


async def analytics(conn: Connection) -> dict[str, Any]:
    """Return the execution figures of every venue and every pair as the API answers them."""
    groups = await figures(conn)
    return {
        "venues": [{"venue": g.name, **_group(g)} for g in groups if g.kind == "venue"],
        "pairs": [{"pair": g.name, **_group(g)} for g in groups if g.kind == "pair"],
    }
