"""The gateway's request body and the JSON views it answers with (camelCase)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from domain.lifecycle import OrderState
from domain.tokens import find_token
from events.messages import Envelope, Event, OrderSpec, SubmitOrder

MAX_AMOUNT = Decimal("1e15")
# A token that is not listed yet (a sniper's target) is named by its symbol.
_NEW_SYMBOL = re.compile(r"^[A-Za-z][A-Za-z0-9]{1,9}$")


def _listed_symbol(value: Any) -> str:
    """Return the symbol of a listed token named by symbol or mint, or raise a pydantic error."""
    token = find_token(value) if isinstance(value, str) else None
    if token is None:
        raise PydanticCustomError(
            "unknown_token", "token {value!r} is not listed", {"value": value}
        )
    return token.symbol


def _positive_decimal(value: Any, name: str) -> Decimal:
    """Return ``value`` as a positive finite decimal, or raise a pydantic error about ``name``."""
    # Floats are turned into their shortest repr first, so 1.1 means 1.1 and not
    # 1.100000000000000088817841970012523.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PydanticCustomError(f"invalid_{name}", f"{name} must be a decimal number")
    try:
        number = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise PydanticCustomError(f"invalid_{name}", f"{name} must be a decimal number") from None
    if not number.is_finite() or number <= 0:
        raise PydanticCustomError(f"invalid_{name}", f"{name} must be greater than zero")
    if number > MAX_AMOUNT:
        raise PydanticCustomError(f"invalid_{name}", f"{name} is too large")
    return number


class TradeRequest(BaseModel):
    """A pair and an amount of the token sold: what orders and quotes have in common."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    token_in: str = Field(alias="tokenIn", description="Symbol or mint of the token sold.")
    token_out: str = Field(alias="tokenOut", description="Symbol or mint of the token bought.")
    amount: Decimal = Field(description="Amount of tokenIn, as a decimal string or number.")

    @field_validator("token_in", "token_out", mode="before")
    @classmethod
    def _listed_token(cls, value: Any, info: ValidationInfo) -> str:
        return _listed_symbol(value)

    @field_validator("amount", mode="before")
    @classmethod
    def _decimal_amount(cls, value: Any) -> Decimal:
        return _positive_decimal(value, "amount")

    @model_validator(mode="after")
    def _distinct_tokens(self) -> Self:
        if self.token_in == self.token_out:
            raise PydanticCustomError("same_token", "tokenIn and tokenOut must differ")
        return self


