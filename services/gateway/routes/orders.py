"""Orders over HTTP: submit one, read its state and its audit trail, cancel it.

A submission is answered once its command is on the log (acks=all); the gateway
writes nothing else. With an ``Idempotency-Key`` the order id derives from the
caller's account and the key (and a server secret), so a retry on any gateway
means the same order. An order belongs to the account that placed it: to any
other caller it is unknown (404), unless that caller is an admin.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from adapters.metrics import ORDERS_SUBMITTED
from domain.accounts import Caller
from domain.lifecycle import OrderState
from events.messages import CancelOrder, Event, OrderSpec, SubmitOrder
from events.messages import OrderAccepted as AcceptedEvent
from services.gateway.commands import CommandWriter
from services.gateway.deps import (
    CallerDep,
    Clock,
    ClockDep,
    CommandsDep,
    GatewayDep,
    ReadSideDep,
    RecentDep,
    SettingsDep,
    SubmissionsDep,
    TailDep,
)
from services.gateway.errors import ApiError, DatabaseUnavailable
from services.gateway.intake import (
    IDEMPOTENCY_KEY_PATTERN,
    idempotent_order_id,
    parse_order_request,
    read_body,
)
from services.gateway.mailbox import Mailbox
from services.gateway.read_side import ReadSide
from services.gateway.request_id import request_correlation
from services.gateway.responses import (
    AUTHENTICATED,
    COMMON_ERRORS,
    DATABASE,
    INVALID,
    NOT_FOUND,
    CancelOutcome,
    OrderAccepted,
    OrderEvents,
    OrderView,
    error,
    located,
)
from services.gateway.schemas import (
    MAX_EXPIRY,
    ExecuteOrderRequest,
    event_view,
    order_view,
    request_hash,
    submitted_view,
)
from services.gateway.submissions import Submissions
from services.gateway.tail import Logged

router = APIRouter()

_EXECUTE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": ExecuteOrderRequest.model_json_schema(by_alias=True)}
        },
    }
}


@router.post(
    "/api/orders/execute",
    status_code=202,
    openapi_extra=_EXECUTE_BODY,
    response_model=None,
    responses={
        202: located(OrderAccepted, "The order's command is on the log"),
        400: error(
            "Not a JSON object, a key given twice, or a bad Idempotency-Key: INVALID_JSON, "
            "INVALID_BODY, DUPLICATE_KEY, INVALID_IDEMPOTENCY_KEY"
        ),
        408: error("The body did not arrive in time: REQUEST_TIMEOUT"),
        409: error("Idempotency-Key reused with another body: IDEMPOTENCY_CONFLICT"),
        413: error("Body over the limit: BODY_TOO_LARGE"),
        **INVALID,
        503: error(
            "The broker did not take the command (BROKER_UNAVAILABLE), too many submissions "
            "were ahead of it (GATEWAY_BUSY), or PostgreSQL is down for a key this gateway "
            "does not remember (DATABASE_UNAVAILABLE)",
            retry=True,
        ),
        **COMMON_ERRORS,
        **AUTHENTICATED,
    },
)
async def execute(
    request: Request,
    settings: SettingsDep,
    clock: ClockDep,
    commands: CommandsDep,
    submissions: SubmissionsDep,
    read_side: ReadSideDep,
    caller: CallerDep,
    gateway: GatewayDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Makes a retry safe: the same key and body return the same order.",
            # Stated here; idempotent_order_id checks it, with its own code (400).
            json_schema_extra={"pattern": IDEMPOTENCY_KEY_PATTERN},
        ),
    ] = None,
) -> JSONResponse:
    """Submit an order; answers once the command is durably on the log."""
    # Admitted, a submission has the time the produce timeout gives it.
    async with gateway.turns.turn():
        order = parse_order_request(await read_body(request, settings.max_body_bytes))
        if order.expired_by(clock()):
            raise ApiError(422, "INVALID_EXPIRY", "expiresAt: already in the past", "expiresAt")
        if order.too_far_ahead(clock()):
            raise ApiError(
                422,
                "INVALID_EXPIRY",
                f"expiresAt: more than {MAX_EXPIRY.days} days ahead ({order.expires_at})",
                "expiresAt",
            )
        spec = order.to_spec()
        digest = request_hash(spec)
        correlation = request_correlation(request)
        account = caller.account
        if idempotency_key is None:
            command = submit_order(uuid.uuid4(), spec, digest, None, account, clock, correlation)
            await write_submission(command, commands, submissions)
            return accepted(command.order_id, "pending")
        order_id = idempotent_order_id(gateway.order_secret, account, idempotency_key)
        async with submissions.hold(account, idempotency_key):
            prior_hash = await earlier_submission(
                account, idempotency_key, order_id, submissions, read_side
            )
            if prior_hash is None:
                command = submit_order(
                    order_id, spec, digest, idempotency_key, account, clock, correlation
                )
                await write_submission(command, commands, submissions)
                return accepted(order_id, "pending")
        if prior_hash != digest:
            raise ApiError(
                409,
                "IDEMPOTENCY_CONFLICT",
                "this Idempotency-Key was used with a different request body",
                "Idempotency-Key",
            )
        # A retry the gateway recognises is answered while the database is down too.
        return accepted(order_id, await read_side.status(order_id))


def submit_order(
    order_id: uuid.UUID,
    spec: OrderSpec,
    digest: str,
    key: str | None,
    account: str,
    clock: Clock,
    correlation_id: uuid.UUID,
) -> SubmitOrder:
    """Return the command that submits ``spec`` as order ``order_id``."""
    return SubmitOrder(
        message_id=uuid.uuid4(),
        order_id=order_id,
        seq=0,
        occurred_at=clock(),
        correlation_id=correlation_id,
        spec=spec,
        idempotency_key=key,
        request_hash=digest,
        account=account,
    )


async def write_submission(
    command: SubmitOrder, commands: CommandWriter, submissions: Submissions
) -> None:
    """Write a submission to the log, then remember it for reads of one's own writes."""
    await commands.write(command)
    submissions.record_submission(command)
    ORDERS_SUBMITTED.labels(command.spec.order_type).inc()


