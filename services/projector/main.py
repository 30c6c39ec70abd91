"""The projector process (``oee projector``): the event log into PostgreSQL read models.

One ``MultiProjectionRunner`` for every read model, in one consumer group: the log is
read and decoded once, and each batch lands in every read model in one transaction.
Each read model keeps its own offsets, so one that is ahead (just rebuilt by
``oee replay``) skips what it already has while the others catch up.
"""

from __future__ import annotations

import asyncio
import logging

from adapters.kafka import await_topics
from adapters.ops import Health, assigned, standard
from adapters.postgres import await_database
from adapters.processes import run_on_uvloop, stop_on_signals
from adapters.settings import Settings
from projections.contract import Projection, Stats
from projections.orders.handler import OrdersProjection
from projections.registry import PROJECTIONS
from services.projector.runner import MultiProjectionRunner

log = logging.getLogger(__name__)


def projections() -> tuple[Projection, ...]:
    """Return every read model the projector maintains, the orders one first."""
    return tuple(make() for make in PROJECTIONS.values())


def live_runner(settings: Settings) -> MultiProjectionRunner:
    """Return the live runner of every read model."""
    # The group id the orders projection has always used: renaming it would orphan
    # its committed offsets (lag monitoring) in every deployment. The orders
    # projection comes first: it publishes the dead letters.
    return MultiProjectionRunner(settings, projections(), group_id=settings.projector_group)


async def project_all(
    settings: Settings, stop: asyncio.Event, health: Health | None = None
) -> dict[str, Stats]:
    """Project the events topic into every read model until ``stop`` is set.

    Return each projection's totals by name. An error propagates: the supervisor
    restarts the process.
    """
    runner = live_runner(settings)
    if health is not None:
        health.check("group", assigned(runner.assignment))
        health.lag_from(runner.lag)
    return await runner.run(stop)


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
    run_on_uvloop(_main(settings))
