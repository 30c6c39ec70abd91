"""What the gateway answers, as models: the OpenAPI document describes every answer with them.

The routes build their JSON with the views of ``schemas.py``; these models state
its shape for clients. The suite checks that the answers match (schemathesis over
the OpenAPI document, in ``tests/integration/test_api_contract.py``). Decimals are
strings, times ISO 8601 strings, ids UUIDs.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from events.messages import Status

# Each view may gain fields; clients should ignore what they do not know.
_OPEN = ConfigDict(extra="allow")


class ErrorDetail(BaseModel):
    """What went wrong: a machine-readable code, a message, and the field to fix."""

    model_config = _OPEN

    code: str = Field(description="Machine-readable, e.g. INVALID_AMOUNT (see the README).")
    message: str = Field(description="For a person; it shows the value refused.")
    field: str | None = Field(description="The request field, parameter or header to fix.")


class ErrorEnvelope(BaseModel):
    """Every error answer, 4xx and 5xx alike."""

    error: ErrorDetail


class OrderAccepted(BaseModel):
    """A submission on the log (or a retry of one, with the order's current status)."""

    order_id: uuid.UUID = Field(alias="orderId")
    status: Status


class CancelOutcome(BaseModel):
    """The outcome of a cancel: cancelled (200), or requested and still armed (202)."""

    order_id: uuid.UUID = Field(alias="orderId")
    status: Literal["cancelled", "armed"]
    cancel_requested: bool | None = Field(default=None, alias="cancelRequested")


class OrderView(BaseModel):
    """An order as asked, and where it stands."""

    model_config = _OPEN

    order_id: uuid.UUID = Field(alias="orderId")
    type: Literal["market", "limit", "sniper"]
    token_in: str = Field(alias="tokenIn")
    token_out: str = Field(alias="tokenOut")
    amount: str
    slippage_bps: int = Field(alias="slippageBps")
    client_order_id: str | None = Field(default=None, alias="clientOrderId")
    limit_price: str | None = Field(default=None, alias="limitPrice")
    max_price: str | None = Field(default=None, alias="maxPrice")
    expires_at: str | None = Field(default=None, alias="expiresAt")
    status: Status
    seq: int | None = None
    venue: str | None = None
    amount_out: str | None = Field(default=None, alias="amountOut")
    executed_price: str | None = Field(default=None, alias="executedPrice")
    tx_hash: str | None = Field(default=None, alias="txHash")
    failure_code: str | None = Field(default=None, alias="failureCode")
    failure_reason: str | None = Field(default=None, alias="failureReason")


class LogPosition(BaseModel):
    """Where an event is on the log."""

    topic: str
    partition: int
    offset: int


class EventView(BaseModel):
    """One order event, as the audit trail and the WebSockets send it."""

    order_id: uuid.UUID = Field(alias="orderId")
    seq: int
    type: str = Field(description="The event, e.g. OrderRouted.")
    status: Status
    timestamp: str = Field(description="ISO 8601, UTC.")
    event_id: uuid.UUID = Field(alias="eventId")
    details: dict[str, Any] = Field(description="The event's own fields, camelCase.")
    position: LogPosition | None = None


class OrderEvents(BaseModel):
    """An order's audit trail, oldest first."""

    order_id: uuid.UUID = Field(alias="orderId")
    events: list[EventView]


class OrderPage(BaseModel):
    """A page of orders, newest first."""

    orders: list[OrderView]
    next: str | None = Field(description="The `before` of the next page; null on the last.")


class QuoteView(BaseModel):
    """One venue's quote, or why it gave none."""

    model_config = _OPEN

    venue: str
    amount_out: str | None = Field(default=None, alias="amountOut")
    fee: str | None = None
    price: str | None = None
    latency_ms: int = Field(alias="latencyMs")
    error: str | None = None


class RouteView(BaseModel):
    """The venue the engine would choose, and why."""

    model_config = _OPEN

    venue: str
    expected_out: str = Field(alias="expectedOut")
    reason: str


class Quotes(BaseModel):
    """Every venue's quote now, and the route the engine would take (null: none)."""

    token_in: str = Field(alias="tokenIn")
    token_out: str = Field(alias="tokenOut")
    amount: str
    quotes: list[QuoteView]
    route: RouteView | None


class Analytics(BaseModel):
    """Execution figures per venue and per pair (docs/architecture.md#analytics)."""

    venues: list[dict[str, Any]]
    pairs: list[dict[str, Any]]


class HealthChecks(BaseModel):
    log: bool
    database: bool


class SocketCounts(BaseModel):
    firehose: int
    orders: int


class Health(BaseModel):
    """Whether the log and the read models are reachable (200 ok, 503 degraded)."""

    status: Literal["ok", "degraded"]
    checks: HealthChecks
    sockets: SocketCounts


class LaunchedPool(BaseModel):
    """The new pool."""

    model_config = _OPEN

    venue: str
    pool_id: str = Field(alias="poolId")
    base: str
    quote: str
    price: str
    liquidity_usd: str = Field(alias="liquidityUsd")


class PoolView(LaunchedPool):
    """One venue's pool as the market topic last said: price in quote per base."""

    seq: int = Field(description="The pool's message number on the market topic.")
    updated_at: str = Field(alias="updatedAt", description="ISO 8601, UTC.")


class LaunchView(BaseModel):
    """A token that launched, and the pool that listed it."""

    model_config = _OPEN

    token: str
    venue: str
    pool_id: str = Field(alias="poolId")
    quote: str
    price: str = Field(description="The price it launched at, in quote per token.")
    launched_at: str = Field(alias="launchedAt", description="ISO 8601, UTC.")


class MarketPools(BaseModel):
    """The market as the venues list it: every pool, the tokens they trade, the launches."""

    venues: list[str] = Field(description="The venues this gateway routes to.")
    tokens: list[str] = Field(description="Every token some pool lists, launched ones included.")
    pools: list[PoolView]
    launches: list[LaunchView] = Field(description="Newest first.")


class PricePointView(BaseModel):
    at: str = Field(description="ISO 8601, UTC.")
    price: str
    seq: int


class PriceSeries(BaseModel):
    """One pool's recent prices, oldest first."""

    venue: str
    pool_id: str = Field(alias="poolId")
    points: list[PricePointView]


class PriceHistory(BaseModel):
    """The recent prices of a pair on every venue that lists it (quote per base)."""

    base: str | None = Field(description="Null when no venue lists the pair.")
    quote: str | None
    series: list[PriceSeries]


class LadderLevel(BaseModel):
    """The armed limit orders at one price on one side: how many, how much they sell."""

    side: Literal["sell", "buy"] = Field(description="sell: they sell the base; buy: they buy it.")
    price: str = Field(description="The limit price, quote per base.")
    orders: int
    amount: str = Field(description="What they sell in all, in `token`.")
    token: str


class Ladder(BaseModel):
    """The armed limit orders of a pair (the caller's; an admin's: everyone's), by price."""

    base: str
    quote: str
    levels: list[LadderLevel] = Field(description="Highest price first.")


# Declared required, so a check of the answers fails when one is missing.
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer"},
    }
}
_LOCATION = {
    "Location": {
        "description": "Where to read the order.",
        "required": True,
        "schema": {"type": "string"},
    }
}


