"""Entrypoint of the market service process (``oee market``).

The market topic has one writer at a time. Every market service joins the consumer
group ``market_group`` on the market topic, whose member never fetches: the one
assigned partition 0 leads and publishes, the others wait. When the leader dies the
group gives its partitions to another once its session expires, and that one reads
what was published and carries on from there. A leader that loses partition 0 in a
rebalance stops its feed before the rebalance completes, so two live services never
publish at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from adapters.kafka import await_topics, client_options, group_options
from adapters.ops import standard
from adapters.processes import run_on_uvloop, stop_on_signals
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


class Leadership(ConsumerRebalanceListener):
    """Lead while the group assigns partition 0 of the market topic to this service."""

    def __init__(self, member: AIOKafkaConsumer) -> None:
        self._member = member
        self.leading = asyncio.Event()
        # The current term (set to end it) and its feed, while this service leads.
        self._term: asyncio.Event | None = None
        self._feed: asyncio.Task[None] | None = None

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if self.leading.is_set():
            log.info("market leadership given up in a rebalance")
        self.leading.clear()
        await self.end_term()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # The group is for leadership only: its member never fetches.
        if assigned:
            self._member.pause(*assigned)
        if any(tp.partition == 0 for tp in assigned):
            log.info("market leadership taken: this service publishes the market")
            self.leading.set()

    def begin_term(self, feed: asyncio.Task[None], term: asyncio.Event) -> None:
        self._feed, self._term = feed, term

    async def end_term(self) -> None:
        """Stop the feed of the current term, if any, and wait until it has stopped."""
        if self._term is not None:
            self._term.set()
        if self._feed is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed
        self._feed = self._term = None


async def lead(settings: Settings, stop: asyncio.Event, leadership: Leadership) -> None:
    """Publish the market during every term this service leads, until ``stop`` is set."""
    while not stop.is_set():
        waiting = asyncio.ensure_future(leadership.leading.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        stopping.cancel()
        if stop.is_set():
            break
        term = asyncio.Event()
        feed = asyncio.create_task(serve(settings, term), name="market-feed")
        leadership.begin_term(feed, term)
        ended = asyncio.ensure_future(term.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({feed, ended, stopping}, return_when=asyncio.FIRST_COMPLETED)
        ended.cancel()
        stopping.cancel()
        if feed.done() and not term.is_set():
            feed.result()  # the feed failed: the error ends the process, for a restart
        await leadership.end_term()


async def _membership(member: AIOKafkaConsumer, stop: asyncio.Event) -> None:
    """Keep the group member polling (a member that does not is dropped from it)."""
    while not stop.is_set():
        await member.getmany(timeout_ms=1000)


async def _main(settings: Settings) -> None:
    # Started while the broker restarts: wait for it (a signal meanwhile ends the
    # process at once).
    await await_topics(settings)
    stop = stop_on_signals()
    # The venues' pools are read several times a second: do not log every request.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    log.info("market feed from %s to %s", settings.venues_url, settings.market_topic)
    member = AIOKafkaConsumer(
        **client_options(settings),
        group_id=settings.market_group,
        group_instance_id=f"{settings.market_group}-{settings.market_instance}",
        enable_auto_commit=False,
        auto_offset_reset="latest",
        **group_options(settings),
    )
    leadership = Leadership(member)
    ops = standard(settings, "market")

    async def leader() -> tuple[bool, str]:
        leading = leadership.leading.is_set()
        return True, "leads: publishes the market" if leading else "follows: another leads"

    ops.health.check("leader", leader)
    async with ops:
        await member.start()
        try:
            member.subscribe([settings.market_topic], listener=leadership)
            async with asyncio.TaskGroup() as group:
                polling = group.create_task(_membership(member, stop))
                await lead(settings, stop, leadership)
                polling.cancel()
        finally:
            await member.stop()


def run(settings: Settings) -> None:
    """Run the market service until SIGTERM or SIGINT."""
    run_on_uvloop(_main(settings))


if __name__ == "__main__":
    run(get_settings())
