"""Entrypoint of the venue service process."""

from __future__ import annotations

import uvicorn

from adapters.settings import Settings, get_settings
from services.venues.service import create_app
from services.venues.simulator import default_venues


def run(settings: Settings) -> None:
    """Serve the simulated venues on ``venues_host:venues_port`` until interrupted."""
    app = create_app(
        default_venues(settings),
        launch_liquidity_usd=settings.launch_liquidity_usd,
        admin_token=settings.admin_token(),
    )
    # No access log: the market service reads every venue's pools several times a second.
    uvicorn.run(
        app,
        host=settings.venues_host,
        port=settings.venues_port,
        log_config=None,
        log_level="info",
        access_log=False,
    )


if __name__ == "__main__":
    run(get_settings())
