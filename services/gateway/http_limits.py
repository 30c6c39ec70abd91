"""Deadlines on what a client sends: a request's headers, and its body.

uvicorn waits for ever for a request that is never finished, so a client sending a
header line now and then (slowloris) holds a connection, and its memory, as long
as it likes. Here the headers must arrive within the read timeout of the
connection's first byte (or of the previous response), and the body within the
read timeout of the headers; a request that misses either is cut off.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import HTTPException
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def header_deadline_protocol(timeout_s: float) -> type[HttpToolsProtocol]:
    """Return uvicorn's HTTP protocol with a deadline on each request's headers."""

    class HeaderDeadline(HttpToolsProtocol):
        """Closes a connection whose request headers do not arrive in time."""

        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadline


class BodyDeadline:
    """ASGI middleware: a request body that does not arrive in time answers 408 and closes.

    The deadline covers reading the body only; once it is whole, waiting for the
    client to disconnect is not bounded here.
    """

    def __init__(self, app: Any, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        whole = False

        async def receive_in_time() -> Any:
            nonlocal whole
            if whole:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                # An HTTPException passes through FastAPI's body parsing unchanged.
                raise HTTPException(
                    408, "the request body did not arrive in time", {"Connection": "close"}
                ) from None
            whole = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, receive_in_time, send)
