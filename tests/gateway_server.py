"""Serve the gateway inside the test's own event loop, configured as ``oee gateway`` runs it."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from adapters.settings import Settings
from services.gateway.app import create_app
from services.gateway.main import server_config
from tests.auth import DEV_KEY


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


def open_websocket(host: str, port: int, path: str, rcvbuf: int | None = None) -> socket.socket:
    """Open a WebSocket by hand and return its socket, the handshake read and nothing more.

    No library reads it, so a test decides whether anything is ever read (a stalled
    client), and a load generator holds many for little CPU. ``rcvbuf`` bounds what
    the kernel takes in for the client.
    """
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Authorization: Bearer {DEV_KEY}\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise ConnectionError(f"no WebSocket: {head.decode(errors='replace')}")
    return sock
