"""``X-Request-ID``: taken from the client (or made up), answered back, logged, and the
correlation id of the order a request submits.

A request id that is a UUID becomes the correlation id as it is; any other (at most
128 printable ASCII characters) is mapped to one by a name-based UUID, so the same id
always correlates the same way. One that is neither is replaced by a fresh id.
"""

from __future__ import annotations

import re
import uuid

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.logs import bind

HEADER = b"x-request-id"
_ACCEPTABLE = re.compile(r"[\x21-\x7e]{1,128}")
_NAMESPACE = uuid.UUID("6f1d2b43-8a9e-4f59-9a57-2b1d3c0e5a71")


def correlation_id(request_id: str) -> uuid.UUID:
    """Return the correlation id a request id stands for."""
    try:
        return uuid.UUID(request_id)
    except ValueError:
        return uuid.uuid5(_NAMESPACE, request_id)


def request_correlation(connection: HTTPConnection) -> uuid.UUID:
    """Return the correlation id of the request being served (a fresh one outside one)."""
    request_id = connection.scope.get("request_id")
    return correlation_id(request_id) if request_id else uuid.uuid4()


class RequestId:
    """ASGI middleware: settle the request's id, bind it to its log lines, answer it back."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        given = next(
            (
                value.decode("latin-1")
                for name, value in scope["headers"]
                if name == b"x-request-id"
            ),
            "",
        )
        request_id = given if _ACCEPTABLE.fullmatch(given) else str(uuid.uuid4())
        scope["request_id"] = request_id

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (HEADER, request_id.encode())]
            await send(message)

        with bind(correlation_id=correlation_id(request_id)):
            await self._app(scope, receive, sending)
