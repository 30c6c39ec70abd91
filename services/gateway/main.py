"""Entry point of the gateway process (``oee gateway``)."""

from __future__ import annotations

import socket

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


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """Return a socket bound to ``host:port`` with SO_REUSEPORT: every gateway process
    that binds one like it serves the same port, the kernel handing each new
    connection to one of them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def run(settings: Settings) -> None:
    """Serve the gateway until stopped."""
    server = uvicorn.Server(server_config(settings, create_app(settings)))
    if settings.gateway_reuse_port:
        # Every gateway tails the whole log itself, so whichever one a connection
        # lands on serves any order's stream and the firehose.
        server.run(sockets=[reuse_port_socket(settings.gateway_host, settings.gateway_port)])
    else:
        server.run()
