"""The firehose (``GET /api/stream``, WebSocket): order events matching a filter.

A client may start from now, from the earliest event still on the log, or from a
cursor: every firehose message carries the cursor just after it, so a client that
reconnects with the last cursor it saw receives exactly what it missed, from any
gateway. The past is read from the log by a short-lived reader of this socket's
own; once it has caught up, the socket joins the fan-out of the gateway's single log tail.

Close codes: 4400 for a bad parameter (the reason names it), 4408 when the client
fell more than ``stream_buffer`` events behind, 4410 when the cursor points before
the start of the log (retention removed those events), 1001 when the gateway stops.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, get_args

from aiokafka import AIOKafkaConsumer, TopicPartition
from starlette.websockets import WebSocket, WebSocketDisconnect

from adapters.kafka import client_options
from adapters.settings import Settings
from domain.tokens import find_token
from events.messages import DecodeError, Event, OrderAccepted, OrderType, Status, decode_event
from services.gateway.errors import DatabaseUnavailable
from services.gateway.fanout import Fanout, Feed, OrderFacts, StreamFilter, facts_after
from services.gateway.schemas import event_view
from services.gateway.sockets import (
    WS_BAD_REQUEST,
    WS_HISTORY_UNAVAILABLE,
    WS_POSITION_GONE,
    WS_SLOW_CONSUMER,
    FrameWriter,
    close,
    cut_when_stalled,
    send_text,
)
from services.gateway.tail import Cursor, Logged, LogTail, format_cursor

log = logging.getLogger(__name__)

# A backfill keeps chasing the live tail without queueing until it is this close.
_CHASE_ROUNDS = 5


class StreamParamError(ValueError):
    """A firehose parameter that cannot be honoured."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """A parsed firehose request: what to pass, and where on the log to start."""

    filter: StreamFilter
    start: Cursor | None  # None: from now
    earliest: bool = False


def _values(params: Mapping[str, str], name: str) -> list[str]:
    raw = params.get(name)
    if raw is None:
        return []
    values = [v.strip() for v in raw.split(",") if v.strip()]
    if not values:
        raise StreamParamError(name, "must not be empty")
    return values


def _one_of(params: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> frozenset[str]:
    values = _values(params, name)
    for value in values:
        if value not in allowed:
            raise StreamParamError(name, f"{value!r} is not one of {', '.join(allowed)}")
    return frozenset(values)


def parse_cursor(text: str) -> Cursor:
    """Parse ``partition:offset,...`` into a cursor, or raise ``StreamParamError``."""
    cursor: Cursor = {}
    for part in text.split(","):
        partition, sep, offset = part.strip().partition(":")
        if not (sep and is_whole_number(partition) and is_whole_number(offset)) or (
            int(partition) in cursor
        ):
            raise StreamParamError("from", "must be now, earliest or a cursor like 0:12,1:40")
        cursor[int(partition)] = int(offset)
    return cursor


def is_whole_number(text: str) -> bool:
    """Tell whether ``text`` is 1 to 18 ASCII digits: a partition, an offset or a seq."""
    # str.isdigit() alone also takes '²' (which int() refuses), and int() of thousands of
    # digits is slow.
    return 0 < len(text) <= 18 and text.isascii() and text.isdigit()


def parse_stream_request(params: Mapping[str, str], account: str | None = None) -> StreamRequest:
    """Validate the firehose query parameters, or raise ``StreamParamError``."""
    unknown = set(params) - {"status", "token", "venue", "type", "from"}
    if unknown:
        raise StreamParamError(sorted(unknown)[0], "is not a firehose parameter")
    tokens = set()
    for value in _values(params, "token"):
        token = find_token(value)
        # An unlisted token may still appear (a new pool); match it as written.
        tokens.add(token.symbol if token is not None else value)
    stream_filter = StreamFilter(
        statuses=_one_of(params, "status", get_args(Status)),
        tokens=frozenset(tokens),
        venues=frozenset(v.lower() for v in _values(params, "venue")),
        order_types=_one_of(params, "type", get_args(OrderType)),
        account=account,
    )
    start = params.get("from", "now").strip()
    if start == "now":
        return StreamRequest(stream_filter, None)
    if start == "earliest":
        return StreamRequest(stream_filter, {}, earliest=True)
    return StreamRequest(stream_filter, parse_cursor(start))


class PositionGoneError(RuntimeError):
    """The requested cursor points before the first event still on the log."""


class LogReader:
    """Read one socket's past events from the log, between two cursors."""

    def __init__(self, settings: Settings, fanout: Fanout, stream_filter: StreamFilter) -> None:
        self._settings = settings
        self._fanout = fanout
        self._filter = stream_filter
        self._consumer: AIOKafkaConsumer | None = None
        self._facts: dict[uuid.UUID, OrderFacts] = {}
        # Events of an order arrive in sequence order (one partition), so a sequence
        # number not above the last one is a re-emitted duplicate: first one wins.
        self._last_seq: dict[uuid.UUID, int] = {}

    async def open(self, start: Cursor, partitions: list[int], earliest: bool) -> Cursor:
        """Return ``start`` completed with every partition (clamped to the log's start)."""
        self._consumer = AIOKafkaConsumer(
            **client_options(self._settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="none",
        )
        await self._consumer.start()
        tps = [TopicPartition(self._settings.events_topic, p) for p in partitions]
        self._consumer.assign(tps)
        firsts = await self._consumer.beginning_offsets(tps)
        cursor: Cursor = {}
        for tp in tps:
            wanted = start.get(tp.partition, 0)
            if wanted < firsts[tp] and not earliest:
                raise PositionGoneError(
                    f"partition {tp.partition} starts at {firsts[tp]}, after {wanted}"
                )
            cursor[tp.partition] = max(wanted, firsts[tp])
        return cursor

    async def close(self) -> None:
        """Stop reading and forget what was learnt: the socket may live on long after."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        self._facts.clear()
        self._last_seq.clear()

    async def read(
        self, position: Cursor, until: Cursor, send: Callable[[str], Awaitable[None]]
    ) -> Cursor:
        """Send every matching event from ``position`` up to ``until``; return the new position."""
        assert self._consumer is not None
        position = dict(position)
        topic = self._settings.events_topic
        behind = [p for p in sorted(until) if position.get(p, 0) < until[p]]
        for p in behind:
            self._consumer.seek(TopicPartition(topic, p), position[p])
        while any(position[p] < until[p] for p in behind):
            wanted = [TopicPartition(topic, p) for p in behind if position[p] < until[p]]
            batches = await self._consumer.getmany(*wanted, timeout_ms=500, max_records=500)
            records = [
                (tp.partition, record)
                for tp, rs in batches.items()
                for record in rs
                if record.offset < until[tp.partition]
            ]
            events = [(p, r.offset, _decode(r.value)) for p, r in records]
            await self._learn([e for _, _, e in events if e is not None])
            for partition, offset, event in events:
                position[partition] = offset + 1
                if event is None or not self._first(event):
                    continue
                facts = self._advance(event)
                if self._filter.matches(event, facts):
                    position_view = {"topic": topic, "partition": partition, "offset": offset}
                    await send(render(Logged(event, position_view), format_cursor(position)))
        return position

    def _first(self, event: Event) -> bool:
        if event.seq <= self._last_seq.get(event.order_id, 0):
            return False
        self._last_seq[event.order_id] = event.seq
        return True

    def _advance(self, event: Event) -> OrderFacts | None:
        facts = facts_after(self._facts.get(event.order_id), event)
        if facts is not None:
            self._facts[event.order_id] = facts
        return facts

    async def _learn(self, events: list[Event]) -> None:
        """Find the facts of orders whose acceptance lies before the start position."""
        if not self._filter.needs_facts:
            return
        unknown = set()
        for event in events:
            if isinstance(event, OrderAccepted) or event.order_id in self._facts:
                continue
            known = self._fanout.facts(event.order_id)
            if known is not None:
                self._facts[event.order_id] = known
            else:
                unknown.add(event.order_id)
        self._facts.update(await self._fanout.resolve(sorted(unknown)))


def _decode(raw: bytes | None) -> Event | None:
    if raw is None:
        return None
    try:
        return decode_event(raw)
    except DecodeError:
        return None


def render(logged: Logged, cursor: str) -> str:
    """Return the firehose message of an event: its view, log position and the cursor after it."""
    return json.dumps({**event_view(logged.event, logged.position), "cursor": cursor})


async def serve_firehose(
    socket: WebSocket,
    tail: LogTail,
    fanout: Fanout,
    settings: Settings,
    params: Mapping[str, str],
    account: str | None = None,
) -> None:
    """Stream the firehose to an accepted ``socket`` until the client leaves or falls behind;
    only the events of ``account``'s orders, when it is given."""
    try:
        request = parse_stream_request(params, account)
    except StreamParamError as exc:
        await close(socket, WS_BAD_REQUEST, str(exc)[:120])
        return
    capacity = settings.stream_buffer
    feed: Feed | None = None
    reader = LogReader(settings, fanout, request.filter)
    send = functools.partial(send_text, socket)
    # A client that stops reading is cut off, during its backfill as after it.
    watch = asyncio.create_task(cut_when_stalled(socket, settings.ws_ping_timeout_s))
    try:
        if request.start is not None:
            try:
                position = await reader.open(request.start, sorted(tail.cursor()), request.earliest)
            except PositionGoneError as exc:
                await close(socket, WS_POSITION_GONE, str(exc)[:120])
                return
            # Catch up without queueing live events, then join the tail for the rest.
            for _ in range(_CHASE_ROUNDS):
                target = tail.cursor()
                if sum(target[p] - position.get(p, 0) for p in target) <= capacity // 2:
                    break
                position = await reader.read(position, target, send)
            feed, joined_at = fanout.open_feed(request.filter, capacity)
            await reader.read(position, joined_at, send)
            await reader.close()
        else:
            feed, _ = fanout.open_feed(request.filter, capacity)
        await _relay(socket, feed)
    except WebSocketDisconnect:
        pass
    except DatabaseUnavailable:
        # A filter on type, token or venue needs the read models to describe older orders.
        await close(socket, WS_HISTORY_UNAVAILABLE, "the read models are unavailable")
    finally:
        watch.cancel()
        await reader.close()
        if feed is not None:
            fanout.close_feed(feed)


async def _relay(socket: WebSocket, feed: Feed) -> None:
    """Send the feed's queue until the client leaves; close with 4408 when it falls behind."""
    writer = FrameWriter.of(socket)

    async def send_all() -> None:
        # What was queued while the backfill ran, or while the connection was paused.
        while True:
            batch = [await feed.queue.get()]
            while not feed.queue.empty():
                batch.append(feed.queue.get_nowait())
            if writer is None:
                for message in batch:
                    await send_text(socket, message.text)
                continue
            feed.busy = True  # later messages wait behind these
            try:
                await writer.write([message.frame for message in batch])
            finally:
                feed.busy = False

    feed.writer = writer  # from now on, messages may go straight to the connection

    sender = asyncio.create_task(send_all())
    leaving = asyncio.create_task(_until_disconnect(socket))
    dropped = asyncio.create_task(feed.dropped.wait())
    try:
        done, _ = await asyncio.wait({sender, leaving, dropped}, return_when="FIRST_COMPLETED")
    finally:
        for task in (sender, leaving, dropped):
            task.cancel()
        await asyncio.gather(sender, leaving, dropped, return_exceptions=True)
    if dropped in done:
        log.info("firehose client fell %d events behind; dropped", feed.queue.maxsize)
        await close(socket, WS_SLOW_CONSUMER, "client fell behind the event stream")
    elif sender in done and not sender.cancelled():
        sender.result()  # a disconnect surfaces here as WebSocketDisconnect


async def _until_disconnect(socket: WebSocket) -> Any:
    """Return when the client disconnects (firehose clients send nothing else)."""
    while True:
        message = await socket.receive()
        if message["type"] == "websocket.disconnect":
            return message