class LaunchRequest(BaseModel):
    """Body of ``POST /api/simulate/launch``: list a new token in a new pool."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    symbol: str = Field(description="The new token's symbol, 2 to 10 letters or digits.")
    venue: str = Field(default="raydium", description="The venue that opens the pool.")
    quote: str = Field(default="SOL", description="The token it is paired with.")
    price: Decimal | None = Field(
        default=None, description="Launch price in the quote token (default: the venue's)."
    )
    liquidity_usd: Decimal | None = Field(
        default=None, alias="liquidityUsd", description="USD value locked in the new pool."
    )

    @field_validator("symbol", mode="before")
    @classmethod
    def _new_symbol(cls, value: Any) -> str:
        if not isinstance(value, str) or not _NEW_SYMBOL.match(value):
            raise PydanticCustomError(
                "invalid_symbol", "symbol must be 2 to 10 letters or digits, starting with a letter"
            )
        return value.upper()

    @field_validator("price", mode="before")
    @classmethod
    def _price(cls, value: Any) -> Decimal | None:
        return None if value is None else _positive_decimal(value, "price")

    @field_validator("liquidity_usd", mode="before")
    @classmethod
    def _liquidity(cls, value: Any) -> Decimal | None:
        return None if value is None else _positive_decimal(value, "liquidityUsd")


ORDER_TYPES = ("market", "limit", "sniper")


class ExecuteOrderRequest(TradeRequest):
    """Body of ``POST /api/orders/execute``: a market, limit or sniper order."""

    type: Literal["market", "limit", "sniper"] = Field(
        description="market: now; limit: when the price reaches limitPrice; "
        "sniper: when a pool for tokenOut launches."
    )
    slippage_bps: int = Field(
        default=50, alias="slippageBps", description="Tolerated slippage, 1..5000 basis points."
    )
    client_order_id: str | None = Field(default=None, alias="clientOrderId", max_length=64)
    limit_price: Decimal | None = Field(
        default=None,
        alias="limitPrice",
        description="limit only: the worst price accepted, in the pair's quote token per base "
        "token (SOL/USDC: USDC per SOL), whichever way the order trades.",
    )
    max_price: Decimal | None = Field(
        default=None,
        alias="maxPrice",
        description="sniper only: the most it pays, in tokenIn per tokenOut.",
    )
    expires_at: AwareDatetime | None = Field(
        default=None,
        alias="expiresAt",
        description="limit and sniper: when an order still armed expires (ISO 8601 with zone).",
    )

    @field_validator("token_in", "token_out", mode="before")
    @classmethod
    def _listed_token(cls, value: Any, info: ValidationInfo) -> str:
        # Overrides the base check: tokenOut may name a token that is not listed yet,
        # which only a sniper may do (checked once the type is known).
        if info.field_name == "token_out" and isinstance(value, str) and _NEW_SYMBOL.match(value):
            token = find_token(value)
            return token.symbol if token is not None else value.upper()
        return _listed_symbol(value)

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> Any:
        if value not in ORDER_TYPES:
            raise PydanticCustomError(
                "unknown_order_type",
                "order type {value!r} is not supported (market, limit, sniper)",
                {"value": value},
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

    @field_validator("limit_price", mode="before")
    @classmethod
    def _limit_price(cls, value: Any) -> Decimal | None:
        return None if value is None else _positive_decimal(value, "limitPrice")

    @field_validator("max_price", mode="before")
    @classmethod
    def _max_price(cls, value: Any) -> Decimal | None:
        return None if value is None else _positive_decimal(value, "maxPrice")

    @model_validator(mode="after")
    def _fields_of_its_type(self) -> Self:
        if self.type == "limit" and self.limit_price is None:
            raise PydanticCustomError("missing_limit_price", "limitPrice: a limit order needs it")
        if self.type != "limit" and self.limit_price is not None:
            raise PydanticCustomError(
                "limit_price_not_allowed", "limitPrice: only for limit orders"
            )
        if self.type != "sniper" and self.max_price is not None:
            raise PydanticCustomError("max_price_not_allowed", "maxPrice: only for sniper orders")
        if self.type == "market" and self.expires_at is not None:
            raise PydanticCustomError(
                "expires_at_not_allowed", "expiresAt: only for limit and sniper orders"
            )
        if self.type != "sniper" and find_token(self.token_out) is None:
            raise PydanticCustomError(
                "unlisted_token",
                "token {value!r} is not listed (only a sniper order may target a new token)",
                {"value": self.token_out},
            )
        return self

    def expired_by(self, now: datetime) -> bool:
        """Tell whether ``expiresAt`` is already past at ``now``."""
        return self.expires_at is not None and self.expires_at <= now

    def to_spec(self) -> OrderSpec:
        """Return the order as the engine receives it."""
        return OrderSpec(
            order_type=self.type,
            token_in=self.token_in,
            token_out=self.token_out,
            amount=self.amount,
            slippage_bps=self.slippage_bps,
            client_order_id=self.client_order_id,
            limit_price=self.limit_price,
            max_price=self.max_price,
            expires_at=self.expires_at,
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
    return {"orderId": data.pop("order_id"), **spec_view(state.spec), **camelize(data)}


def spec_view(spec: OrderSpec) -> dict[str, Any]:
    """Return what was asked, as the client wrote it (``type``, camelCase)."""
    data = spec.model_dump(mode="json")
    data["type"] = data.pop("order_type")
    return dict(camelize(data))


def submitted_view(command: SubmitOrder) -> dict[str, Any]:
    """Return an order the engine has not accepted yet: its command is all there is."""
    return {"orderId": str(command.order_id), **spec_view(command.spec), "status": "pending"}
