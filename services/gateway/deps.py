"""FastAPI dependencies: what a route may ask for, each read from the app's ``Gateway``.

A route names what it needs (``ReadSideDep``, ``CommandsDep``, ...) and nothing
more, so it can be read alone and tested with ``app.dependency_overrides`` or by
calling it with its parts. They work for HTTP routes and WebSockets alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection

from adapters.settings import Settings
from adapters.venues.client import HttpVenue
from domain.accounts import Caller
from services.gateway.adapters import Gateway
from services.gateway.auth import authenticate, require_admin
from services.gateway.commands import CommandWriter
from services.gateway.fanout import Fanout
from services.gateway.market_view import MarketWatch
from services.gateway.read_side import ReadSide
from services.gateway.recent import RecentEvents
from services.gateway.sockets import SocketLimits
from services.gateway.submissions import Submissions
from services.gateway.tail import LogTail

Clock = Callable[[], datetime]


# Coroutines, not plain functions: FastAPI runs a plain function in a worker thread,
# a hop per dependency and request that waits for the GIL while the loop is busy.


async def gateway(connection: HTTPConnection) -> Gateway:
    """Return the gateway that serves this request."""
    found: Gateway = connection.app.state.gateway
    return found


GatewayDep = Annotated[Gateway, Depends(gateway)]


def _part(name: str) -> Callable[[Gateway], Awaitable[Any]]:
    """Return the dependency that lends the gateway's part ``name``."""

    async def part(parts: GatewayDep) -> Any:
        return getattr(parts, name)

    part.__name__ = name  # a name of its own in tracebacks and OpenAPI
    return part


# One function per part, so that a test overrides exactly the part it replaces.
settings = _part("settings")
clock = _part("clock")
read_side = _part("read_side")
commands = _part("commands")
tail = _part("tail")
recent = _part("recent")
submissions = _part("submissions")
fanout = _part("fanout")
venues = _part("venues")
market = _part("market")
socket_limits = _part("socket_limits")


async def admin(caller: Annotated[Caller, Depends(authenticate)]) -> Caller:
    """Return the caller if its key has the admin role, or raise 403."""
    return require_admin(caller)


SettingsDep = Annotated[Settings, Depends(settings)]
ClockDep = Annotated[Clock, Depends(clock)]
ReadSideDep = Annotated[ReadSide, Depends(read_side)]
CommandsDep = Annotated[CommandWriter, Depends(commands)]
TailDep = Annotated[LogTail, Depends(tail)]
RecentDep = Annotated[RecentEvents, Depends(recent)]
SubmissionsDep = Annotated[Submissions, Depends(submissions)]
FanoutDep = Annotated[Fanout, Depends(fanout)]
VenuesDep = Annotated[list[HttpVenue], Depends(venues)]
MarketDep = Annotated[MarketWatch, Depends(market)]
SocketLimitsDep = Annotated[SocketLimits, Depends(socket_limits)]
# Who the request acts for (401 without a known key, 429 over its rate), and an admin (403).
CallerDep = Annotated[Caller, Depends(authenticate)]
AdminDep = Annotated[Caller, Depends(admin)]
