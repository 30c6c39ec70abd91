"""Entrypoint of the sweeper process (``oee sweeper``)."""

from __future__ import annotations

import logging

from adapters.kafka import await_topics
from adapters.ops import standard
from adapters.processes import run_on_uvloop, stop_on_signals
from adapters.settings import Settings
from services.sweeper.service import SweeperService

log = logging.getLogger(__name__)


async def _main(settings: Settings) -> None:
    # Started while the broker restarts: wait for it (a signal meanwhile ends the
    # process at once).
    await await_topics(settings)
    stop = stop_on_signals()
    log.info(
        "sweeper watching %s and %s (resubmit after %ss, resume after %ss)",
        settings.commands_topic,
        settings.events_topic,
        settings.sweep_submit_after_s,
        settings.sweep_stall_after_s,
    )
    service = SweeperService(settings)
    async with standard(settings, "sweeper", lag=service.lag):
        await service.run(stop)


def run(settings: Settings) -> None:
    """Run the sweeper until SIGTERM or SIGINT."""
    run_on_uvloop(_main(settings))
