"""Entry point of the engine process (``oee engine``)."""

from __future__ import annotations

import asyncio
import logging

import faust
import uvloop

from adapters.kafka import await_topics
from adapters.settings import Settings
from adapters.venues.client import http_venues
from services.engine.app import build_app


def run(settings: Settings) -> None:
    """Run the engine's faust worker until stopped."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s engine %(levelname)s %(message)s")
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(await_topics(settings))
    venues = {venue.name: venue for venue in loop.run_until_complete(http_venues(settings))}
    app = build_app(settings, venues)
    worker = faust.Worker(app, loop=loop, loglevel="WARN", quiet=True)
    worker.execute_from_commandline()
