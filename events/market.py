"""Messages on the market topic: what the venues' pools look like, as it changes.

The market service publishes one message per change of a pool, keyed by the
pool's id, each carrying the pool's whole state (price and liquidity). The topic
is compacted, so the last message of every pool is the market as it stands: a
reader that starts from the beginning knows every pool, including those created
while it was down.

Prices are in the pool's quote token per one base token (see
``domain.pricing.market_of``): SOL/USDC is priced in USDC per SOL.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, TypeAdapter, ValidationError

from events.messages import SCHEMA_VERSION, DecodeError, Frozen


class PoolState(Frozen):
    """Fields every market message carries: one pool of one venue, as of now."""

    message_id: uuid.UUID
    occurred_at: AwareDatetime
    schema_version: int = SCHEMA_VERSION
    venue: str
    pool_id: str  # "<venue>:<X>-<Y>", the message key
    base: str
    quote: str
    price: Decimal = Field(gt=0)  # quote per one base, at the pool's spot
    liquidity_usd: Decimal = Field(ge=0)
    # Per pool, +1 for every message: a reader keeps the highest it has seen.
    seq: int = Field(ge=1)


class PoolCreated(PoolState):
    """A new pool opened, e.g. the launch of a new token."""

    type: Literal["PoolCreated"] = "PoolCreated"
    # Set when the pool lists a token that was not tradable before (a launch).
    launched_token: str | None = None
    launched_decimals: int | None = None


class LiquidityAdded(PoolState):
    """Liquidity was added to a pool (``liquidity_usd`` is the new total)."""

    type: Literal["LiquidityAdded"] = "LiquidityAdded"
    added_usd: Decimal = Field(gt=0)


class PriceTick(PoolState):
    """A pool's price moved."""

    type: Literal["PriceTick"] = "PriceTick"


MarketEvent = PoolCreated | LiquidityAdded | PriceTick
MARKET_ADAPTER: TypeAdapter[MarketEvent] = TypeAdapter(
    Annotated[MarketEvent, Field(discriminator="type")]
)


def pool_key(pool_id: str) -> bytes:
    """Return the message key of a pool's messages (its id, which names the venue too)."""
    return pool_id.encode()


def encode_market(event: MarketEvent) -> bytes:
    """Serialise a market message (UTF-8 JSON, decimals as strings)."""
    return event.model_dump_json().encode()


def decode_market(raw: bytes | str) -> MarketEvent:
    """Decode bytes from the market topic, or raise ``DecodeError``."""
    try:
        return MARKET_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise DecodeError(str(exc)) from exc
