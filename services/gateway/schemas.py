"""The gateway's request body and the JSON views it answers with (camelCase)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from adapters.venues.client import DEFAULT_VENUE_NAMES
from domain.lifecycle import OrderState
from domain.numbers import (
    DECIMAL_PATTERN,
    MAX_AMOUNT,
    MAX_LIQUIDITY_USD,
    MAX_PRICE,
    MIN_LIQUIDITY_USD,
    MIN_PRICE,
    NotADecimal,
    decimal_places,
    parse_decimal,
    shown,
)
from domain.tokens import TOKENS, decimals_of, find_token
from events.messages import Envelope, Event, OrderSpec, SubmitOrder

VENUES = DEFAULT_VENUE_NAMES
# Every name of a listed token: its symbol and its mint.
LISTED_NAMES: list[JsonValue] = [
    name for token in TOKENS.values() for name in (token.symbol, token.mint)
]
# A token that is not listed yet (a sniper's target) is named by its symbol.
NEW_SYMBOL_PATTERN = r"^[A-Za-z][A-Za-z0-9]{1,9}$"
_NEW_SYMBOL = re.compile(r"[A-Za-z][A-Za-z0-9]{1,9}")
# What names a token: its symbol (any case) or its mint.
TOKEN_PATTERN = r"^[A-Za-z0-9]{2,44}$"
# A client's own id of an order: printable ASCII, so every log and table stores it.
CLIENT_ORDER_ID_PATTERN = r"^[\x20-\x7E]{1,64}$"
_CLIENT_ORDER_ID = re.compile(r"[\x20-\x7E]{1,64}")
# How far ahead an armed order may expire.
MAX_EXPIRY = timedelta(days=365)


def _decimal_schema(description: str, example: str, *, nullable: bool = False) -> WithJsonSchema:
    text = {"type": "string", "pattern": DECIMAL_PATTERN, "maxLength": 35}
    schema: dict[str, Any] = {"anyOf": [text, {"type": "null"}]} if nullable else dict(text)
    return WithJsonSchema({**schema, "description": description, "examples": [example]})


def _listed_symbol(value: Any) -> str:
    """Return the symbol of a listed token named by symbol or mint, or raise a pydantic error."""
    token = find_token(value) if isinstance(value, str) else None
    if token is None:
        raise PydanticCustomError(
            "unknown_token", "token {value} is not listed", {"value": shown(value)}
        )
    return token.symbol


def _decimal(value: Any, name: str, *, maximum: Decimal, minimum: Decimal = Decimal(0)) -> Decimal:
    """Return ``value``, a JSON string holding a plain decimal, or raise a pydantic error."""
    if not isinstance(value, str):
        raise PydanticCustomError(
            f"invalid_{name}",
            '{name} must be a JSON string holding a decimal such as "1.5", not {value}',
            {"name": name, "value": shown(value)},
        )
    try:
        return parse_decimal(value, name, maximum=maximum, minimum=minimum)
    except NotADecimal as exc:
        raise PydanticCustomError(f"invalid_{name}", "{reason}", {"reason": str(exc)}) from None


Amount = Annotated[
    Decimal,
    _decimal_schema(
        "Amount of tokenIn: a decimal string, at most the token's decimals (SOL 9, BONK 5, "
        f"others 6) and at most {MAX_AMOUNT:f}.",
        "1.5",
    ),
]
Price = Annotated[
    Decimal,
    _decimal_schema(f"A decimal string from {MIN_PRICE:f} to {MAX_PRICE:f}.", "150.5"),
]


class TradeRequest(BaseModel):
    """A pair and an amount of the token sold: what orders and quotes have in common."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    token_in: str = Field(
        alias="tokenIn",
        description="Symbol or mint of the listed token sold: SOL, USDC, USDT, BONK, JUP or "
        "RAY. Symbols are case-insensitive ('sol' is SOL); the enum lists them as answered.",
        pattern=TOKEN_PATTERN,
        json_schema_extra={"enum": LISTED_NAMES},
    )
    token_out: str = Field(
        alias="tokenOut",
        description="Symbol (any case) or mint of the token bought; a sniper order may name "
        "a token that is not listed yet, by a symbol of 2 to 10 letters or digits.",
        pattern=TOKEN_PATTERN,
    )
    amount: Amount

    @field_validator("token_in", "token_out", mode="before")
    @classmethod
    def _listed_token(cls, value: Any, info: ValidationInfo) -> str:
        return _listed_symbol(value)

    @field_validator("amount", mode="before")
    @classmethod
    def _decimal_amount(cls, value: Any) -> Decimal:
        return _decimal(value, "amount", maximum=MAX_AMOUNT)

    @model_validator(mode="after")
    def _distinct_tokens(self) -> Self:
        if self.token_in == self.token_out:
            raise PydanticCustomError("same_token", "tokenIn and tokenOut must differ")
        return self

    @model_validator(mode="after")
    def _amount_in_base_units(self) -> Self:
        # Below a token's smallest unit there is nothing to swap.
        places = decimals_of(self.token_in)
        if decimal_places(self.amount) > places:
            raise PydanticCustomError(
                "amount_too_precise",
                "amount {amount} has more decimals than {token} has ({places})",
                {"amount": str(self.amount), "token": self.token_in, "places": places},
            )
        return self


