"""The trigger service process (``oee triggers``): limit and sniper orders fire from here."""

from __future__ import annotations

import logging

from adapters.kafka import await_topics
from adapters.ops import assigned, standard
from adapters.processes import run_on_uvloop, stop_on_signals
from adapters.settings import Settings
from services.triggers.service import TriggerService

log = logging.getLogger(__name__)


async def _main(settings: Settings) -> None:
    # Started while the broker restarts: wait for it (a signal meanwhile ends the
    # process at once). Without PostgreSQL it reads the events from the start.
    await await_topics(settings)
    stop = stop_on_signals()
    log.info(
        "triggers reading %s and %s, writing %s",
        settings.events_topic,
        settings.market_topic,
        settings.commands_topic,
    )
    service = TriggerService(settings)
    ops = standard(settings, "triggers", lag=service.lag)
    # The partitions whose armed orders this replica fires (its group's assignment).
    ops.health.check("group", assigned(lambda: service.owned))
    async with ops:
        await service.run(stop)


def run(settings: Settings) -> None:
    """Run the trigger service until SIGTERM or SIGINT."""
    run_on_uvloop(_main(settings))
