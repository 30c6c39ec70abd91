"""The analytics as a plain-text table (``oee analytics``): one row per venue, then per pair."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from adapters.postgres import connect
from adapters.settings import Settings
from projections.analytics.handler import AnalyticsProjection
from projections.analytics.queries import analytics
from projections.contract import ensure_schema

HEADER = (
    "",
    "routed",
    "confirmed",
    "failed",
    "fill rate",
    "volume in",
    "avg ms",
    "p50 ms",
    "p99 ms",
    "improvement bps",
    "failures",
)
# Counts and figures line up on the right, names and lists on the left.
_RIGHT = frozenset({1, 2, 3, 4, 6, 7, 8, 9})
_NONE = "-"


def _cell(value: str | None) -> str:
    return _NONE if value is None else value


def _listing(items: Mapping[str, Any], unit_first: bool) -> str:
    if not items:
        return _NONE
    if unit_first:
        return ", ".join(f"{key} {value}" for key, value in items.items())
    return ", ".join(f"{value} {key}" for key, value in items.items())


def _line(label: str, group: Mapping[str, Any]) -> tuple[str, ...]:
    latency = group["confirmLatencyMs"]
    return (
        label,
        str(group["ordersRouted"]),
        str(group["confirmed"]),
        str(group["failed"]),
        _cell(group["fillRate"]),
        _listing(group["volumeIn"], unit_first=False),
        _cell(latency["avg"]),
        _cell(latency["p50"]),
        _cell(latency["p99"]),
        _cell(group["priceImprovementBps"]["avg"]),
        _listing(group["failureReasons"], unit_first=True),
    )


def _render(lines: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    rendered = []
    for line in lines:
        cells = [
            cell.rjust(width) if i in _RIGHT else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        rendered.append("  ".join(cells).rstrip())
    return "\n".join(rendered)


def format_table(report: Mapping[str, Any]) -> str:
    """Return the report of ``queries.analytics`` as a table, venues first, then pairs."""
    lines: list[tuple[str, ...]] = [HEADER]
    lines += [_line(f"venue {v['venue']}", v) for v in report["venues"]]
    lines += [_line(f"pair {p['pair']}", p) for p in report["pairs"]]
    if len(lines) == 1:
        return "no orders yet"
    return _render(lines)


async def _load(settings: Settings) -> dict[str, Any]:
    conn = await connect(settings)
    try:
        await ensure_schema(conn, AnalyticsProjection())
        return await analytics(conn)
    finally:
        await conn.close()


def main(settings: Settings) -> int:
    """Print the analytics table; answer 1 when PostgreSQL cannot be reached."""
    try:
        report = asyncio.run(_load(settings))
    except psycopg.OperationalError as exc:
        print(f"oee analytics: cannot reach PostgreSQL: {exc}", file=sys.stderr)
        return 1
    print(format_table(report))
    return 0
