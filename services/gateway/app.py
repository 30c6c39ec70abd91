"""The gateway: validates requests, writes commands to the log, streams events back.

It never writes a database: a submission is answered once the broker has
acknowledged the command (acks=all). Reads come from the PostgreSQL read models
merged with what this gateway's log tail saw, so a client reads its own writes
even before the projector has caught up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from aiokafka.errors import KafkaError
from fastapi import FastAPI, Header, Query, Request, WebSocket
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from adapters.settings import Settings
from adapters.venues.interface import VenueError
from adapters.venues.quoting import quote_all
from domain.lifecycle import IllegalTransition, OrderState, evolve
from domain.routing import NoRoute, choose_route
from events.messages import (
    TERMINAL_STATUSES,
    CancelOrder,
    Command,
    Event,
    SubmitOrder,
    encode,
    order_key,
)
from projections.analytics.queries import analytics
from projections.orders import queries
from services.gateway import browse, errors, stream
from services.gateway.adapters import Gateway
from services.gateway.errors import ApiError
from services.gateway.hub import Logged
from services.gateway.schemas import (
    ExecuteOrderRequest,
    LaunchRequest,
    SwapRequest,
    camelize,
    event_view,
    order_view,
    request_hash,
    submitted_view,
)

log = logging.getLogger(__name__)

# Order ids of idempotent submissions derive from the key, so every gateway and
# the engine agree on which order a retried request means.
_IDEMPOTENCY_NAMESPACE = uuid.UUID("0b6c1f8e-5d2a-4c3b-9e7f-1a2b3c4d5e6f")
WS_UNKNOWN_ORDER = 4404
WS_HISTORY_UNAVAILABLE = 4503
_GAP_POLL_S = 0.2
# Venue answers to a launch that mean "it exists already".
_LAUNCH_CONFLICTS = frozenset({"POOL_EXISTS", "TOKEN_EXISTS"})


def fold(history: list[Logged]) -> OrderState | None:
    """Return the state after the contiguous prefix of ``history`` (seq 1, 2, ...)."""
    state: OrderState | None = None
    for logged in history:
        try:
            state = evolve(state, logged.event)
        except IllegalTransition:
            break  # a gap: the rest is not known yet
    return state


async def read_body(request: Request, limit: int) -> bytes:
    """Read the request body, refusing more than ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "BODY_TOO_LARGE", f"request body exceeds {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "BODY_TOO_LARGE", f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_order_request(body: bytes) -> ExecuteOrderRequest:
    """Parse and validate a submission body, or raise ``ApiError``."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "INVALID_JSON", "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "INVALID_BODY", "request body must be a JSON object")
    try:
        return ExecuteOrderRequest.model_validate(data)
    except ValidationError as exc:
        raise errors.from_validation(exc.errors()) from None


def create_app(
    settings: Settings, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> FastAPI:
    """Return the gateway's FastAPI application."""
    gateway = Gateway(settings, clock)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(
        title="Order Execution Engine",
        version="0.1.0",
        summary="Submit DEX swap orders and follow them live.",
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.add_middleware(stream.ExposeTransport)
    errors.install(app)
    app.include_router(browse.router)

    body_schema = ExecuteOrderRequest.model_json_schema(by_alias=True)

    @app.post(
        "/api/orders/execute",
        status_code=202,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": body_schema}},
            }
        },
        responses={
            400: {"description": "Malformed JSON"},
            409: {"description": "Idempotency key reused with another body"},
            413: {"description": "Body too large"},
            422: {"description": "Invalid field"},
            503: {"description": "Broker unavailable"},
        },
    )
    async def execute(
        request: Request,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> JSONResponse:
        """Submit an order; answers once the command is durably on the log."""
        order = parse_order_request(await read_body(request, settings.max_body_bytes))
        if order.expired_by(gateway.clock()):
            raise ApiError(422, "INVALID_EXPIRY", "expiresAt: already in the past", "expiresAt")
        spec = order.to_spec()
        digest = request_hash(spec)
        if idempotency_key is None:
            return await submit(uuid.uuid4(), spec, digest, None)
        if not 1 <= len(idempotency_key) <= 128:
            raise ApiError(
                400, "INVALID_IDEMPOTENCY_KEY", "must be 1 to 128 characters", "Idempotency-Key"
            )
        order_id = uuid.uuid5(_IDEMPOTENCY_NAMESPACE, idempotency_key)
        async with gateway.key_locks.hold(idempotency_key):
            prior_hash = await earlier_submission(idempotency_key, order_id)
            if prior_hash is None:
                return await submit(order_id, spec, digest, idempotency_key)
        if prior_hash != digest:
            raise ApiError(
                409,
                "IDEMPOTENCY_CONFLICT",
                "this Idempotency-Key was used with a different request body",
                "Idempotency-Key",
            )
        state = fold(await gateway.history(order_id))
        return JSONResponse(
            status_code=202,
            content={"orderId": str(order_id), "status": state.status if state else "pending"},
        )

    async def earlier_submission(key: str, order_id: uuid.UUID) -> str | None:
        seen = gateway.hub.submission(key)
        if seen is not None:
            return seen.request_hash
        async with gateway.pool.connection() as conn:
            row = await queries.get_order(conn, order_id)
        return str(row["request_hash"]) if row else None

    async def submit(order_id: uuid.UUID, spec: Any, digest: str, key: str | None) -> JSONResponse:
        command = SubmitOrder(
            message_id=uuid.uuid4(),
            order_id=order_id,
            seq=0,
            occurred_at=gateway.clock(),
            correlation_id=uuid.uuid4(),
            spec=spec,
            idempotency_key=key,
            request_hash=digest,
        )
        await write_command(command)
        gateway.hub.record_submission(command)
        return JSONResponse(
            status_code=202, content={"orderId": str(order_id), "status": "pending"}
        )

    @app.get("/api/orders/{order_id}")
    async def get_order(order_id: uuid.UUID) -> dict[str, Any]:
        """Return an order's current state."""
        state = fold(await gateway.history(order_id))
        if state is not None:
            return order_view(state)
        command = gateway.hub.submitted(order_id)
        if command is not None:
            # Written to the log but not accepted by the engine yet: read your writes.
            return submitted_view(command)
        raise ApiError(404, "ORDER_NOT_FOUND", f"order {order_id} is unknown", "orderId")

    @app.get("/api/orders/{order_id}/events")
    async def get_events(order_id: uuid.UUID) -> dict[str, Any]:
        """Return an order's audit trail: every event, in order, with its log position."""
        history = await gateway.history(order_id)
        if not history:
            raise ApiError(404, "ORDER_NOT_FOUND", f"order {order_id} is unknown", "orderId")
        return {
            "orderId": str(order_id),
            "events": [event_view(item.event, item.position) for item in history],
        }

    @app.post(
        "/api/orders/{order_id}/cancel",
        responses={
            404: {"description": "Unknown order"},
            409: {"description": "Not armed: already executing or done (error.status says)"},
        },
    )
    async def cancel(order_id: uuid.UUID) -> JSONResponse:
        """Cancel an armed limit or sniper order; answers once the outcome is on the log."""
        state = await armed_state(order_id)
        async with gateway.hub.subscribe(order_id) as live:
            command = CancelOrder(
                message_id=uuid.uuid4(),
                order_id=order_id,
                seq=state.seq,
                occurred_at=gateway.clock(),
                correlation_id=state.correlation_id,
            )
            await write_command(command)
            # The first event after the armed one decides: the cancel's, or a trigger's
            # or expiry's that reached the engine first.
            outcome = await next_event(order_id, state.seq, live)
        if outcome is None:
            return JSONResponse(
                status_code=202,
                content={"orderId": str(order_id), "status": "armed", "cancelRequested": True},
            )
        if outcome.status != "cancelled":
            raise not_cancellable(order_id, outcome.status)
        return JSONResponse(content={"orderId": str(order_id), "status": "cancelled"})

    def not_cancellable(order_id: uuid.UUID, status: str) -> ApiError:
        return ApiError(
            409,
            "NOT_CANCELLABLE",
            f"order {order_id} is {status}; only an armed order can be cancelled",
            None,
            {"status": status},
        )

    async def armed_state(order_id: uuid.UUID) -> OrderState:
        """Return the order's state once it is armed, or raise 404/409."""
        deadline = asyncio.get_running_loop().time() + settings.unknown_order_grace_s
        while True:
            state = fold(await gateway.history(order_id))
            if state is None and not await gateway.exists(order_id):
                raise ApiError(404, "ORDER_NOT_FOUND", f"order {order_id} is unknown", "orderId")
            waiting = state is None or (state.status == "pending" and state.spec.waits)
            if state is not None and not waiting:
                if state.status != "armed":
                    raise not_cancellable(order_id, state.status)
                return state
            # Accepted a moment ago: it is armed within milliseconds.
            if asyncio.get_running_loop().time() > deadline:
                raise not_cancellable(order_id, state.status if state else "pending")
            await asyncio.sleep(0.05)

    async def next_event(
        order_id: uuid.UUID, after: int, live: asyncio.Queue[Logged]
    ) -> Event | None:
        """Return the order's event ``after + 1`` once known (None after a timeout)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.cancel_timeout_s
        while (left := deadline - loop.time()) > 0:
            for known in await gateway.history(order_id):
                if known.event.seq == after + 1:
                    return known.event
            with contextlib.suppress(TimeoutError):
                item = await asyncio.wait_for(live.get(), timeout=min(1.0, left))
                if item.event.seq == after + 1:
                    return item.event
        return None

    async def write_command(command: Command) -> None:
        try:
            await gateway.producer.send_and_wait(
                settings.commands_topic, encode(command), key=order_key(command.order_id)
            )
        except KafkaError as exc:
            log.error("command for %s not written: %r", command.order_id, exc)
            raise ApiError(503, "BROKER_UNAVAILABLE", "the order log is unavailable") from exc

    @app.post(
        "/api/simulate/launch",
        status_code=201,
        responses={409: {"description": "Already listed"}, 404: {"description": "No such venue"}},
    )
    async def launch(body: LaunchRequest) -> dict[str, Any]:
        """Simulation: launch a new token in a new pool, e.g. for a sniper to catch."""
        venue = next((v for v in gateway.venues if v.name == body.venue), None)
        if venue is None:
            names = ", ".join(v.name for v in gateway.venues)
            raise ApiError(404, "UNKNOWN_VENUE", f"venue must be one of {names}", "venue")
        try:
            pool = await venue.launch(
                body.symbol, quote=body.quote, price=body.price, liquidity_usd=body.liquidity_usd
            )
        except VenueError as exc:
            status = 409 if exc.code in _LAUNCH_CONFLICTS else 502 if exc.transient else 422
            raise ApiError(status, exc.code, str(exc), "symbol") from exc
        return camelize(pool.model_dump(mode="json"))

    @app.get("/api/quotes")
    async def get_quotes(
        token_in: Annotated[str, Query(alias="tokenIn")],
        token_out: Annotated[str, Query(alias="tokenOut")],
        amount: Annotated[str, Query()],
    ) -> dict[str, Any]:
        """Quote every venue now and show the route the engine would take."""
        try:
            pair = SwapRequest.model_validate(
                {"tokenIn": token_in, "tokenOut": token_out, "amount": amount}
            )
        except ValidationError as exc:
            raise errors.from_validation(exc.errors()) from None
        quotes = await quote_all(
            gateway.venues, pair.token_in, pair.token_out, pair.amount, settings.venue_timeout_s
        )
        try:
            decision = choose_route(quotes, token_out=pair.token_out)
            route: dict[str, Any] | None = camelize(decision.model_dump(mode="json"))
        except NoRoute:
            route = None
        return {
            "tokenIn": pair.token_in,
            "tokenOut": pair.token_out,
            "amount": str(pair.amount),
            "quotes": [camelize(q.model_dump(mode="json")) for q in quotes],
            "route": route,
        }

    @app.get("/api/analytics")
    async def get_analytics() -> dict[str, Any]:
        """Return execution figures per venue and per pair (see docs/architecture.md)."""
        async with gateway.pool.connection() as conn:
            return await analytics(conn)

    @app.get("/health")
    async def health() -> JSONResponse:
        """Report whether the log tail and the read models are reachable."""
        database = True
        try:
            async with gateway.pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")
        except Exception:
            database = False
        checks = {"log": gateway.hub.running, "database": database}
        ok = all(checks.values())
        return JSONResponse(
            status_code=200 if ok else 503,
            content={
                "status": "ok" if ok else "degraded",
                "checks": checks,
                "sockets": gateway.hub.listeners,
            },
        )

    @app.websocket("/api/stream")
    async def firehose(socket: WebSocket) -> None:
        """Stream every order event matching the filters: live, or from a log position."""
        await socket.accept()
        stream.limit_send_buffer(socket, settings.ws_send_buffer_bytes)
        await stream.serve_firehose(socket, gateway.hub, settings, socket.query_params)

    @app.websocket("/api/orders/execute")
    async def follow(
        socket: WebSocket,
        order_id: Annotated[str | None, Query(alias="orderId")] = None,
        last_seq: Annotated[str | None, Query(alias="lastSeq")] = None,
    ) -> None:
        """Stream an order's events after ``lastSeq`` (all by default), then live, then close."""
        await socket.accept()
        stream.limit_send_buffer(socket, settings.ws_send_buffer_bytes)
        try:
            parsed = uuid.UUID(order_id or "")
        except ValueError:
            await socket.close(WS_UNKNOWN_ORDER, "orderId is not a valid order id")
            return
        if last_seq is not None and not last_seq.isdigit():
            await socket.close(stream.WS_BAD_REQUEST, "lastSeq: must be a whole number")
            return
        with contextlib.suppress(WebSocketDisconnect):
            await stream_order(socket, parsed, int(last_seq or 0))

    async def stream_order(socket: WebSocket, order_id: uuid.UUID, last_seq: int) -> None:
        # Subscribe before reading history: an event that lands in between is then
        # in the queue, and the sequence numbers drop whatever is seen twice.
        async with gateway.hub.subscribe(order_id) as live:
            pending: dict[int, Event] = {}
            history = await gateway.history(order_id)
            if not history and not await gateway.exists(order_id):
                # The command may be on the log but not yet read by this gateway.
                await gateway.hub.catch_up(settings.unknown_order_grace_s)
                if not await gateway.exists(order_id):
                    await socket.close(WS_UNKNOWN_ORDER, "unknown order")
                    return
            state = fold(history)
            if state is not None and state.terminal and state.seq <= last_seq:
                # A reconnecting client that already saw the end has missed nothing.
                await socket.close(1000, state.status)
                return
            for item in history:
                if item.event.seq > last_seq:
                    pending.setdefault(item.event.seq, item.event)
            disconnected = asyncio.ensure_future(socket.receive())
            try:
                await pump(socket, order_id, live, pending, disconnected, last_seq)
            finally:
                disconnected.cancel()

    async def pump(
        socket: WebSocket,
        order_id: uuid.UUID,
        live: asyncio.Queue[Logged],
        pending: dict[int, Event],
        disconnected: asyncio.Future[Any],
        sent: int,
    ) -> None:
        gap_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            while sent + 1 in pending:
                event = pending.pop(sent + 1)
                await socket.send_json(event_view(event))
                sent = event.seq
                if event.status in TERMINAL_STATUSES:
                    await socket.close(1000, event.status)
                    return
            # Missing events are fetched again from the read models while waiting,
            # for a bounded time: a read model that never catches up ends the stream.
            gap = bool(pending)
            if not gap:
                gap_since = None
            elif gap_since is None:
                gap_since = loop.time()
            elif loop.time() - gap_since > settings.stream_gap_timeout_s:
                await socket.close(WS_HISTORY_UNAVAILABLE, f"event {sent + 1} is unavailable")
                return
            getter = asyncio.ensure_future(live.get())
            done, _ = await asyncio.wait(
                {getter, disconnected},
                timeout=_GAP_POLL_S if gap else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if disconnected in done or socket.client_state == WebSocketState.DISCONNECTED:
                getter.cancel()
                return
            if getter in done:
                item = getter.result()
                if item.event.seq > sent:
                    pending.setdefault(item.event.seq, item.event)
            else:
                getter.cancel()
            if pending and sent + 1 not in pending:
                for item in await gateway.history(order_id):
                    if item.event.seq > sent:
                        pending.setdefault(item.event.seq, item.event)

    return app
