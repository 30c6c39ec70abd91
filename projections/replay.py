"""Rebuild the read models from the start of the log (``oee replay``).

Drops and recreates the projection's tables, forgets its stored offsets, then
projects every partition from offset zero up to the end offsets taken at start.
Live projectors must be stopped: a replay takes the projection's advisory lock
exclusively and refuses to start while a projector holds it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from projections.orders.handler import OrdersProjection
from projections.tracking import (
    Projection,
    ProjectionRunner,
    Stats,
    connect,
    lock_key,
    reset,
)
from services.common.settings import Settings


class ProjectorRunningError(RuntimeError):
    """A live projector holds the projection; a replay would race with it."""


@dataclass(frozen=True)
class ReplayReport:
    """What a replay did and how long it took."""

    projection: str
    stats: Stats
    seconds: float


async def replay(
    settings: Settings,
    projection: Projection | None = None,
    *,
    publish_dead_letters: bool = False,
) -> ReplayReport:
    """Rebuild ``projection`` (the orders read model by default) from offset zero.

    Dead letters were published when the live projector first met them, so a
    replay only counts them unless ``publish_dead_letters`` is set.
    """
    projection = projection or OrdersProjection()
    started = time.perf_counter()
    guard = await connect(settings)
    try:
        cur = await guard.execute(
            "SELECT pg_try_advisory_lock(hashtext(%s))", (lock_key(projection),)
        )
        row = await cur.fetchone()
        if row is None or not row[0]:
            raise ProjectorRunningError(
                f"a projector is running on {projection.name!r}; stop it before replaying"
            )
        await reset(guard, projection)
        runner = ProjectionRunner(
            settings,
            projection,
            group_id=None,
            hold_shared_lock=False,  # the guard connection holds the exclusive lock
            publish_dead_letters=publish_dead_letters,
        )
        stats = await runner.catch_up()
    finally:
        await guard.close()  # releases the advisory lock
    return ReplayReport(projection.name, stats, time.perf_counter() - started)


def main(settings: Settings) -> None:
    """Rebuild the orders read model and print what was done."""
    report = asyncio.run(replay(settings))
    stats = report.stats
    print(
        f"replayed {settings.events_topic} into {report.projection}: "
        f"{stats.applied} applied, {stats.skipped} duplicates skipped, "
        f"{stats.dead_lettered} rejected, {stats.batches} batches "
        f"in {report.seconds:.2f}s"
    )
