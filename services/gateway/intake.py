"""Reading a submission: its body, bounded in size, parsed and validated, and its order id."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from domain import accounts
from domain.numbers import shown
from services.gateway import errors
from services.gateway.errors import ApiError
from services.gateway.schemas import ExecuteOrderRequest

MAX_KEY_LENGTH = 128
M = TypeVar("M", bound=BaseModel)
# Printable ASCII: a key is stored with its order, in the log and in PostgreSQL.
IDEMPOTENCY_KEY_PATTERN = r"^[\x20-\x7E]{1,128}$"
_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7E]{1,128}")


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


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys; which one the client meant is unknown.
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise _DuplicateKey(key)
        data[key] = value
    return data


def _strings_of(data: Any) -> Iterator[str]:
    """Yield every string in ``data``, keys included, without recursion."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def read_json_object(body: bytes) -> dict[str, Any]:
    """Return the JSON object of a request body, or raise ``ApiError`` (400).

    Stricter than ``json.loads``: a key given twice, text that is not Unicode (a
    lone surrogate such as ``"\\ud800"``) and nesting deeper than the parser's
    recursion limit are refused instead of being guessed at or crashing.
    """
    try:
        data = json.loads(body, object_pairs_hook=_object_without_duplicates)
    except _DuplicateKey as exc:
        raise ApiError(
            400, "DUPLICATE_KEY", f"key {shown(exc.key)} appears twice in one object", exc.key
        ) from None
    except RecursionError:
        raise ApiError(400, "INVALID_JSON", "request body is nested too deeply") from None
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "INVALID_JSON", "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "INVALID_BODY", "request body must be a JSON object")
    for text in _strings_of(data):
        if _SURROGATE.search(text):
            raise ApiError(
                400,
                "INVALID_JSON",
                "request body holds a lone surrogate, which is not Unicode text",
            )
    return data


_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_order_request(body: bytes) -> ExecuteOrderRequest:
    """Parse and validate a submission body, or raise ``ApiError``."""
    return validated(ExecuteOrderRequest, read_json_object(body))


def validated(model: type[M], data: dict[str, Any]) -> M:
    """Return ``data`` validated as ``model``, or raise ``ApiError`` naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise errors.from_validation(exc.errors()) from None


def idempotent_order_id(secret: str, account: str, key: str) -> uuid.UUID:
    """Return the order id ``account``'s ``Idempotency-Key`` stands for, or raise
    ``ApiError`` (400).

    It derives from the account, the key and the server's secret, so every gateway
    and the engine agree on which order a retried request means, two accounts'
    same key mean two orders, and nobody can compute the id from a key alone.
    """
    if _IDEMPOTENCY_KEY.fullmatch(key) is None:
        raise ApiError(
            400,
            "INVALID_IDEMPOTENCY_KEY",
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters, "
            f"not {shown(key)}",
            "Idempotency-Key",
        )
    return accounts.idempotent_order_id(secret, account, key)