def accepted(order_id: uuid.UUID, status: str) -> JSONResponse:
    return JSONResponse(
        status_code=202,
        content={"orderId": str(order_id), "status": status},
        headers={"Location": order_location(order_id)},
    )


def order_location(order_id: uuid.UUID) -> str:
    """Return the path where an order is read."""
    return f"/api/orders/{order_id}"


async def earlier_submission(
    account: str, key: str, order_id: uuid.UUID, submissions: Submissions, read_side: ReadSide
) -> str | None:
    """Return the request digest ``account`` first submitted under ``key``, if it was used
    before."""
    seen = submissions.submission(account, key)
    if seen is not None:
        return seen.request_hash
    return await read_side.request_hash(order_id)


@router.get("/api/orders/execute", include_in_schema=False)
async def execute_over_plain_http() -> None:
    """Answer a GET that is no WebSocket handshake: over HTTP, this address only takes POST."""
    # Without this route it would read as the order whose id is "execute" (422).
    raise ApiError(
        405,
        "METHOD_NOT_ALLOWED",
        "GET here opens an order's WebSocket (Upgrade: websocket); over HTTP only POST",
        None,
        None,
        {"Allow": "POST"},
    )


@router.get(
    "/api/orders/{order_id}",
    response_model=None,
    responses={
        200: {"model": OrderView, "description": "The order"},
        **NOT_FOUND,
        **INVALID,
        **DATABASE,
        **COMMON_ERRORS,
        **AUTHENTICATED,
    },
)
async def get_order(
    order_id: uuid.UUID,
    read_side: ReadSideDep,
    submissions: SubmissionsDep,
    caller: CallerDep,
    tail: TailDep,
    settings: SettingsDep,
) -> Any:
    """Return an order's current state."""
    for attempt in range(2):
        state = await read_side.state(order_id)
        if state is not None:
            if not caller.owns(state.account):
                raise order_not_found(order_id)
            return order_view(state)
        command = submissions.submitted(order_id)
        if command is not None and caller.owns(command.account):
            # Written to the log but not accepted by the engine yet: read your writes.
            return submitted_view(command)
        if attempt == 0 and not await tail.catch_up(settings.unknown_order_grace_s):
            break
    raise order_not_found(order_id)


@router.get(
    "/api/orders/{order_id}/events",
    response_model=None,
    responses={
        200: {"model": OrderEvents, "description": "Every event of the order, in order"},
        **NOT_FOUND,
        **INVALID,
        **DATABASE,
        **COMMON_ERRORS,
        **AUTHENTICATED,
    },
)
async def get_events(
    order_id: uuid.UUID,
    read_side: ReadSideDep,
    caller: CallerDep,
    tail: TailDep,
    settings: SettingsDep,
) -> Any:
    """Return an order's audit trail: every event, in order, with its log position."""
    history = await read_side.history(order_id)
    if not history and await tail.catch_up(settings.unknown_order_grace_s):
        history = await read_side.history(order_id)
    if not history or not caller.owns(placed_by(history)):
        raise order_not_found(order_id)
    return {
        "orderId": str(order_id),
        "events": [event_view(item.event, item.position) for item in history],
    }


