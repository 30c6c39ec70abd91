"""One order's events over a WebSocket (``/api/orders/execute?orderId=…&lastSeq=…``).

The socket subscribes to the log tail **before** it reads history, then sends
events strictly by ``seq``: whatever arrives twice is dropped, and a gap is
filled from the read models. It closes with 1000 after the terminal event, 4408
when it falls ``stream_buffer`` events behind, and its connection is cut when the
client stops reading altogether (``sockets.cut_when_stalled``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Query, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from adapters.settings import Settings
from domain.accounts import Caller
from events.messages import TERMINAL_STATUSES, Event, OrderAccepted
from services.gateway.auth import open_socket
from services.gateway.deps import (
    GatewayDep,
    ReadSideDep,
    RecentDep,
    SettingsDep,
    SocketLimitsDep,
    TailDep,
)
from services.gateway.errors import DatabaseUnavailable
from services.gateway.firehose import is_whole_number
from services.gateway.mailbox import Mailbox
from services.gateway.read_side import ReadSide, fold_onto
from services.gateway.recent import RecentEvents
from services.gateway.schemas import event_view
from services.gateway.sockets import (
    WS_BAD_REQUEST,
    WS_HISTORY_UNAVAILABLE,
    WS_SLOW_CONSUMER,
    WS_UNKNOWN_ORDER,
    close,
    cut_when_stalled,
    send_text,
)
from services.gateway.tail import Logged, LogTail

router = APIRouter()

# How often a stream waiting on a gap asks the read models again.
_GAP_POLL_S = 0.2
# How Starlette's ``send_json`` writes JSON, kept so that messages stay byte for byte.
_COMPACT: dict[str, Any] = {"separators": (",", ":"), "ensure_ascii": False}


@router.websocket("/api/orders/execute")
async def follow(
    socket: WebSocket,
    settings: SettingsDep,
    read_side: ReadSideDep,
    recent: RecentDep,
    tail: TailDep,
    limits: SocketLimitsDep,
    gateway: GatewayDep,
    order_id: Annotated[str | None, Query(alias="orderId")] = None,
    last_seq: Annotated[str | None, Query(alias="lastSeq")] = None,
) -> None:
    """Stream an order's events after ``lastSeq`` (all by default), then live, then close."""
    opened = open_socket(socket, gateway, limits, "order", settings.ws_send_buffer_bytes)
    async with opened as caller:
        if caller is None:
            return
        await follow_order(socket, settings, read_side, recent, tail, order_id, last_seq, caller)


async def follow_order(
    socket: WebSocket,
    settings: Settings,
    read_side: ReadSide,
    recent: RecentEvents,
    tail: LogTail,
    order_id: str | None,
    last_seq: str | None,
    caller: Caller,
) -> None:
    """Check the parameters of an accepted socket, then stream the order to it (as an
    unknown order, 4404, when another account placed it)."""
    try:
        parsed = uuid.UUID(order_id or "")
    except ValueError:
        await close(socket, WS_UNKNOWN_ORDER, "orderId is not a valid order id")
        return
    if last_seq is not None and not is_whole_number(last_seq):
        await close(socket, WS_BAD_REQUEST, "lastSeq: must be a whole number")
        return
    stream = OrderStream(socket, parsed, read_side, settings, caller)
    with contextlib.suppress(WebSocketDisconnect):
        await stream.run(recent, tail, int(last_seq or 0))


@dataclass
class OrderStream:
    """One socket following one order: what it has sent, and what waits for a gap to fill."""

    socket: WebSocket
    order_id: uuid.UUID
    read_side: ReadSide
    settings: Settings
    caller: Caller
    sent: int = 0
    pending: dict[int, Event] = field(default_factory=dict)

    async def run(self, recent: RecentEvents, tail: LogTail, last_seq: int) -> None:
        """Send the order's events after ``last_seq`` until its end or the client leaves."""
        self.sent = last_seq
        # Subscribe before reading history: an event that lands in between is then
        # in the queue, and the sequence numbers drop whatever is seen twice.
        async with recent.subscribe(self.order_id, self.settings.stream_buffer) as live:
            history = await self.history()
            if not await self.worth_streaming(history, tail):
                return
            self.keep(history)
            endings: set[asyncio.Future[Any]] = {
                asyncio.ensure_future(self.socket.receive()),  # the client leaves
                asyncio.ensure_future(live.dropped.wait()),  # or falls too far behind
                # or stops reading: its connection is cut
                asyncio.ensure_future(
                    cut_when_stalled(self.socket, self.settings.ws_ping_timeout_s)
                ),
            }
            try:
                await self.pump(live, endings)
            finally:
                for ending in endings:
                    ending.cancel()

    async def worth_streaming(self, history: list[Logged], tail: LogTail) -> bool:
        """Tell whether there is anything to stream; if not, close the socket saying why."""
        try:
            if not history and not await self.known(tail):
                await close(self.socket, WS_UNKNOWN_ORDER, "unknown order")
                return False
            if not self.caller.owns(self.placed_by(history)):
                await close(self.socket, WS_UNKNOWN_ORDER, "unknown order")
                return False
        except DatabaseUnavailable:
            # Neither the tail nor the read models can tell whether it exists.
            await close(self.socket, WS_HISTORY_UNAVAILABLE, "the read models are unavailable")
            return False
        state = fold_onto(None, history)
        if state is not None and state.terminal and state.seq <= self.sent:
            # A reconnecting client that already saw the end has missed nothing.
            await close(self.socket, 1000, state.status)
            return False
        return True

    def placed_by(self, history: list[Logged]) -> str | None:
        """Return the account that placed the order: from its acceptance, or its submission."""
        first = history[0].event if history else None
        if isinstance(first, OrderAccepted):
            return first.account
        return self.read_side.submitted_by(self.order_id)

    async def history(self) -> list[Logged]:
        """Return the order's events known so far; the tail's alone while the database is down."""
        try:
            return await self.read_side.history(self.order_id)
        except DatabaseUnavailable:
            return self.read_side.remembered(self.order_id)

    async def known(self, tail: LogTail) -> bool:
        """Tell whether the order exists, once the tail has read the log as of now."""
        if await self.read_side.exists(self.order_id):
            return True
        # The command may be on the log but not yet read by this gateway.
        await tail.catch_up(self.settings.unknown_order_grace_s)
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
            await send_text(self.socket, json.dumps(event_view(event), **_COMPACT))
            self.sent = event.seq
            if event.status in TERMINAL_STATUSES:
                await close(self.socket, 1000, event.status)
                return True
        return False

    async def pump(self, live: Mailbox[Logged], endings: set[asyncio.Future[Any]]) -> None:
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
            elif loop.time() - gap_since > self.settings.stream_gap_timeout_s:
                reason = f"event {self.sent + 1} is unavailable"
                await close(self.socket, WS_HISTORY_UNAVAILABLE, reason)
                return
            getter = asyncio.ensure_future(live.queue.get())
            done, _ = await asyncio.wait(
                {getter, *endings},
                timeout=_GAP_POLL_S if gap else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if getter not in done:
                getter.cancel()
            if live.dropped.is_set():
                await close(self.socket, WS_SLOW_CONSUMER, "client fell behind the event stream")
                return
            if done - {getter} or self.socket.client_state == WebSocketState.DISCONNECTED:
                return  # the client left, or its connection was cut
            if getter in done:
                self.keep([getter.result()])
            if self.pending and self.sent + 1 not in self.pending:
                self.keep(await self.history())