class LaunchRequest(BaseModel):
    """Body of ``POST /api/simulate/launch``: list a new token in a new pool."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    symbol: str = Field(
        description="The new token's symbol: a letter, then 1 to 9 letters or digits.",
        pattern=NEW_SYMBOL_PATTERN,
    )
    venue: str = Field(
        default="raydium",
        description="The venue that opens the pool.",
        json_schema_extra={"enum": list(VENUES)},
    )
    quote: str = Field(
        default="SOL",
        description="Symbol or mint of the listed token it is paired with.",
        pattern=TOKEN_PATTERN,
    )
    price: Annotated[
        Decimal | None,
        _decimal_schema(
            f"Launch price in the quote token, {MIN_PRICE:f} to {MAX_PRICE:f} "
            "(default: the venue's).",
            "0.0001",
            nullable=True,
        ),
    ] = None
    liquidity_usd: Annotated[
        Decimal | None,
        _decimal_schema(
            f"USD value locked in the new pool, {MIN_LIQUIDITY_USD} to {MAX_LIQUIDITY_USD:f}.",
            "50000",
            nullable=True,
        ),
    ] = Field(default=None, alias="liquidityUsd")

    @field_validator("symbol", mode="before")
    @classmethod
    def _new_symbol(cls, value: Any) -> str:
        if not isinstance(value, str) or not _NEW_SYMBOL.fullmatch(value):
            raise PydanticCustomError(
                "invalid_symbol",
                "symbol must be a letter then 1 to 9 letters or digits, not {value}",
                {"value": shown(value)},
            )
        return value.upper()

    @field_validator("venue", mode="before")
    @classmethod
    def _known_venue(cls, value: Any) -> Any:
        if value not in VENUES:
            raise PydanticCustomError(
                "unknown_venue",
                "venue {value} is not one of {names}",
                {"value": shown(value), "names": ", ".join(VENUES)},
            )
        return value

    @field_validator("quote", mode="before")
    @classmethod
    def _listed_quote(cls, value: Any) -> str:
        return _listed_symbol(value)

    @field_validator("price", mode="before")
    @classmethod
    def _price(cls, value: Any) -> Decimal | None:
        if value is None:
            return None
        return _decimal(value, "price", minimum=MIN_PRICE, maximum=MAX_PRICE)

    @field_validator("liquidity_usd", mode="before")
    @classmethod
    def _liquidity(cls, value: Any) -> Decimal | None:
        if value is None:
            return None
        return _decimal(value, "liquidityUsd", minimum=MIN_LIQUIDITY_USD, maximum=MAX_LIQUIDITY_USD)


ORDER_TYPES = ("market", "limit", "sniper")


class ExecuteOrderRequest(TradeRequest):
    """Body of ``POST /api/orders/execute``: a market, limit or sniper order."""

    type: Literal["market", "limit", "sniper"] = Field(
        description="market: now; limit: when the price reaches limitPrice; "
        "sniper: when a pool for tokenOut launches."
    )
    slippage_bps: int = Field(
        default=50,
        alias="slippageBps",
        ge=1,
        le=5000,
        description="Tolerated slippage, 1..5000 basis points.",
    )
    client_order_id: str | None = Field(
        default=None,
        alias="clientOrderId",
        min_length=1,
        max_length=64,
        pattern=CLIENT_ORDER_ID_PATTERN,
        description="The client's own id for the order: 1 to 64 printable ASCII characters.",
    )
    limit_price: Annotated[
        Decimal | None,
        _decimal_schema(
            "limit only: the worst price accepted, in the pair's quote token per base "
            "token (SOL/USDC: USDC per SOL), whichever way the order trades; "
            f"{MIN_PRICE:f} to {MAX_PRICE:f}.",
            "150.5",
            nullable=True,
        ),
    ] = Field(default=None, alias="limitPrice")
    max_price: Annotated[
        Decimal | None,
        _decimal_schema(
            f"sniper only: the most it pays, in tokenIn per tokenOut; {MIN_PRICE:f} to "
            f"{MAX_PRICE:f}.",
            "0.001",
            nullable=True,
        ),
    ] = Field(default=None, alias="maxPrice")
    expires_at: AwareDatetime | None = Field(
        default=None,
        alias="expiresAt",
        description="limit and sniper: when an order still armed expires (ISO 8601 with zone, "
        f"at most {MAX_EXPIRY.days} days ahead).",
    )

    @field_validator("token_in", "token_out", mode="before")
    @classmethod
    def _listed_token(cls, value: Any, info: ValidationInfo) -> str:
        # Overrides the base check: tokenOut may name a token that is not listed yet,
        # which only a sniper may do (checked once the type is known).
        if (
            info.field_name == "token_out"
            and isinstance(value, str)
            and _NEW_SYMBOL.fullmatch(value)
        ):
            token = find_token(value)
            return token.symbol if token is not None else value.upper()
        return _listed_symbol(value)

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> Any:
        if value not in ORDER_TYPES:
            raise PydanticCustomError(
                "unknown_order_type",
                "order type {value} is not supported (market, limit, sniper)",
                {"value": shown(value)},
            )
        return value

    @field_validator("slippage_bps", mode="before")
    @classmethod
    def _slippage_range(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5000:
            raise PydanticCustomError(
                "invalid_slippage",
                "slippageBps must be an integer from 1 to 5000, not {value}",
                {"value": shown(value)},
            )
        return value

    @field_validator("client_order_id", mode="before")
    @classmethod
    def _printable_id(cls, value: Any) -> Any:
        if value is not None and (
            not isinstance(value, str) or not _CLIENT_ORDER_ID.fullmatch(value)
        ):
            raise PydanticCustomError(
                "invalid_client_order_id",
                "clientOrderId must be 1 to 64 printable ASCII characters, not {value}",
                {"value": shown(value)},
            )
        return value

    @field_validator("limit_price", mode="before")
    @classmethod
    def _limit_price(cls, value: Any) -> Decimal | None:
        if value is None:
            return None
        return _decimal(value, "limitPrice", minimum=MIN_PRICE, maximum=MAX_PRICE)

    @field_validator("max_price", mode="before")
    @classmethod
    def _max_price(cls, value: Any) -> Decimal | None:
        if value is None:
            return None
        return _decimal(value, "maxPrice", minimum=MIN_PRICE, maximum=MAX_PRICE)

    @field_validator("expires_at", mode="before")
    @classmethod
    def _expiry_text(cls, value: Any) -> Any:
        # pydantic would also take a number as seconds since 1970: only a string says which.
        if value is not None and not isinstance(value, str):
            raise PydanticCustomError(
                "invalid_expiry",
                "expiresAt must be an ISO 8601 string with a zone, not {value}",
                {"value": shown(value)},
            )
        return value

    @field_validator("expires_at", mode="after")
    @classmethod
    def _expiry_in_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        try:
            return value.astimezone(UTC)
        except OverflowError:
            # 0001-01-01T00:00:00+01:00 is before the first instant a datetime holds.
            raise PydanticCustomError(
                "invalid_expiry", "expiresAt is out of range: {value}", {"value": str(value)}
            ) from None

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
                "token {value} is not listed (only a sniper order may target a new token)",
                {"value": shown(self.token_out)},
            )
        return self

    def too_far_ahead(self, now: datetime) -> bool:
        """Tell whether ``expiresAt`` is further ahead of ``now`` than ``MAX_EXPIRY``."""
        return self.expires_at is not None and self.expires_at > now + MAX_EXPIRY

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
