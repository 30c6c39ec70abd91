"""The API key every test client sends: the development key, an admin of the dev account.

``isolated_settings`` (``tests/conftest.py``) sets it as ``OEE_DEV_API_KEY`` of every
system a test starts, so a client built with ``AUTH`` (HTTP) or ``connect`` (a
WebSocket) is that admin.
"""

from __future__ import annotations

import functools

from websockets.asyncio.client import connect as _connect

from adapters.settings import Settings

DEV_KEY = "oee_test-development-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {DEV_KEY}"}

# websockets' ``connect`` with the key in the handshake's Authorization header.
connect = functools.partial(_connect, additional_headers=AUTH)


def venue_auth(settings: Settings) -> dict[str, str]:
    """Return the headers that open the venue simulator's controls (its admin token)."""
    return {"Authorization": f"Bearer {settings.admin_token()}"}
