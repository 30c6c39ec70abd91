"""The gateway's parts, built and started together: the one object the routes' dependencies read.

The accounts topic feeds the API keys (``keys``). The log tail feeds three
memories, each with one job: the recent events of each order (``recent``), the
submissions and idempotency keys (``submissions``) and the firehose feeds
(``fanout``). Commands go out through ``commands``; reads come from ``read_side``;
the venues answer quotes and launches; the market topic feeds ``market`` (pools,
recent prices, launches).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from adapters.settings import Settings
from adapters.venues.client import HttpVenue, http_venues
from events.messages import Command, Event, SubmitOrder
from services.gateway.commands import CommandWriter
from services.gateway.fanout import Fanout
from services.gateway.firehose import render
from services.gateway.keys import KeyRing, RateLimits
from services.gateway.market_view import MarketWatch
from services.gateway.read_side import ReadSide, connection_pool
from services.gateway.recent import RecentEvents
from services.gateway.sockets import SocketLimits
from services.gateway.submissions import Submissions, Turns
from services.gateway.tail import Logged, LogTail


class Gateway:
    """Every part of the gateway, and the routing of what its log tail reads to them."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime]) -> None:
        if settings.database_url is None:
            raise RuntimeError("the gateway needs OEE_DATABASE_URL (the read models)")
        self.settings = settings
        self.clock = clock
        self.pool = connection_pool(settings.database_url, settings.database_timeout_s)
        self.recent = RecentEvents(settings.gateway_recent_orders)
        self.submissions = Submissions(
            settings.gateway_idempotency_keys, settings.gateway_recent_orders
        )
        self.read_side = ReadSide(
            self.pool, self.recent, self.submissions, settings.database_timeout_s
        )
        self.tail = LogTail(settings, self)
        self.fanout = Fanout(
            render,
            self.tail.cursor,
            resolve=self.read_side.lookup_facts,
            max_orders=settings.gateway_recent_orders,
        )
        self.commands = CommandWriter(settings)
        self.socket_limits = SocketLimits(
            settings.ws_max_sockets, settings.ws_max_sockets_per_client
        )
        self.venues: list[HttpVenue] = []
        self.keys = KeyRing(settings)
        self.market = MarketWatch(settings)
        self.rate_limits = RateLimits(settings.rate_limit_per_s, settings.rate_limit_burst)
        self.order_secret = settings.order_secret()
        self.turns = Turns(settings.gateway_submissions_at_once, settings.gateway_submission_wait_s)

    async def start(self) -> None:
        await self.pool.open(wait=True, timeout=30)
        self.venues = await http_venues(self.settings)
        await self.commands.start()
        await self.keys.start(await self.commands.partitions(self.settings.accounts_topic))
        await self.market.start(await self.commands.partitions(self.settings.market_topic))
        topics = (self.settings.commands_topic, self.settings.events_topic)
        await self.tail.start({t: await self.commands.partitions(t) for t in topics})

    async def stop(self) -> None:
        await self.tail.stop()
        await self.market.stop()
        await self.keys.stop()
        await self.commands.stop()
        await self.pool.close()
        for venue in self.venues:
            await venue.aclose()

    # What the log tail reads goes to the part whose job it is (``tail.TailListener``).

    async def prepare(self, messages: Sequence[Event | Command]) -> None:
        await self.fanout.prepare(messages)

    def on_command(self, command: Command) -> None:
        if isinstance(command, SubmitOrder):
            self.submissions.record_submission(command)

    def on_event(self, logged: Logged) -> None:
        if self.recent.add(logged):
            self.fanout.publish(logged)
