"""The firehose over a WebSocket (``/api/stream``): every order event matching the filters."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from services.gateway.auth import KEY_QUERY, open_socket
from services.gateway.deps import FanoutDep, GatewayDep, SettingsDep, SocketLimitsDep, TailDep
from services.gateway.firehose import serve_firehose

router = APIRouter()


@router.websocket("/api/stream")
async def firehose(
    socket: WebSocket,
    settings: SettingsDep,
    tail: TailDep,
    fanout: FanoutDep,
    limits: SocketLimitsDep,
    gateway: GatewayDep,
) -> None:
    """Stream every event of the caller's orders (an admin's: of every order) matching
    the filters: live, or from a log position."""
    opened = open_socket(socket, gateway, limits, "firehose", settings.ws_send_buffer_bytes)
    async with opened as caller:
        if caller is None:
            return
        params = {k: v for k, v in socket.query_params.items() if k != KEY_QUERY}
        account = None if caller.admin else caller.account
        await serve_firehose(socket, tail, fanout, settings, params, account)
