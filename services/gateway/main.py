"""Entry point of the gateway process (``oee gateway``)."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from adapters.settings import Settings
from services.gateway.app import create_app
from services.gateway.http_limits import header_deadline_protocol


def server_config(settings: Settings, app: FastAPI) -> uvicorn.Config:
    """Return how uvicorn serves the gateway: its address, heartbeats and deadlines."""
    return uvicorn.Config(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        # Our logging (JSON lines, README "Logs"), not uvicorn's own handlers; one
        # access line per request.
        log_config=None,
        log_level="info",
        access_log=settings.access_log,
        http=header_deadline_protocol(settings.http_read_timeout_s),
        timeout_keep_alive=settings.http_keep_alive_s,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        ws_per_message_deflate=settings.ws_compression,
    )


def run(settings: Settings) -> None:
    """Serve the gateway until stopped."""
    uvicorn.Server(server_config(settings, create_app(settings))).run()