@router.post(
    "/api/orders/{order_id}/cancel",
    response_model=None,
    responses={
        200: {"model": CancelOutcome, "description": "Cancelled: the cancellation is on the log"},
        202: located(
            CancelOutcome,
            "Requested: the engine has not answered in time; the order is still armed",
        ),
        **NOT_FOUND,
        409: error("Not armed: executing or done (error.status says which): NOT_CANCELLABLE"),
        **INVALID,
        503: error(
            "The broker did not take the cancel (BROKER_UNAVAILABLE) or the read models are "
            "unavailable (DATABASE_UNAVAILABLE)",
            retry=True,
        ),
        **COMMON_ERRORS,
        **AUTHENTICATED,
    },
)
async def cancel(
    order_id: uuid.UUID,
    settings: SettingsDep,
    clock: ClockDep,
    commands: CommandsDep,
    read_side: ReadSideDep,
    recent: RecentDep,
    caller: CallerDep,
    tail: TailDep,
) -> JSONResponse:
    """Cancel an armed limit or sniper order; answers once the outcome is on the log."""
    if not await read_side.exists(order_id):
        await tail.catch_up(settings.unknown_order_grace_s)
    state = await armed_state(order_id, read_side, settings.unknown_order_grace_s, caller)
    async with recent.subscribe(order_id, settings.stream_buffer) as live:
        command = CancelOrder(
            message_id=uuid.uuid4(),
            order_id=order_id,
            seq=state.seq,
            occurred_at=clock(),
            correlation_id=state.correlation_id,
        )
        await commands.write(command)
        # The first event after the armed one decides: the cancel's, or a trigger's
        # or expiry's that reached the engine first.
        outcome = await next_event(order_id, state.seq, live, read_side, settings.cancel_timeout_s)
    if outcome is None:
        return JSONResponse(
            status_code=202,
            content={"orderId": str(order_id), "status": "armed", "cancelRequested": True},
            headers={"Location": order_location(order_id)},
        )
    if outcome.status != "cancelled":
        raise not_cancellable(order_id, outcome.status)
    return JSONResponse(content={"orderId": str(order_id), "status": "cancelled"})


def order_not_found(order_id: uuid.UUID) -> ApiError:
    return ApiError(404, "ORDER_NOT_FOUND", f"order {order_id} is unknown", "orderId")


def not_cancellable(order_id: uuid.UUID, status: str) -> ApiError:
    return ApiError(
        409,
        "NOT_CANCELLABLE",
        f"order {order_id} is {status}; only an armed order can be cancelled",
        None,
        {"status": status},
    )


def placed_by(history: list[Logged]) -> str | None:
    """Return the account that placed an order, from its history (its acceptance)."""
    first = history[0].event
    return first.account if isinstance(first, AcceptedEvent) else None


async def armed_state(
    order_id: uuid.UUID, read_side: ReadSide, grace_s: float, caller: Caller
) -> OrderState:
    """Return the order's state once it is armed, or raise 404/409 (404: another
    account's order)."""
    deadline = asyncio.get_running_loop().time() + grace_s
    while True:
        state = await read_side.state(order_id)
        if state is None and not await read_side.exists(order_id):
            raise order_not_found(order_id)
        submitted = read_side.submitted_by(order_id) if state is None else state.account
        if not caller.owns(submitted):
            raise order_not_found(order_id)
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
    order_id: uuid.UUID,
    after: int,
    live: Mailbox[Logged],
    read_side: ReadSide,
    timeout_s: float,
) -> Event | None:
    """Return the order's event ``after + 1`` once known (None after a timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (left := deadline - loop.time()) > 0:
        # The command is written: with the database down, the tail alone tells the outcome.
        with contextlib.suppress(DatabaseUnavailable):
            for known in await read_side.history(order_id):
                if known.event.seq == after + 1:
                    return known.event
        with contextlib.suppress(TimeoutError):
            item = await asyncio.wait_for(live.queue.get(), timeout=min(1.0, left))
            if item.event.seq == after + 1:
                return item.event
    return None
