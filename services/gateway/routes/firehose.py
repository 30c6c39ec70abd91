"""The firehose over a WebSocket (``/api/stream``): every order event matching the filters."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from services.gateway.deps import FanoutDep, SettingsDep, SocketLimitsDep, TailDep
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
) -> None:
    """Stream every order event matching the filters: live, or from a log position."""
    async with admit(socket, limits, "firehose") as admitted:
        if not admitted:
            return
        limit_send_buffer(socket, settings.ws_send_buffer_bytes)
        await serve_firehose(socket, tail, fanout, settings, socket.query_params)
