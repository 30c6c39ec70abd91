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

from domain.accounts import Caller
from domain.lifecycle import OrderState
from events.messages import CancelOrder, Event, OrderAccepted, OrderSpec, SubmitOrder
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
)
from services.gateway.errors import ApiError, DatabaseUnavailable
from services.gateway.intake import idempotent_order_id, parse_order_request, read_body
from services.gateway.mailbox import Mailbox
from services.gateway.read_side import ReadSide
from services.gateway.schemas import (
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
    settings: SettingsDep,
    clock: ClockDep,
    commands: CommandsDep,
    submissions: SubmissionsDep,
    read_side: ReadSideDep,
    caller: CallerDep,
    gateway: GatewayDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Submit an order; answers once the command is durably on the log."""
    order = parse_order_request(await read_body(request, settings.max_body_bytes))
    if order.expired_by(clock()):
        raise ApiError(422, "INVALID_EXPIRY", "expiresAt: already in the past", "expiresAt")
    spec = order.to_spec()
    digest = request_hash(spec)
    account = caller.account
    if idempotency_key is None:
        command = submit_order(uuid.uuid4(), spec, digest, None, account, clock)
        await write_submission(command, commands, submissions)
        return accepted(command.order_id, "pending")
    order_id = idempotent_order_id(gateway.order_secret, account, idempotency_key)
    async with submissions.hold(account, idempotency_key):
        prior_hash = await earlier_submission(
            account, idempotency_key, order_id, submissions, read_side
        )
        if prior_hash is None:
            command = submit_order(order_id, spec, digest, idempotency_key, account, clock)
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
) -> SubmitOrder:
    """Return the command that submits ``spec`` as order ``order_id``."""
    return SubmitOrder(
        message_id=uuid.uuid4(),
        order_id=order_id,
        seq=0,
        occurred_at=clock(),
        correlation_id=uuid.uuid4(),
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


def accepted(order_id: uuid.UUID, status: str) -> JSONResponse:
    return JSONResponse(status_code=202, content={"orderId": str(order_id), "status": status})


async def earlier_submission(
    account: str, key: str, order_id: uuid.UUID, submissions: Submissions, read_side: ReadSide
) -> str | None:
    """Return the request digest ``account`` first submitted under ``key``, if it was used
    before."""
    seen = submissions.submission(account, key)
    if seen is not None:
        return seen.request_hash
    return await read_side.request_hash(order_id)


@router.get("/api/orders/{order_id}")
async def get_order(
    order_id: uuid.UUID, read_side: ReadSideDep, submissions: SubmissionsDep, caller: CallerDep
) -> dict[str, Any]:
    """Return an order's current state."""
    state = await read_side.state(order_id)
    if state is not None:
        if not caller.owns(state.account):
            raise order_not_found(order_id)
        return order_view(state)
    command = submissions.submitted(order_id)
    if command is not None and caller.owns(command.account):
        # Written to the log but not accepted by the engine yet: read your writes.
        return submitted_view(command)
    raise order_not_found(order_id)


@router.get("/api/orders/{order_id}/events")
async def get_events(
    order_id: uuid.UUID, read_side: ReadSideDep, caller: CallerDep
) -> dict[str, Any]:
    """Return an order's audit trail: every event, in order, with its log position."""
    history = await read_side.history(order_id)
    if not history or not caller.owns(placed_by(history)):
        raise order_not_found(order_id)
    return {
        "orderId": str(order_id),
        "events": [event_view(item.event, item.position) for item in history],
    }


@router.post(
    "/api/orders/{order_id}/cancel",
    responses={
        404: {"description": "Unknown order"},
        409: {"description": "Not armed: already executing or done (error.status says)"},
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
) -> JSONResponse:
    """Cancel an armed limit or sniper order; answers once the outcome is on the log."""
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
    return first.account if isinstance(first, OrderAccepted) else None


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
