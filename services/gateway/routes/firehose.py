"""The firehose over a WebSocket (``/api/stream``): every order event matching the filters."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from services.gateway.auth import KEY_QUERY, authenticate_socket, offered_key
from services.gateway.deps import FanoutDep, GatewayDep, SettingsDep, SocketLimitsDep, TailDep
from services.gateway.firehose import serve_firehose
from services.gateway.sockets import admit, limit_send_buffer

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
    async with admit(socket, limits, "firehose", offered_key(socket)[1]) as admitted:
        if not admitted:
            return
        caller = await authenticate_socket(socket, gateway)
        if caller is None:
            return
        limit_send_buffer(socket, settings.ws_send_buffer_bytes)
        params = {k: v for k, v in socket.query_params.items() if k != KEY_QUERY}
        account = None if caller.admin else caller.account
        await serve_firehose(socket, tail, fanout, settings, params, account)
