"""Simulation: list a new token in a new pool (``POST /api/simulate/launch``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from adapters.venues.interface import VenueError
from services.gateway.deps import SettingsDep, VenuesDep
from services.gateway.errors import ApiError
from services.gateway.intake import read_body, read_json_object, validated
from services.gateway.responses import (
    ADMIN_ONLY,
    AUTHENTICATED,
    COMMON_ERRORS,
    INVALID,
    LaunchedPool,
    error,
)
from services.gateway.schemas import LaunchRequest, camelize

router = APIRouter()

# Venue answers to a launch that mean "it exists already".
_LAUNCH_CONFLICTS = frozenset({"POOL_EXISTS", "TOKEN_EXISTS"})

_LAUNCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": LaunchRequest.model_json_schema(by_alias=True)}},
    }
}


@router.post(
    "/api/simulate/launch",
    status_code=201,
    openapi_extra=_LAUNCH_BODY,
    response_model=None,
    responses={
        201: {"model": LaunchedPool, "description": "The new pool"},
        400: error("Not a JSON object, or a key given twice: INVALID_JSON, DUPLICATE_KEY"),
        408: error("The body did not arrive in time: REQUEST_TIMEOUT"),
        409: error("Already listed: TOKEN_EXISTS, POOL_EXISTS"),
        413: error("Body over the limit: BODY_TOO_LARGE"),
        **INVALID,
        502: error("The venue did not answer"),
        **COMMON_ERRORS,
        **AUTHENTICATED,
        **ADMIN_ONLY,
    },
)
async def launch(request: Request, settings: SettingsDep, venues: VenuesDep) -> Any:
    """Simulation: launch a new token in a new pool, e.g. for a sniper to catch."""
    # Read like a submission: duplicate keys, lone surrogates and deep nesting are refused.
    body = validated(
        LaunchRequest, read_json_object(await read_body(request, settings.max_body_bytes))
    )
    venue = next((v for v in venues if v.name == body.venue), None)
    if venue is None:
        names = ", ".join(v.name for v in venues)
        raise ApiError(422, "UNKNOWN_VENUE", f"venue must be one of {names}", "venue")
    try:
        pool = await venue.launch(
            body.symbol, quote=body.quote, price=body.price, liquidity_usd=body.liquidity_usd
        )
    except VenueError as exc:
        status = 409 if exc.code in _LAUNCH_CONFLICTS else 502 if exc.transient else 422
        raise ApiError(status, exc.code, str(exc), "symbol") from exc
    answer: dict[str, Any] = camelize(pool.model_dump(mode="json"))
    return answer
