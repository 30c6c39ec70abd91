"""What a browser reads: the web page, its static files and the list of past orders.

The page (``static/``) is plain HTML, CSS and JavaScript modules with no build
step; it talks to the same JSON and WebSocket API as any other client.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from projections.orders.handler import row_to_state
from services.gateway.deps import CallerDep, ReadSideDep
from services.gateway.errors import ApiError
from services.gateway.responses import AUTHENTICATED, COMMON_ERRORS, DATABASE, OrderPage, error
from services.gateway.schemas import order_view

STATIC_DIR = Path(__file__).parents[1] / "static"
MAX_PAGE = 200

router = APIRouter()
# Served through a route rather than a mount, so that including this router is all
# an app needs (older FastAPI releases drop mounts from included routers).
_static = StaticFiles(directory=STATIC_DIR)


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    """Return the web page."""
    return FileResponse(STATIC_DIR / "index.html")


@router.api_route("/static/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
async def static(path: str, request: Request) -> Response:
    """Return one of the page's files (404 for anything outside ``static/``)."""
    # StaticFiles resolves the path and refuses whatever lands outside its directory.
    return await _static.get_response(path, request.scope)


@router.get(
    "/api/orders",
    response_model=None,
    responses={
        200: {"model": OrderPage, "description": "A page of orders, newest first"},
        422: error("A bad limit or before: INVALID_QUERY"),
        **DATABASE,
        **COMMON_ERRORS,
        **AUTHENTICATED,
    },
)
async def list_orders(
    read_side: ReadSideDep,
    caller: CallerDep,
    limit: Annotated[
        str,
        Query(
            description=f"Orders per page, 1..{MAX_PAGE}.",
            json_schema_extra={"pattern": "^[0-9]{1,3}$"},
        ),
    ] = "50",
    before: Annotated[
        str | None, Query(description="The `next` cursor of the previous page.")
    ] = None,
) -> Any:
    """List the caller's orders (an admin: every order) newest first, a page at a time;
    ``next`` is null on the last page."""
    size = parse_limit(limit)
    key = decode_cursor(before) if before is not None else None
    # One row more than asked tells whether another page exists.
    rows = await read_side.list_orders(size + 1, key, None if caller.admin else caller.account)
    page = rows[:size]
    more = len(rows) > size
    return {
        "orders": [order_view(row_to_state(row)) for row in page],
        "next": encode_cursor(page[-1]["created_at"], page[-1]["order_id"]) if more else None,
    }


def parse_limit(raw: str) -> int:
    """Return the page size asked for, or raise ``ApiError`` (422 INVALID_QUERY)."""
    # The length first: int() of thousands of digits is slow, and refused past 4300.
    if not (0 < len(raw) <= 3 and raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE:
        raise ApiError(
            422, "INVALID_QUERY", f"limit must be an integer from 1 to {MAX_PAGE}", "limit"
        )
    return int(raw)


def encode_cursor(created_at: datetime, order_id: uuid.UUID) -> str:
    """Return the opaque cursor that resumes a listing after this order."""
    raw = f"{created_at.isoformat()}|{order_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Return the ``(created_at, order_id)`` key of a cursor, or raise ``ApiError``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, order_id = raw.split("|")
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None:
            raise ValueError("cursor time has no zone")
        return created_at, uuid.UUID(order_id)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError(
            422, "INVALID_QUERY", "before is not a cursor this API returned", "before"
        ) from None
