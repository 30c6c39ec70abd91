"""The firehose over a WebSocket (``/api/stream``): every order event matching the filters."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from services.gateway.deps import FanoutDep, SettingsDep, TailDep
from services.gateway.firehose import serve_firehose
from services.gateway.sockets import limit_send_buffer

router = APIRouter()


@router.websocket("/api/stream")
async def firehose(
    socket: WebSocket, settings: SettingsDep, tail: TailDep, fanout: FanoutDep
) -> None:
    """Stream every order event matching the filters: live, or from a log position."""
    await socket.accept()
    limit_send_buffer(socket, settings.ws_send_buffer_bytes)
    await serve_firehose(socket, tail, fanout, settings, socket.query_params)
