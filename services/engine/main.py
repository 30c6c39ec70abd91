"""Entry point of the engine process (``oee engine``)."""

from __future__ import annotations

import asyncio
import logging
import os

import faust

from adapters.kafka import await_topics
from adapters.processes import new_event_loop
from adapters.settings import Settings
from adapters.venues.client import http_venues
from services.engine.app import build_app


def _quiet_service_chatter(record: logging.LogRecord) -> bool:
    """Drop faust's INFO lines about its services ("[^--Consumer]: Starting...")."""
    return record.levelno > logging.INFO or not str(record.msg).startswith("[^")


def run(settings: Settings) -> None:
    """Run the engine's faust worker until stopped."""
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(await_topics(settings))
    venues = {venue.name: venue for venue in loop.run_until_complete(http_venues(settings))}
    app = build_app(settings, venues)
    # faust configures logging when its worker starts: keep ours (JSON lines with the
    # order bound, README "Logs") as the root's only handlers, and send the worker's
    # banner and spinner, which are not log lines, nowhere.
    root = logging.getLogger()
    app.conf.loghandlers = list(root.handlers)
    for name in ("faust", "mode"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Our faust subclasses log their services' start and stop under our module names.
    logging.getLogger("services.engine.intake").addFilter(_quiet_service_chatter)
    worker = faust.Worker(
        app,
        loop=loop,
        loglevel=logging.getLevelName(root.level),
        quiet=True,
        logging_config={
            "version": 1,
            "disable_existing_loggers": False,
            "root": {"level": root.level, "handlers": []},
        },
        stdout=open(os.devnull, "w"),  # noqa: SIM115 - for the process's lifetime
    )
    worker.execute_from_commandline()
