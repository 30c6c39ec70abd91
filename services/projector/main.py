"""The projector process (``oee projector``): the event log into PostgreSQL read models.

One ``ProjectionRunner`` per read model, run concurrently, each in a consumer group
of its own: each keeps its own offsets and progress, so a slow or rebuilt read
model never holds the others back.
"""

from __future__ import annotations

import asyncio
import logging

from adapters.kafka import await_topics
from adapters.ops import Health, assigned, standard
from adapters.postgres import await_database
from adapters.processes import stop_on_signals
from adapters.settings import Settings
from projections.contract import Projection, Stats
from projections.orders.handler import OrdersProjection
from projections.registry import PROJECTIONS
from services.projector.runner import ProjectionRunner

log = logging.getLogger(__name__)


def projections() -> tuple[Projection, ...]:
    """Return every read model the projector maintains, the orders one first."""
    return tuple(make() for make in PROJECTIONS.values())


def runner_for(settings: Settings, projection: Projection) -> ProjectionRunner:
    """Return the live runner of ``projection``."""
    if isinstance(projection, OrdersProjection):
        # The group id the orders projection has always used: renaming it would
        # orphan its committed offsets (lag monitoring) in every deployment.
        return ProjectionRunner(settings, projection, group_id=settings.projector_group)
    return ProjectionRunner(
        settings,
        projection,
        group_id=f"{settings.projector_group}.{projection.name}",
        # The orders projection dead-letters what no read model can take; this one
        # applies the same decoding and transition rules, so it would publish
        # copies. Its rejections are still logged.
        publish_dead_letters=False,
    )


async def project_all(
    settings: Settings, stop: asyncio.Event, health: Health | None = None
) -> dict[str, Stats]:
    """Project the events topic into every read model until ``stop`` is set.

    Return each projection's totals by name. If one runner fails the others are
    stopped too and the error propagates: the supervisor restarts the process.
    """
    runners = [runner_for(settings, p) for p in projections()]
    if health is not None:
        for runner in runners:
            health.check(f"group {runner.projection.name}", assigned(runner.assignment))
            health.lag_from(runner.lag)
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(r.run(stop), name=r.projection.name) for r in runners]
    return {r.projection.name: t.result() for r, t in zip(runners, tasks, strict=True)}


async def project(settings: Settings, stop: asyncio.Event) -> Stats:
    """Project into every read model until ``stop`` is set; return the orders totals."""
    return (await project_all(settings, stop))[OrdersProjection.name]


async def _main(settings: Settings) -> None:
    # Started while the broker or the database restarts: wait for them. A signal
    # meanwhile ends the process at once; there is nothing to clean up yet.
    await await_topics(settings)
    await await_database(settings)
    stop = stop_on_signals()
    log.info("projector consuming %s into PostgreSQL", settings.events_topic)
    async with standard(settings, "projector", database=True) as ops:
        totals = await project_all(settings, stop, ops.health)
    for name, stats in totals.items():
        log.info(
            "projection %s stopped: %d applied, %d skipped, %d rejected",
            name,
            stats.applied,
            stats.skipped,
            stats.dead_lettered,
        )


def run(settings: Settings) -> None:
    """Run the projector until SIGTERM or SIGINT."""
    asyncio.run(_main(settings))
