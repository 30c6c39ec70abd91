"""One order's events over a WebSocket (``/api/orders/execute?orderId=…&lastSeq=…``).

The socket subscribes to the log tail **before** it reads history, then sends
events strictly by ``seq``: whatever arrives twice is dropped, and a gap is
filled from the read models. It closes with 1000 after the terminal event.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Query, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from adapters.settings import Settings
from events.messages import TERMINAL_STATUSES, Event
from services.gateway.deps import ReadSideDep, RecentDep, SettingsDep, SocketLimitsDep, TailDep
from services.gateway.errors import DatabaseUnavailable
from services.gateway.read_side import ReadSide, fold_onto
from services.gateway.recent import RecentEvents
from services.gateway.schemas import event_view
from services.gateway.sockets import (
    WS_BAD_REQUEST,
    WS_HISTORY_UNAVAILABLE,
    WS_UNKNOWN_ORDER,
    admit,
    limit_send_buffer,
)
from services.gateway.tail import Logged, LogTail

router = APIRouter()

# How often a stream waiting on a gap asks the read models again.
_GAP_POLL_S = 0.2


@router.websocket("/api/orders/execute")
async def follow(
    socket: WebSocket,
    settings: SettingsDep,
    read_side: ReadSideDep,
    recent: RecentDep,
    tail: TailDep,
    limits: SocketLimitsDep,
    order_id: Annotated[str | None, Query(alias="orderId")] = None,
    last_seq: Annotated[str | None, Query(alias="lastSeq")] = None,
) -> None:
    """Stream an order's events after ``lastSeq`` (all by default), then live, then close."""
    async with admit(socket, limits) as admitted:
        if admitted:
            limit_send_buffer(socket, settings.ws_send_buffer_bytes)
            await follow_order(socket, settings, read_side, recent, tail, order_id, last_seq)


async def follow_order(
    socket: WebSocket,
    settings: Settings,
    read_side: ReadSide,
    recent: RecentEvents,
    tail: LogTail,
    order_id: str | None,
    last_seq: str | None,
) -> None:
    """Check the parameters of an accepted socket, then stream the order to it."""
    try:
        parsed = uuid.UUID(order_id or "")
    except ValueError:
        await socket.close(WS_UNKNOWN_ORDER, "orderId is not a valid order id")
        return
    if last_seq is not None and not last_seq.isdigit():
        await socket.close(WS_BAD_REQUEST, "lastSeq: must be a whole number")
        return
    stream = OrderStream(socket, parsed, read_side, settings.stream_gap_timeout_s)
    with contextlib.suppress(WebSocketDisconnect):
        await stream.run(recent, tail, int(last_seq or 0), settings.unknown_order_grace_s)


@dataclass
class OrderStream:
    """One socket following one order: what it has sent, and what waits for a gap to fill."""

    socket: WebSocket
    order_id: uuid.UUID
    read_side: ReadSide
    gap_timeout_s: float
    sent: int = 0
    pending: dict[int, Event] = field(default_factory=dict)

    async def run(self, recent: RecentEvents, tail: LogTail, last_seq: int, grace_s: float) -> None:
        """Send the order's events after ``last_seq`` until its end or the client leaves."""
        self.sent = last_seq
        # Subscribe before reading history: an event that lands in between is then
        # in the queue, and the sequence numbers drop whatever is seen twice.
        async with recent.subscribe(self.order_id) as live:
            history = await self.history()
            try:
                if not history and not await self.known(tail, grace_s):
                    await self.socket.close(WS_UNKNOWN_ORDER, "unknown order")
                    return
            except DatabaseUnavailable:
                # Neither the tail nor the read models can tell whether it exists.
                await self.socket.close(WS_HISTORY_UNAVAILABLE, "the read models are unavailable")
                return
            state = fold_onto(None, history)
            if state is not None and state.terminal and state.seq <= last_seq:
                # A reconnecting client that already saw the end has missed nothing.
                await self.socket.close(1000, state.status)
                return
            self.keep(history)
            disconnected = asyncio.ensure_future(self.socket.receive())
            try:
                await self.pump(live, disconnected)
            finally:
                disconnected.cancel()

    async def history(self) -> list[Logged]:
        """Return the order's events known so far; the tail's alone while the database is down."""
        try:
            return await self.read_side.history(self.order_id)
        except DatabaseUnavailable:
            return self.read_side.remembered(self.order_id)

    async def known(self, tail: LogTail, grace_s: float) -> bool:
        """Tell whether the order exists, once the tail has read the log as of now."""
        if await self.read_side.exists(self.order_id):
            return True
        # The command may be on the log but not yet read by this gateway.
        await tail.catch_up(grace_s)
        return await self.read_side.exists(self.order_id)

    def keep(self, events: list[Logged]) -> None:
        """Hold the events not sent yet until their turn comes."""
        for item in events:
            if item.event.seq > self.sent:
                self.pending.setdefault(item.event.seq, item.event)

    async def send_ready(self) -> bool:
        """Send the events that are next in sequence; return whether the order ended."""
        while self.sent + 1 in self.pending:
            event = self.pending.pop(self.sent + 1)
            await self.socket.send_json(event_view(event))
            self.sent = event.seq
            if event.status in TERMINAL_STATUSES:
                await self.socket.close(1000, event.status)
                return True
        return False

    async def pump(self, live: asyncio.Queue[Logged], disconnected: asyncio.Future[Any]) -> None:
        """Relay live events in sequence until the order ends or the client leaves."""
        gap_since: float | None = None
        loop = asyncio.get_running_loop()
        while not await self.send_ready():
            # Missing events are fetched again from the read models while waiting,
            # for a bounded time: a read model that never catches up ends the stream.
            gap = bool(self.pending)
            if not gap:
                gap_since = None
            elif gap_since is None:
                gap_since = loop.time()
            elif loop.time() - gap_since > self.gap_timeout_s:
                reason = f"event {self.sent + 1} is unavailable"
                await self.socket.close(WS_HISTORY_UNAVAILABLE, reason)
                return
            getter = asyncio.ensure_future(live.get())
            done, _ = await asyncio.wait(
                {getter, disconnected},
                timeout=_GAP_POLL_S if gap else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if disconnected in done or self.socket.client_state == WebSocketState.DISCONNECTED:
                getter.cancel()
                return
            if getter in done:
                self.keep([getter.result()])
            else:
                getter.cancel()
            if self.pending and self.sent + 1 not in self.pending:
                self.keep(await self.history())
