"""Authentication, roles and rate limits: who a request acts for, and whether it may.

Every API call carries ``Authorization: Bearer <key>``. A WebSocket may carry the
key that way too, or, since a browser cannot set headers on a socket, as the
subprotocol ``bearer.<key>`` (the gateway then accepts that subprotocol), or as
the ``apiKey`` query parameter. Errors: 401 ``UNAUTHENTICATED`` (no key, or a key
nobody created), 403 ``FORBIDDEN`` (a role the key lacks), 429 ``RATE_LIMITED``
with ``Retry-After``; on a socket, close codes 4401, 4403 and 4429.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from domain.accounts import Caller
from services.gateway.adapters import Gateway
from services.gateway.errors import ApiError
from services.gateway.sockets import SocketLimits, admit, close, limit_send_buffer

SUBPROTOCOL_PREFIX = "bearer."
KEY_QUERY = "apiKey"
WS_UNAUTHENTICATED = 4401
WS_FORBIDDEN = 4403
WS_RATE_LIMITED = 4429


def unauthenticated(message: str) -> ApiError:
    return ApiError(
        401,
        "UNAUTHENTICATED",
        message,
        "Authorization",
        headers={"WWW-Authenticate": "Bearer"},
    )


def forbidden(role: str) -> ApiError:
    return ApiError(403, "FORBIDDEN", f"this needs a key with the {role} role", "Authorization")


def rate_limited(wait_s: float) -> ApiError:
    retry_after = max(1, math.ceil(wait_s))
    return ApiError(
        429,
        "RATE_LIMITED",
        f"too many requests for this account; retry after {retry_after} s",
        None,
        {"retryAfter": retry_after},
        {"Retry-After": str(retry_after)},
    )


def bearer_key(header: str | None) -> str | None:
    """Return the key of an ``Authorization: Bearer <key>`` header, if there is one."""
    if header is None:
        return None
    scheme, _, key = header.strip().partition(" ")
    return key.strip() or None if scheme.lower() == "bearer" else None


def offered_key(socket: WebSocket) -> tuple[str | None, str | None]:
    """Return a socket's key and the subprotocol that carried it (None if another way)."""
    key = bearer_key(socket.headers.get("authorization"))
    if key is not None:
        return key, None
    for protocol in socket.scope.get("subprotocols", ()):
        if protocol.startswith(SUBPROTOCOL_PREFIX):
            return protocol.removeprefix(SUBPROTOCOL_PREFIX) or None, protocol
    return socket.query_params.get(KEY_QUERY) or None, None


def identify(gateway: Gateway, key: str | None) -> Caller:
    """Return the caller a key stands for, within its rate limit, or raise ``ApiError``."""
    if key is None:
        raise unauthenticated("an API key is required: Authorization: Bearer <key>")
    caller = gateway.keys.caller(key)
    if caller is None:
        raise unauthenticated("unknown API key")
    wait_s = gateway.rate_limits.check(caller.account)
    if wait_s > 0:
        raise rate_limited(wait_s)
    return caller


# Declares the key in the OpenAPI document (``securitySchemes``, and ``security`` on
# every keyed operation), so a generated client and the /docs page know to send it.
# ``auto_error=False``: a missing or malformed header is ours to answer, in the envelope.
API_KEY = HTTPBearer(
    scheme_name="apiKey",
    bearerFormat="oee API key",
    description="An API key (`oee keys create NAME`), sent as `Authorization: Bearer <key>`.",
    auto_error=False,
)


async def authenticate(
    connection: HTTPConnection,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Security(API_KEY)],
) -> Caller:
    """Return the caller of an HTTP request, or raise 401/429."""
    gateway: Gateway = connection.app.state.gateway
    return identify(gateway, bearer_key(connection.headers.get("authorization")))


async def authenticate_socket(socket: WebSocket, gateway: Gateway) -> Caller | None:
    """Return the caller of an accepted socket; close it with 4401/4429 and return None if
    it has none."""
    key, _ = offered_key(socket)
    try:
        return identify(gateway, key)
    except ApiError as exc:
        code = WS_RATE_LIMITED if exc.status == 429 else WS_UNAUTHENTICATED
        await close(socket, code, exc.message[:120])
        return None


@asynccontextmanager
async def open_socket(
    socket: WebSocket, gateway: Gateway, limits: SocketLimits, kind: str, send_buffer_bytes: int
) -> AsyncIterator[Caller | None]:
    """Accept a socket of ``kind`` within the limits and identify its caller; yield the
    caller, or None when the socket was closed instead (no room, no valid key)."""
    async with admit(socket, limits, kind, offered_key(socket)[1]) as admitted:
        caller = await authenticate_socket(socket, gateway) if admitted else None
        if caller is not None:
            limit_send_buffer(socket, send_buffer_bytes)
        yield caller


def require_admin(caller: Caller) -> Caller:
    """Return the caller if it is an admin, or raise 403."""
    if not caller.admin:
        raise forbidden("admin")
    return caller
