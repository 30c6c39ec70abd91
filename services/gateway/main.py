"""Entry point of the gateway process (``oee gateway``)."""

from __future__ import annotations

import uvicorn

from adapters.settings import Settings
from services.gateway.app import create_app


def run(settings: Settings) -> None:
    """Serve the gateway until stopped."""
    uvicorn.run(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level="warning",
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
    )
