"""What every WebSocket of the gateway shares: close codes, bounded buffers, hard closes.

Close codes (README): 4400 a bad query parameter, 4404 an unknown order, 4408 a
client that fell too far behind, 4410 a cursor before the start of the log, 4429
too many sockets (of this client, or in all), 4503 history that cannot be read.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from socket import SO_SNDBUF, SOL_SOCKET
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from adapters.metrics import WEBSOCKETS_CLOSED, WEBSOCKETS_OPEN

WS_BAD_REQUEST = 4400
WS_UNKNOWN_ORDER = 4404
WS_SLOW_CONSUMER = 4408
WS_POSITION_GONE = 4410
WS_TOO_MANY_SOCKETS = 4429
WS_HISTORY_UNAVAILABLE = 4503
_CLOSE_WAIT_S = 5.0
# How often a socket's outgoing buffer is looked at for a peer that stopped reading.
_STALL_CHECK_S = 1.0
_TRANSPORT_KEY = "oee.transport"
_PROTOCOL_KEY = "oee.protocol"


class ExposeTransport:
    """ASGI middleware handing WebSocket handlers their connection's protocol and transport.

    ASGI hides the connection, but bounding what a slow peer may buffer, cutting off
    one that stopped reading and writing ready-made frames all need it. uvicorn's
    ``send`` is a method of its protocol object, which holds the transport; elsewhere
    nothing is exposed and the handlers fall back to what ASGI allows (polite closes,
    default buffers, a message at a time).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            protocol = getattr(send, "__self__", None)
            scope[_PROTOCOL_KEY] = protocol
            scope[_TRANSPORT_KEY] = getattr(protocol, "transport", None)
        await self.app(scope, receive, send)


def _transport(socket: WebSocket) -> Any:
    # Duck-typed: uvloop's transports do not derive from asyncio's classes.
    transport = socket.scope.get(_TRANSPORT_KEY)
    return transport if hasattr(transport, "abort") else None


def limit_send_buffer(socket: WebSocket, size: int) -> None:
    """Bound what the kernel and the event loop buffer for a peer to about ``size`` each.

    Left alone, Linux grows a socket's send buffer up to megabytes for a peer that
    does not read, which hides a stalled client and holds that memory per socket.
    """
    transport = _transport(socket)
    if transport is None:
        return
    transport.set_write_buffer_limits(high=size)
    raw = transport.get_extra_info("socket")
    if raw is not None:
        raw.setsockopt(SOL_SOCKET, SO_SNDBUF, size)


def abort_connection(socket: WebSocket) -> None:
    """Drop the connection under ``socket`` at once, unsent data and all.

    ASGI can only close politely, and a polite close waits until the peer has read
    everything queued before it, which a peer that stopped reading never does.
    """
    transport = _transport(socket)
    if transport is not None:
        transport.abort()


