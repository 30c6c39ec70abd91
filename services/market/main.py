"""Entrypoint of the market service process (``oee market``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from adapters.kafka import await_topics
from adapters.ops import standard
from adapters.processes import stop_on_signals
from adapters.settings import Settings, get_settings
from adapters.venues.client import http_venues
from services.market.feed import MarketFeed
from services.market.log import MarketPublisher, read_market

log = logging.getLogger(__name__)

# Scheduled launches list their token on this venue.
LAUNCH_VENUE = "raydium"


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Publish the venues' pools to the market topic until ``stop`` is set."""

    async def sleep(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    published = await read_market(settings)
    log.info("market topic %s holds %d pools", settings.market_topic, len(published))
    venues = await http_venues(settings)
    publisher = MarketPublisher(settings)
    await publisher.start()
    try:
        feed = MarketFeed(
            venues,
            publisher,
            seed=settings.venue_seed,
            published=published,
            drift_bps=settings.market_drift_bps,
            drift_every_s=settings.market_drift_every_s,
            launch_every_s=settings.market_launch_every_s,
            launch_venue=LAUNCH_VENUE,
            sleep=sleep,
        )
        await feed.run(stop, settings.market_poll_s)
    finally:
        await publisher.stop()
        # The venues share one HTTP client: closing one closes it.
        if venues:
            await venues[0].aclose()


async def _main(settings: Settings) -> None:
    # Started while the broker restarts: wait for it (a signal meanwhile ends the
    # process at once).
    await await_topics(settings)
    stop = stop_on_signals()
    # The venues' pools are read several times a second: do not log every request.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    log.info("market feed from %s to %s", settings.venues_url, settings.market_topic)
    async with standard(settings, "market"):
        await serve(settings, stop)


def run(settings: Settings) -> None:
    """Run the market service until SIGTERM or SIGINT."""
    asyncio.run(_main(settings))


if __name__ == "__main__":
    run(get_settings())
