"""Errors as values at the API boundary: ``{"error": {"code", "message", "field"}}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from starlette.exceptions import HTTPException as StarletteHTTPException

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
}
# A rule that involves two fields is reported on the field to change.
_FIELD_OF = {
    "same_token": "tokenOut",
    "missing_limit_price": "limitPrice",
    "limit_price_not_allowed": "limitPrice",
    "max_price_not_allowed": "maxPrice",
    "expires_at_not_allowed": "expiresAt",
    "unlisted_token": "tokenOut",
}


class ApiError(Exception):
    """An error answered to the client as JSON with an HTTP status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        # Machine-readable context beside the message, e.g. an order's current status.
        self.details = details or {}

    def response(self) -> JSONResponse:
        error = {"code": self.code, "message": self.message, "field": self.field, **self.details}
        return JSONResponse(status_code=self.status, content={"error": error})


def from_validation(errors: list[ErrorDetails] | list[Any]) -> ApiError:
    """Turn the first pydantic error into an ``ApiError`` naming its field."""
    first = errors[0]
    kind = str(first.get("type", ""))
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "path", "query")]
    field = _FIELD_OF.get(kind) or (loc[-1] if loc else None)
    message = str(first.get("msg", "invalid request"))
    if field and kind in ("missing", "extra_forbidden"):
        message = f"{field}: {message.lower()}"
    return ApiError(422, _CODES.get(kind, "INVALID_FIELD"), message, field)


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
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
        return ApiError(exc.status_code, code, str(exc.detail)).response()
