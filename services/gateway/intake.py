"""Reading a submission: its body, bounded in size, parsed and validated, and its order id."""

from __future__ import annotations

import json
import uuid

from pydantic import ValidationError
from starlette.requests import Request

from domain import accounts
from services.gateway import errors
from services.gateway.errors import ApiError
from services.gateway.schemas import ExecuteOrderRequest

MAX_KEY_LENGTH = 128


async def read_body(request: Request, limit: int) -> bytes:
    """Read the request body, refusing more than ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "BODY_TOO_LARGE", f"request body exceeds {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "BODY_TOO_LARGE", f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_order_request(body: bytes) -> ExecuteOrderRequest:
    """Parse and validate a submission body, or raise ``ApiError``."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "INVALID_JSON", "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "INVALID_BODY", "request body must be a JSON object")
    try:
        return ExecuteOrderRequest.model_validate(data)
    except ValidationError as exc:
        raise errors.from_validation(exc.errors()) from None


def idempotent_order_id(secret: str, account: str, key: str) -> uuid.UUID:
    """Return the order id ``account``'s ``Idempotency-Key`` stands for, or raise
    ``ApiError`` (400).

    It derives from the account, the key and the server's secret, so every gateway
    and the engine agree on which order a retried request means, two accounts'
    same key mean two orders, and nobody can compute the id from a key alone.
    """
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise ApiError(
            400,
            "INVALID_IDEMPOTENCY_KEY",
            f"must be 1 to {MAX_KEY_LENGTH} characters",
            "Idempotency-Key",
        )
    return accounts.idempotent_order_id(secret, account, key)