def error(description: str, *, retry: bool = False) -> dict[str, Any]:
    """Return an OpenAPI response in the error envelope."""
    answer: dict[str, Any] = {"model": ErrorEnvelope, "description": description}
    if retry:
        answer["headers"] = _RETRY_AFTER
    return answer


def located(model: type[BaseModel], description: str) -> dict[str, Any]:
    """Return an OpenAPI response whose ``Location`` header names the order."""
    return {"model": model, "description": description, "headers": _LOCATION}


# What any route may answer, whatever it does.
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    500: error("Unexpected error (it is logged): INTERNAL_ERROR"),
}
# What every route that takes an API key may answer (all but /health).
AUTHENTICATED: dict[int | str, dict[str, Any]] = {
    401: error("No API key, or a key nobody created: UNAUTHENTICATED"),
    429: error("The account is over its rate limit: RATE_LIMITED", retry=True),
}
ADMIN_ONLY: dict[int | str, dict[str, Any]] = {
    403: error("The key is not an admin's: FORBIDDEN"),
}
INVALID: dict[int | str, dict[str, Any]] = {
    422: error("A field or parameter is invalid; error.field names it")
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: error("Unknown order: ORDER_NOT_FOUND")}
DATABASE: dict[int | str, dict[str, Any]] = {
    503: error("The read models are unavailable: DATABASE_UNAVAILABLE", retry=True)
}
