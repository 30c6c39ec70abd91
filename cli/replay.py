"""``oee replay``: rebuild a read model (or check it) and print what happened.

While it projects, a progress line on stderr counts the events (as ``oee bench``
shows its own, with ``cli.progress``)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Mapping

from adapters.settings import Settings
from cli.progress import CountProgress
from projections.contract import Projection, Stats
from projections.registry import PROJECTIONS
from services.projector.replay import (
    CheckReport,
    ReplayError,
    ReplayRunningError,
    check,
    replay,
)


def main(
    settings: Settings,
    projection_name: str = "orders",
    check_only: bool = False,
    projections: Mapping[str, Callable[[], Projection]] | None = None,
) -> int:
    """Replay (or with ``check_only`` check) a projection by name, print what happened,
    and return the exit code: 0 done, 1 differences found, 2 not possible."""
    known = PROJECTIONS if projections is None else projections
    make = known.get(projection_name)
    if make is None:
        print(
            f"unknown projection {projection_name!r}; known: {', '.join(sorted(known))}",
            file=sys.stderr,
        )
        return 2
    try:
        return asyncio.run(_check_main(settings, make()) if check_only else _main(settings, make()))
    except (ReplayRunningError, ReplayError) as exc:
        print(f"replay {projection_name}: {exc}", file=sys.stderr)
        return 2


async def _main(settings: Settings, projection: Projection) -> int:
    progress = CountProgress("replay", "events")
    try:
        report = await replay(settings, projection, progress=progress)
    finally:
        progress.end()
    print(
        f"replayed {settings.events_topic} into {report.projection}: "
        f"{_summary(report.stats, report.seconds)}; swapped in, live projector "
        f"{_paused(report.live_projector, report.paused_seconds)}"
    )
    return 0


async def _check_main(settings: Settings, projection: Projection) -> int:
    progress = CountProgress("check", "events")
    try:
        report = await check(settings, projection, progress=progress)
    finally:
        progress.end()
    print(
        f"checked {report.projection} against a rebuild from {settings.events_topic}: "
        f"{_summary(report.stats, report.seconds)}; live projector "
        f"{_paused(report.live_projector, report.paused_seconds)}"
    )
    for line in describe_differences(report):
        print(line)
    return 1 if report.differences else 0


def describe_differences(report: CheckReport) -> list[str]:
    """Return one line per differing table, or a single "no differences" line."""
    if not report.differences:
        return ["no differences"]
    lines = []
    for diff in report.differences:
        parts = [
            f"{diff.table}: {diff.only_live} row(s) only in live, "
            f"{diff.only_rebuilt} only in the rebuild"
        ]
        if diff.problem:
            parts.append(diff.problem)
        if diff.sample_keys:
            parts.append("e.g. " + "; ".join(diff.sample_keys))
        lines.append(", ".join(parts))
    return lines


def _summary(stats: Stats, seconds: float) -> str:
    return (
        f"{stats.applied} applied, {stats.skipped} duplicates skipped, "
        f"{stats.dead_lettered} rejected, {stats.batches} batches in {seconds:.2f}s"
    )


def _paused(live_projector: bool, seconds: float) -> str:
    return f"paused {seconds:.2f}s" if live_projector else "not running"
