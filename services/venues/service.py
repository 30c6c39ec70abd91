"""The venue service: simulated venues behind HTTP, in their own process.

Venue state lives here, outside the engine, so a restarted engine can still ask
whether its swap with a given ``client_ref`` already happened. Errors answer
``{"error": {"code", "message", "transient", "field"}}``: 503 for transient
failures (retry may succeed), 404 for unknown venues/swaps, 409 for a launch of
a token or pool that exists, 422 otherwise.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field

from adapters.ops import RequestMetrics, metrics_text
from adapters.venues.interface import (
    Ledger,
    PoolInfo,
    PoolList,
    Quote,
    SwapRequest,
    SwapResult,
    VenueError,
)
from domain.numbers import MAX_AMOUNT, MAX_LIQUIDITY_USD, MAX_PRICE, MIN_LIQUIDITY_USD, MIN_PRICE
from services.venues.simulator import SYMBOL_PATTERN, SimulatedVenue

log = logging.getLogger(__name__)

NOT_FOUND_CODES = frozenset({"UNKNOWN_VENUE", "UNKNOWN_TX", "SWAP_NOT_FOUND"})
CONFLICT_CODES = frozenset({"TOKEN_EXISTS", "POOL_EXISTS"})
DEFAULT_LAUNCH_LIQUIDITY_USD = Decimal(50_000)

# Numbers the pool math is asked to work with stay within the edge's bounds
# (domain.numbers): ``1e-100000`` is a positive Decimal, and no pool can price it.
# They arrive as ``str(Decimal)``, so an exponent ("1E-7") is fine here.
Amount = Annotated[Decimal, Field(ge=MIN_PRICE, le=MAX_AMOUNT)]
Price = Annotated[Decimal, Field(ge=MIN_PRICE, le=MAX_PRICE)]
Usd = Annotated[Decimal, Field(ge=MIN_LIQUIDITY_USD, le=MAX_LIQUIDITY_USD)]


class QuoteRequest(BaseModel):
    """Body of ``POST /venues/{name}/quote``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token_in: str
    token_out: str
    amount_in: Amount


class FaultScript(BaseModel):
    """Simulation control: make the next calls of one kind fail with these codes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    call: Literal["quote", "submit", "confirm"]
    codes: tuple[str, ...] = Field(min_length=1)


class PriceMove(BaseModel):
    """Simulation control: move a pool so 1 token_in buys ``fraction`` more (or less)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token_in: str
    token_out: str
    fraction: Decimal = Field(gt=-1, lt=1)
    # True: the wider market moved (the price holds); false: a local dislocation
    # that the pool's arbitrage walk pulls back.
    market: bool = False


class Drift(BaseModel):
    """Simulation control: other traders' activity, one small move per pool (``drift``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    moves: tuple[PriceMove, ...]


class PoolLaunchRequest(BaseModel):
    """Body of ``POST /venues/{name}/pools``: list a token and open its pool."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str = Field(pattern=SYMBOL_PATTERN)  # upper-cased by the venue
    quote: str = "SOL"
    price: Price | None = None  # quote per token
    liquidity_usd: Usd | None = None


class LiquidityRequest(BaseModel):
    """Body of ``POST /venues/{name}/pools/liquidity``: deepen a pool at its price."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token_a: str
    token_b: str
    usd: Usd


class VenueInfo(BaseModel):
    """One entry of ``GET /venues``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    fee_bps: int


