"""The gateway's request body and the JSON views it answers with (camelCase)."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from events.messages import Envelope, Event, OrderSpec
from services.domain.lifecycle import OrderState
from services.domain.tokens import find_token

MAX_AMOUNT = Decimal("1e15")


class SwapRequest(BaseModel):
    """A pair and an amount of the token sold: what orders and quotes have in common."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    token_in: str = Field(alias="tokenIn", description="Symbol or mint of the token sold.")
    token_out: str = Field(alias="tokenOut", description="Symbol or mint of the token bought.")
    amount: Decimal = Field(description="Amount of tokenIn, as a decimal string or number.")

    @field_validator("token_in", "token_out", mode="before")
    @classmethod
    def _listed_token(cls, value: Any) -> str:
        token = find_token(value) if isinstance(value, str) else None
        if token is None:
            raise PydanticCustomError(
                "unknown_token", "token {value!r} is not listed", {"value": value}
            )
        return token.symbol

    @field_validator("amount", mode="before")
    @classmethod
    def _decimal_amount(cls, value: Any) -> Decimal:
        # Floats are turned into their shortest repr first, so 1.1 means 1.1 and not
        # 1.100000000000000088817841970012523.
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise PydanticCustomError("invalid_amount", "amount must be a decimal number")
        try:
            amount = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
        except InvalidOperation:
            raise PydanticCustomError("invalid_amount", "amount must be a decimal number") from None
        if not amount.is_finite() or amount <= 0:
            raise PydanticCustomError("invalid_amount", "amount must be greater than zero")
        if amount > MAX_AMOUNT:
            raise PydanticCustomError("invalid_amount", "amount is too large")
        return amount

    @model_validator(mode="after")
    def _distinct_tokens(self) -> Self:
        if self.token_in == self.token_out:
            raise PydanticCustomError("same_token", "tokenIn and tokenOut must differ")
        return self


class ExecuteOrderRequest(SwapRequest):
    """Body of ``POST /api/orders/execute``."""

    type: Literal["market"] = Field(description="Order type; only market orders today.")
    slippage_bps: int = Field(
        default=50, alias="slippageBps", description="Tolerated slippage, 1..5000 basis points."
    )
    client_order_id: str | None = Field(default=None, alias="clientOrderId", max_length=64)

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> Any:
        if value != "market":
            raise PydanticCustomError(
                "unknown_order_type", "order type {value!r} is not supported", {"value": value}
            )
        return value

    @field_validator("slippage_bps", mode="before")
    @classmethod
    def _slippage_range(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5000:
            raise PydanticCustomError(
                "invalid_slippage", "slippageBps must be an integer from 1 to 5000"
            )
        return value

    def to_spec(self) -> OrderSpec:
        """Return the order as the engine receives it."""
        return OrderSpec(
            order_type=self.type,
            token_in=self.token_in,
            token_out=self.token_out,
            amount=self.amount,
            slippage_bps=self.slippage_bps,
            client_order_id=self.client_order_id,
        )


def request_hash(spec: OrderSpec) -> str:
    """Return a stable digest of what was asked, to tell a retry from a conflict."""
    canonical = spec.model_dump(mode="json")
    canonical["amount"] = str(spec.amount.normalize())
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def camel(name: str) -> str:
    """Return ``snake_case`` as ``camelCase``."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def camelize(value: Any) -> Any:
    """Return JSON-ready ``value`` with every dict key in camelCase."""
    if isinstance(value, dict):
        return {camel(k): camelize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camelize(v) for v in value]
    return value


_ENVELOPE_FIELDS = set(Envelope.model_fields) | {"type", "status"}


def event_view(event: Event, position: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the JSON a client sees for one order event."""
    view: dict[str, Any] = {
        "orderId": str(event.order_id),
        "seq": event.seq,
        "type": event.type,
        "status": event.status,
        "timestamp": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "eventId": str(event.message_id),
        "details": camelize(event.model_dump(mode="json", exclude=_ENVELOPE_FIELDS)),
    }
    if position is not None:
        view["position"] = position
    return view


def order_view(state: OrderState) -> dict[str, Any]:
    """Return the JSON a client sees for an order's current state."""
    data = state.model_dump(mode="json", exclude={"spec", "last_event_id", "correlation_id"})
    spec = state.spec.model_dump(mode="json")
    spec["type"] = spec.pop("order_type")
    return {"orderId": data.pop("order_id"), **camelize(spec), **camelize(data)}