def text_frame(text: str) -> bytes:
    """Return ``text`` as one WebSocket text frame from a server: final, unmasked, not
    compressed (RFC 6455, 5.2), as the websockets library writes it."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        head = bytes((0x81, size))
    elif size < 1 << 16:
        head = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return head + payload


class FrameWriter:
    """Write ready-made text frames straight to a WebSocket's connection.

    The firehose sends each event to every socket: built once as a frame, it costs
    each socket a buffer append instead of a pass through Starlette, uvicorn and the
    websockets library (about 30 µs a message, which with a thousand sockets took
    the event loop whole). Only where the bytes are what uvicorn would write anyway:
    its websockets protocol, with no extension (compression) agreed.
    """

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    @classmethod
    def of(cls, socket: WebSocket) -> FrameWriter | None:
        """Return a writer for ``socket``, or None where frames must go through ASGI."""
        protocol = socket.scope.get(_PROTOCOL_KEY)
        plain = getattr(getattr(protocol, "conn", None), "extensions", None) == []
        flow = isinstance(getattr(protocol, "writable", None), asyncio.Event)
        if not (plain and flow and hasattr(protocol, "close_sent") and _transport(socket)):
            return None
        return cls(protocol)

    def write_now(self, frames: list[bytes]) -> bool:
        """Write ``frames`` if the connection takes more now; return whether written.

        False when the connection is paused (a slow peer) or closing: the caller keeps
        the frames for later, or gives up on the socket.
        """
        protocol = self._protocol
        if not protocol.writable.is_set() or protocol.close_sent:
            return False
        if protocol.transport.is_closing():
            return False
        protocol.transport.writelines(frames)
        return True

    async def write(self, frames: list[bytes]) -> None:
        """Write ``frames`` once the connection takes more; raise ``WebSocketDisconnect``
        once it is closed or closing."""
        protocol = self._protocol
        await protocol.writable.wait()  # uvicorn's flow control: below the high-water mark
        if protocol.close_sent or protocol.transport.is_closing():
            raise WebSocketDisconnect(1006)
        protocol.transport.writelines(frames)


async def send_text(socket: WebSocket, text: str) -> None:
    """Send ``text``; raise ``WebSocketDisconnect`` once the connection is closed or closing."""
    try:
        await socket.send_text(text)
    except RuntimeError as exc:
        # The server closed it under us (a heartbeat that got no pong): it is gone.
        raise WebSocketDisconnect(1006) from exc


async def cut_when_stalled(socket: WebSocket, stall_s: float) -> None:
    """Drop the connection once data has waited ``stall_s`` for a peer that takes none of it.

    The kernel's and the event loop's buffers are bounded (``limit_send_buffer``);
    what waits beyond them for a peer that stopped reading is cut off here, whether
    or not more events come, and whatever the state of a polite close. Without a
    transport (not uvicorn) it never returns.
    """
    transport = _transport(socket)
    if transport is None:
        await asyncio.Event().wait()
    loop = asyncio.get_running_loop()
    waiting_since: float | None = None
    waiting = 0
    while True:
        await asyncio.sleep(min(_STALL_CHECK_S, stall_s / 2))
        size = transport.get_write_buffer_size()
        if size == 0 or size < waiting:
            waiting_since = None  # the peer took some
        elif waiting_since is None:
            waiting_since = loop.time()
        elif loop.time() - waiting_since >= stall_s:
            transport.abort()
            return
        waiting = size


async def close(socket: WebSocket, code: int, reason: str) -> None:
    """Close ``socket`` with ``code``, aborting the connection if the peer does not read."""
    socket.state.close_code = code
    try:
        await asyncio.wait_for(socket.close(code, reason), _CLOSE_WAIT_S)
    except TimeoutError:
        abort_connection(socket)
    except (RuntimeError, WebSocketDisconnect):
        pass  # already closed by the peer


class SocketLimits:
    """How many WebSockets may be open at once: in all, and per client.

    A client is its peer address until clients have accounts.
    """

    def __init__(self, total: int, per_client: int) -> None:
        self._total = total
        self._per_client = per_client
        self._open: Counter[str] = Counter()

    @contextmanager
    def admit(self, client: str) -> Iterator[bool]:
        """Hold a place for one socket of ``client`` while the block runs; yield whether
        there was one."""
        if self._open.total() >= self._total or self._open[client] >= self._per_client:
            yield False
            return
        self._open[client] += 1
        try:
            yield True
        finally:
            self._open[client] -= 1
            if not self._open[client]:
                del self._open[client]


@asynccontextmanager
async def admit(
    socket: WebSocket, limits: SocketLimits, kind: str, subprotocol: str | None = None
) -> AsyncIterator[bool]:
    """Accept ``socket`` (with ``subprotocol``, the one its key came in) and yield whether
    the limits let it stay; close it with 4429 if not.

    Counts the sockets of ``kind`` open, and each closed by its close code (``peer``
    when the client closed or vanished first).
    """
    client = socket.client.host if socket.client is not None else "unknown"
    with limits.admit(client) as room:
        await socket.accept(subprotocol=subprotocol)
        WEBSOCKETS_OPEN.labels(kind).inc()
        try:
            if not room:
                await close(socket, WS_TOO_MANY_SOCKETS, "too many sockets")
            yield room
        finally:
            WEBSOCKETS_OPEN.labels(kind).dec()
            code = getattr(socket.state, "close_code", "peer")
            WEBSOCKETS_CLOSED.labels(kind, str(code)).inc()
