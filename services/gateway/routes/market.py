"""The market: the venues' pools and recent prices (from the market topic), venue quotes
and the route the engine would take, the armed limit orders of a pair, and analytics."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import ValidationError

from adapters.venues.quoting import quote_all
from domain.numbers import DECIMAL_PATTERN
from domain.pricing import market_of
from domain.routing import NoRoute, choose_route
from services.gateway import errors
from services.gateway.deps import (
    CallerDep,
    MarketDep,
    ReadSideDep,
    SettingsDep,
    VenuesDep,
    admin,
)
from services.gateway.responses import (
    ADMIN_ONLY,
    AUTHENTICATED,
    COMMON_ERRORS,
    DATABASE,
    INVALID,
    Analytics,
    Ladder,
    MarketPools,
    PriceHistory,
    Quotes,
)
from services.gateway.schemas import TOKEN_PATTERN, TradeRequest, camelize

router = APIRouter()

# Stated in the OpenAPI document; the checks themselves are TradeRequest's, with its codes.
_TOKEN: dict[str, Any] = {"pattern": TOKEN_PATTERN}
_AMOUNT: dict[str, Any] = {"pattern": DECIMAL_PATTERN, "maxLength": 35}


@router.get(
    "/api/quotes",
    response_model=None,
    responses={
        200: {"model": Quotes, "description": "Every venue's quote and the route"},
        **INVALID,
        **COMMON_ERRORS,
        **AUTHENTICATED,
    },
)
async def get_quotes(
    token_in: Annotated[
        str, Query(alias="tokenIn", description="Symbol or mint.", json_schema_extra=_TOKEN)
    ],
    token_out: Annotated[
        str, Query(alias="tokenOut", description="Symbol or mint.", json_schema_extra=_TOKEN)
    ],
    amount: Annotated[
        str,
        Query(description="Amount of tokenIn.", json_schema_extra=_AMOUNT),
    ],
    settings: SettingsDep,
    venues: VenuesDep,
) -> Any:
    """Quote every venue now and show the route the engine would take."""
    try:
        pair = TradeRequest.model_validate(
            {"tokenIn": token_in, "tokenOut": token_out, "amount": amount}
        )
    except ValidationError as exc:
        raise errors.from_validation(exc.errors()) from None
    quotes = await quote_all(
        venues, pair.token_in, pair.token_out, pair.amount, settings.venue_timeout_s
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


# Admin only: the figures are over every account's orders (venue fill rates, volumes).
@router.get(
    "/api/analytics",
    response_model=None,
    dependencies=[Depends(admin)],
    responses={
        200: {"model": Analytics, "description": "Figures per venue and per pair"},
        **DATABASE,
        **COMMON_ERRORS,
        **AUTHENTICATED,
        **ADMIN_ONLY,
    },
)
async def get_analytics(read_side: ReadSideDep) -> Any:
    """Return execution figures per venue and per pair over every account's orders
    (admin only; see docs/architecture.md)."""
    return await read_side.analytics()


def plain(number: Decimal) -> str:
    """Return a decimal as JSON text without an exponent (``1.5E-7`` is ``0.00000015``)."""
    return format(number.normalize(), "f")


@router.get(
    "/api/market",
    response_model=None,
    responses={
        200: {"model": MarketPools, "description": "The venues, their pools and the launches"},
        **COMMON_ERRORS,
        **AUTHENTICATED,
    },
)
async def get_market(market: MarketDep, venues: VenuesDep) -> Any:
    """Return every venue's pools as the market topic last said, the tokens they list,
    and the tokens that launched (newest first)."""
    book = market.book
    return {
        "venues": [venue.name for venue in venues],
        "tokens": book.tokens(),
        "pools": [
            {
                "venue": pool.venue,
                "poolId": pool.pool_id,
                "base": pool.base,
                "quote": pool.quote,
                "price": plain(pool.price),
                "liquidityUsd": plain(pool.liquidity_usd),
                "seq": pool.seq,
                "updatedAt": pool.occurred_at.isoformat(),
            }
            for pool in book.pools()
        ],
        "launches": [
            {
                "token": launch.token,
                "venue": launch.venue,
                "poolId": launch.pool_id,
                "quote": launch.quote,
                "price": plain(launch.price),
                "launchedAt": launch.at.isoformat(),
            }
            for launch in book.launches()
        ],
    }


PairToken = Annotated[
    str,
    Query(
        description="Symbol of one token of the pair (either way round; any case).",
        pattern=TOKEN_PATTERN,
    ),
]


@router.get(
    "/api/market/prices",
    response_model=None,
    responses={
        200: {"model": PriceHistory, "description": "The pair's recent prices per venue"},
        **INVALID,
        **COMMON_ERRORS,
        **AUTHENTICATED,
    },
)
async def get_prices(
    base: PairToken,
    quote: PairToken,
    market: MarketDep,
) -> Any:
    """Return the recent prices (quote per base, oldest first) of the pair on each venue
    that lists it, as the market topic published them; none when no venue does."""
    pools = market.book.prices(base.upper(), quote.upper())
    first = pools[0][0] if pools else None
    return {
        "base": first.base if first else None,
        "quote": first.quote if first else None,
        "series": [
            {
                "venue": pool.venue,
                "poolId": pool.pool_id,
                "points": [
                    {"at": p.at.isoformat(), "price": plain(p.price), "seq": p.seq} for p in points
                ],
            }
            for pool, points in pools
        ],
    }


@router.get(
    "/api/market/ladder",
    response_model=None,
    responses={
        200: {"model": Ladder, "description": "The pair's armed limit orders by price"},
        **INVALID,
        **DATABASE,
        **COMMON_ERRORS,
        **AUTHENTICATED,
    },
)
async def get_ladder(
    base: PairToken,
    quote: PairToken,
    read_side: ReadSideDep,
    caller: CallerDep,
) -> Any:
    """Return the armed limit orders of the pair by side and limit price, highest first:
    the caller's own (an admin's: every account's), as the read model has them."""
    pair = market_of(base.upper(), quote.upper())
    levels = await read_side.limit_levels(
        pair.base, pair.quote, None if caller.admin else caller.account
    )
    return {
        "base": pair.base,
        "quote": pair.quote,
        "levels": [
            {
                "side": "sell" if level.token_in == pair.base else "buy",
                "price": plain(level.limit_price),
                "orders": level.orders,
                "amount": plain(level.amount),
                "token": level.token_in,
            }
            for level in levels
        ],
    }
