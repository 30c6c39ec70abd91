"""The gateway: validates requests, writes commands to the log, streams events back.

It never writes a database: a submission is answered once the broker has
acknowledged the command (acks=all). Reads come from the PostgreSQL read models
merged with what this gateway's log tail saw, so a client reads its own writes
even before the projector has caught up.

This module only wires: the routes live in ``routes/``, one module per concern,
and reach the gateway's parts through the dependencies of ``deps.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import Depends, FastAPI

from adapters.ops import RequestMetrics
from adapters.settings import Settings
from services.gateway import errors, protocols
from services.gateway.adapters import Gateway
from services.gateway.auth import authenticate
from services.gateway.deps import admin
from services.gateway.http_limits import BodyDeadline
from services.gateway.request_id import RequestId
from services.gateway.routes import (
    browse,
    firehose,
    health,
    market,
    order_stream,
    orders,
    simulation,
)
from services.gateway.sockets import ExposeTransport


def create_app(
    settings: Settings, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> FastAPI:
    """Return the gateway's FastAPI application."""
    gateway = Gateway(settings, clock)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(
        title="Order Execution Engine",
        version="0.1.0",
        summary="Submit DEX swap orders and follow them live.",
        description=protocols.DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.add_middleware(ExposeTransport)
    app.add_middleware(RequestMetrics)
    app.add_middleware(RequestId)
    app.add_middleware(BodyDeadline, timeout_s=settings.http_read_timeout_s)
    errors.install(app)
    # Every API call carries a key (``auth.py``); the sockets check theirs once accepted,
    # to answer with a close code, and the list of orders asks for its caller itself.
    # The health check, the page and the docs stay open.
    for module in (browse, health, firehose, order_stream):
        app.include_router(module.router)
    for module in (orders, market):
        app.include_router(module.router, dependencies=[Depends(authenticate)])
    app.include_router(simulation.router, dependencies=[Depends(admin)])
    return app
