"""The market as the engine sees it: venue quotes and the route it would take, and analytics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import ValidationError

from adapters.venues.quoting import quote_all
from domain.numbers import DECIMAL_PATTERN
from domain.routing import NoRoute, choose_route
from services.gateway import errors
from services.gateway.deps import ReadSideDep, SettingsDep, VenuesDep, admin
from services.gateway.responses import (
    ADMIN_ONLY,
    AUTHENTICATED,
    COMMON_ERRORS,
    DATABASE,
    INVALID,
    Analytics,
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
