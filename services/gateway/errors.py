"""Errors as values at the API boundary: ``{"error": {"code", "message", "field"}}``."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

# pydantic error types -> our machine-readable codes.
_CODES = {
    "unknown_order_type": "UNKNOWN_ORDER_TYPE",
    "unknown_token": "UNKNOWN_TOKEN",
    "same_token": "SAME_TOKEN",
    "invalid_amount": "INVALID_AMOUNT",
    "invalid_slippage": "INVALID_SLIPPAGE",
    "missing": "MISSING_FIELD",
    "extra_forbidden": "UNKNOWN_FIELD",
    "model_attributes_type": "INVALID_BODY",
    "model_type": "INVALID_BODY",
    "string_type": "INVALID_FIELD",
    "string_too_long": "INVALID_FIELD",
    "uuid_parsing": "INVALID_ORDER_ID",
    "invalid_limitPrice": "INVALID_PRICE",
    "invalid_maxPrice": "INVALID_PRICE",
    "missing_limit_price": "MISSING_FIELD",
    "limit_price_not_allowed": "INVALID_FIELD",
    "max_price_not_allowed": "INVALID_FIELD",
    "expires_at_not_allowed": "INVALID_FIELD",
    "unlisted_token": "UNKNOWN_TOKEN",
    "invalid_symbol": "INVALID_SYMBOL",
    "invalid_price": "INVALID_PRICE",
    "invalid_liquidityUsd": "INVALID_AMOUNT",
    "timezone_aware": "INVALID_EXPIRY",
    "datetime_from_date_parsing": "INVALID_EXPIRY",
    "datetime_parsing": "INVALID_EXPIRY",
    "datetime_type": "INVALID_EXPIRY",
    "invalid_expiry": "INVALID_EXPIRY",
    "amount_too_precise": "INVALID_AMOUNT",
    "invalid_client_order_id": "INVALID_FIELD",
    "string_pattern_mismatch": "INVALID_FIELD",
    "unknown_venue": "UNKNOWN_VENUE",
}
_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 408: "REQUEST_TIMEOUT"}
# A rule that involves two fields is reported on the field to change.
_FIELD_OF = {
    "same_token": "tokenOut",
    "missing_limit_price": "limitPrice",
    "limit_price_not_allowed": "limitPrice",
    "max_price_not_allowed": "maxPrice",
    "expires_at_not_allowed": "expiresAt",
    "unlisted_token": "tokenOut",
    "amount_too_precise": "amount",
}


# What a 503 tells the client to wait before trying again, in seconds.
RETRY_AFTER_S = 2


class ApiError(Exception):
    """An error answered to the client as JSON with an HTTP status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        details: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        # Machine-readable context beside the message, e.g. an order's current status.
        self.details = details or {}
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        error = {"code": self.code, "message": self.message, "field": self.field, **self.details}
        return JSONResponse(status_code=self.status, content={"error": error}, headers=self.headers)


def unavailable(code: str, message: str, details: dict[str, Any] | None = None) -> ApiError:
    """Return a 503 that tells the client when to try again."""
    return ApiError(503, code, message, None, details, {"Retry-After": str(RETRY_AFTER_S)})


def gateway_busy(waited_s: float) -> ApiError:
    """The submission waited its turn too long: nothing was written."""
    return unavailable(
        "GATEWAY_BUSY",
        f"too many submissions ahead of this one for {waited_s:g} s; nothing was written",
    )


def broker_unavailable() -> ApiError:
    """The command was not written: the broker did not take it in time."""
    return unavailable("BROKER_UNAVAILABLE", "the order log is unavailable; nothing was written")


def outcome_unknown(order_id: uuid.UUID) -> ApiError:
    """The command may or may not be on the log: the broker did not acknowledge it in time."""
    return unavailable(
        "BROKER_UNAVAILABLE",
        "the order log did not acknowledge in time: the order may or may not have been "
        "written; retry with the same Idempotency-Key, or read the order, to find out",
        {"outcome": "unknown", "orderId": str(order_id)},
    )


class DatabaseUnavailable(ApiError):
    """The read models cannot be read now: 503 ``DATABASE_UNAVAILABLE``."""


def database_unavailable() -> DatabaseUnavailable:
    """Return the error of a read the database could not answer."""
    error = unavailable("DATABASE_UNAVAILABLE", "the read models are unavailable")
    return DatabaseUnavailable(503, error.code, error.message, None, None, error.headers)


def from_validation(errors: list[ErrorDetails] | list[Any]) -> ApiError:
    """Turn the first pydantic error into an ``ApiError`` naming its field."""
    first = errors[0]
    kind = str(first.get("type", ""))
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "path", "query")]
    # Path parameters are snake_case in Python; the client knows them as the API names them.
    field = _FIELD_OF.get(kind) or (_camel(loc[-1]) if loc else None)
    message = str(first.get("msg", "invalid request"))
    if field and kind in ("missing", "extra_forbidden"):
        message = f"{field}: {message.lower()}"
    return ApiError(422, _CODES.get(kind, "INVALID_FIELD"), message, field)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` in the one error shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return from_validation(list(exc.errors())).response()

    @app.exception_handler(ValidationError)
    async def _invalid(_: Request, exc: ValidationError) -> JSONResponse:
        return from_validation(exc.errors()).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        return ApiError(exc.status_code, code, str(exc.detail), None, None, exc.headers).response()

    @app.exception_handler(psycopg.OperationalError)
    async def _database_down(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        # The read side answers its own outages; one that escapes it still gets the 503.
        log.warning("database unavailable answering %s: %r", request.url.path, exc)
        return database_unavailable().response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the exception after this answer; the client gets the one shape.
        log.error("unexpected error answering %s %s: %r", request.method, request.url.path, exc)
        return ApiError(500, "INTERNAL_ERROR", "unexpected error; it has been logged").response()