class VenueList(BaseModel):
    """Body of ``GET /venues``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    venues: tuple[VenueInfo, ...]


def error_status(error: VenueError) -> int:
    """Return the HTTP status a ``VenueError`` is answered with."""
    if error.code == "UNAUTHENTICATED":
        return 401
    if error.code in NOT_FOUND_CODES:
        return 404
    if error.code in CONFLICT_CODES:
        return 409
    return 503 if error.transient else 422


def _error_body(
    code: str, message: str, *, transient: bool, field: str | None = None
) -> dict[str, dict[str, object]]:
    return {"error": {"code": code, "message": message, "transient": transient, "field": field}}


def create_app(
    venues: Sequence[SimulatedVenue],
    *,
    launch_liquidity_usd: Decimal = DEFAULT_LAUNCH_LIQUIDITY_USD,
    admin_token: str,
) -> FastAPI:
    """Return the FastAPI app serving ``venues``.

    A launch that names no liquidity opens its pool with ``launch_liquidity_usd``.
    The simulation controls answer only a request that carries ``admin_token``
    as ``Authorization: Bearer``.
    """
    by_name = {venue.name: venue for venue in venues}
    app = FastAPI(title="Simulated DEX venues")

    def venue_named(name: str) -> SimulatedVenue:
        venue = by_name.get(name)
        if venue is None:
            raise VenueError("UNKNOWN_VENUE", f"no venue named {name!r}", transient=False)
        return venue

    _answer_errors_as_json(app)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(RequestMetrics)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(metrics_text(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/venues")
    async def list_venues() -> VenueList:
        return VenueList(venues=tuple(VenueInfo(name=v.name, fee_bps=v.fee_bps) for v in venues))

    @app.post("/venues/{name}/quote")
    async def quote(name: str, body: QuoteRequest) -> Quote:
        return await venue_named(name).quote(body.token_in, body.token_out, body.amount_in)

    @app.post("/venues/{name}/swaps")
    async def submit(name: str, body: SwapRequest) -> SwapResult:
        return await venue_named(name).submit(body)

    @app.get("/venues/{name}/swaps/{tx_hash}/confirmation")
    async def confirm(name: str, tx_hash: str) -> SwapResult:
        return await venue_named(name).confirm(tx_hash)

    @app.get("/venues/{name}/swaps")
    async def find_swap(name: str, client_ref: str) -> SwapResult:
        result = await venue_named(name).find_swap(client_ref)
        if result is None:
            raise VenueError(
                "SWAP_NOT_FOUND", f"no swap with client_ref {client_ref!r}", transient=False
            )
        return result

    # Read-only: every swap the venue knows, for an audit against the order events.
    @app.get("/venues/{name}/ledger")
    async def ledger(name: str) -> Ledger:
        return Ledger(swaps=venue_named(name).ledger())

    @app.get("/venues/{name}/pools")
    async def pools(name: str) -> PoolList:
        return PoolList(pools=venue_named(name).pools())

    # Simulation controls, for tests and demos: a real venue has no such door.
    _add_simulation_controls(app, venue_named, launch_liquidity_usd, admin_token)
    return app


def _answer_errors_as_json(app: FastAPI) -> None:
    """Answer a venue error and an invalid request in the venue's JSON error shape."""

    @app.exception_handler(VenueError)
    async def _venue_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, VenueError)
        return JSONResponse(
            _error_body(exc.code, str(exc), transient=exc.transient), status_code=error_status(exc)
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        return JSONResponse(
            _error_body(
                "INVALID_REQUEST", first.get("msg", "invalid request"), transient=False, field=field
            ),
            status_code=422,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Transient, as a bare 500 was: the caller may retry.
        log.error("unexpected error answering %s %s: %r", request.method, request.url.path, exc)
        return JSONResponse(
            _error_body("INTERNAL_ERROR", "unexpected error; it has been logged", transient=True),
            status_code=500,
        )


def _add_simulation_controls(
    app: FastAPI,
    venue_named: Callable[[str], SimulatedVenue],
    launch_liquidity_usd: Decimal,
    admin_token: str,
) -> None:
    """Add the routes that launch pools, add liquidity, move prices and script faults,
    each for a holder of ``admin_token`` only."""
    expected = f"Bearer {admin_token}".encode()

    async def admin(request: Request) -> None:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise VenueError(
                "UNAUTHENTICATED", "the simulation controls need the admin token", transient=False
            )

    guarded = [Depends(admin)]

    @app.post("/venues/{name}/pools", status_code=201, dependencies=guarded)
    async def launch(name: str, body: PoolLaunchRequest) -> PoolInfo:
        venue = venue_named(name)
        return venue.launch(
            body.symbol,
            quote=body.quote,
            price=body.price if body.price is not None else venue.default_launch_price(body.quote),
            liquidity_usd=body.liquidity_usd or launch_liquidity_usd,
        )

    @app.post("/venues/{name}/pools/liquidity", dependencies=guarded)
    async def add_liquidity(name: str, body: LiquidityRequest) -> PoolInfo:
        return venue_named(name).add_liquidity(body.token_a, body.token_b, body.usd)

    @app.post("/venues/{name}/drift", status_code=204, dependencies=guarded)
    async def drift(name: str, body: Drift) -> None:
        venue = venue_named(name)
        for move in body.moves:
            venue.drift(move.token_in, move.token_out, move.fraction)

    @app.post("/venues/{name}/faults", status_code=204, dependencies=guarded)
    async def script_faults(name: str, body: FaultScript) -> None:
        venue_named(name).script_failures(body.call, body.codes)

    @app.post("/venues/{name}/price-moves", status_code=204, dependencies=guarded)
    async def move_price(name: str, body: PriceMove) -> None:
        venue_named(name).move_price(
            body.token_in, body.token_out, body.fraction, market=body.market
        )
