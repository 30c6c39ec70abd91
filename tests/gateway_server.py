"""Serve the gateway inside the test's own event loop, configured as ``oee gateway`` runs it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from adapters.settings import Settings
from services.gateway.app import create_app
from services.gateway.main import server_config


@asynccontextmanager
async def serving(
    settings: Settings, *, lifespan: bool = True, app: FastAPI | None = None
) -> AsyncIterator[str]:
    """Serve a gateway (``app``, or a new one) on ``settings.gateway_port``; yield its URL.

    Without ``lifespan`` its parts are never started: no broker or database is
    needed, which is enough for what is decided before a route touches them, and
    a test may feed its parts (``app.state.gateway``) events of its own.
    """
    config = server_config(settings, app or create_app(settings))
    if not lifespan:
        config.lifespan = "off"
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # start-up failed: raise why
                raise RuntimeError("the gateway exited during start-up")
            await asyncio.sleep(0.02)
        yield f"http://{settings.gateway_host}:{settings.gateway_port}"
    finally:
        server.should_exit = True
        await task
