"""The projector process (``oee projector``): the event log into PostgreSQL read models."""

from __future__ import annotations

import asyncio
import logging
import signal

from projections.orders.handler import OrdersProjection
from projections.tracking import ProjectionRunner, Stats
from services.common.settings import Settings

log = logging.getLogger(__name__)


async def project(settings: Settings, stop: asyncio.Event) -> Stats:
    """Create the schema if missing, then project the events topic until ``stop`` is set."""
    runner = ProjectionRunner(settings, OrdersProjection(), group_id=settings.projector_group)
    return await runner.run(stop)


async def _main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("projector consuming %s into PostgreSQL", settings.events_topic)
    stats = await project(settings, stop)
    log.info(
        "projector stopped: %d applied, %d skipped, %d dead-lettered",
        stats.applied,
        stats.skipped,
        stats.dead_lettered,
    )


def run(settings: Settings) -> None:
    """Run the projector until SIGTERM or SIGINT."""
    asyncio.run(_main(settings))
