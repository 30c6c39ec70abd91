"""The adapter to the venue service: the ``Venue`` protocol over HTTP, plus pools.

The engine quotes and swaps through it; the market service reads the pools and
drives the simulated market (drift, launches) through the same client. It is
aiohttp with keep-alive: a venue call is on every order's path several times, and
aiohttp costs a fraction of the CPU of httpx per request.
"""

from __future__ import annotations

import json as jsonlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from adapters.metrics import VENUE_CALL_ERRORS, VENUE_CALL_SECONDS
from adapters.settings import Settings
from adapters.venues.interface import (
    Ledger,
    LedgerEntry,
    PoolInfo,
    PoolList,
    Quote,
    SwapRequest,
    SwapResult,
    VenueError,
)

log = logging.getLogger(__name__)

DEFAULT_VENUE_NAMES = ("raydium", "meteora")
# Confirmation waits until the swap lands (2-3 s in the realistic profile), which
# can outlast the per-call timeout meant for quotes and submissions.
DEFAULT_CONFIRM_TIMEOUT_S = 30.0

_M = TypeVar("_M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def new_session(
    base_url: str, timeout: float, admin_token: str | None = None
) -> aiohttp.ClientSession:
    """Return an HTTP session with keep-alive for the venue service at ``base_url``;
    with ``admin_token``, its requests may use the simulation controls."""
    return aiohttp.ClientSession(
        base_url=base_url,
        headers={"Authorization": f"Bearer {admin_token}"} if admin_token else None,
        timeout=aiohttp.ClientTimeout(total=timeout),
        connector=aiohttp.TCPConnector(limit=256),
        raise_for_status=False,
    )


class HttpVenue:
    """One venue of the venue service, reached over HTTP."""

    def __init__(
        self,
        name: str,
        base_url: str,
        timeout: float,
        *,
        confirm_timeout: float = DEFAULT_CONFIRM_TIMEOUT_S,
        client: aiohttp.ClientSession | None = None,
        admin_token: str | None = None,
    ) -> None:
        self.name = name
        self._admin_token = admin_token
        self._prefix = f"/venues/{name}"
        self._confirm_timeout = max(confirm_timeout, timeout)
        self._base_url = base_url
        self._timeout = timeout
        self._client = client

    def _session(self) -> aiohttp.ClientSession:
        # Created on first use, inside the event loop that will use it.
        if self._client is None:
            self._client = new_session(self._base_url, self._timeout, self._admin_token)
        return self._client

    async def aclose(self) -> None:
        """Close the underlying HTTP session (idempotent; shared sessions close once)."""
        if self._client is not None:
            await self._client.close()

    async def quote(self, token_in: str, token_out: str, amount_in: Decimal) -> Quote:
        """Quote a swap; raise ``VenueError`` when the venue cannot."""
        body = {"token_in": token_in, "token_out": token_out, "amount_in": str(amount_in)}
        response = await self._request("POST", f"{self._prefix}/quote", json=body, call="quote")
        return _parse(Quote, self._ok(response))

    async def submit(self, request: SwapRequest) -> SwapResult:
        """Submit a swap; the same ``client_ref`` twice returns the first submission."""
        response = await self._request(
            "POST", f"{self._prefix}/swaps", json=request.model_dump(mode="json"), call="submit"
        )
        return _parse(SwapResult, self._ok(response))

    async def confirm(self, tx_hash: str) -> SwapResult:
        """Wait until the swap has landed or failed, and return the outcome."""
        response = await self._request(
            "GET",
            f"{self._prefix}/swaps/{tx_hash}/confirmation",
            call="confirm",
            read_timeout=self._confirm_timeout,
        )
        return _parse(SwapResult, self._ok(response))

    async def find_swap(self, client_ref: str) -> SwapResult | None:
        """Return the swap submitted under ``client_ref``, or None if there is none."""
        response = await self._request(
            "GET", f"{self._prefix}/swaps", params={"client_ref": client_ref}, call="find_swap"
        )
        if response.status == 404 and _error_code(response) == "SWAP_NOT_FOUND":
            return None
        return _parse(SwapResult, self._ok(response))

    async def ledger(self) -> tuple[LedgerEntry, ...]:
        """Return every swap the venue knows, oldest first, those that have landed settled."""
        response = await self._request("GET", f"{self._prefix}/ledger", call="ledger")
        return _parse(Ledger, self._ok(response)).swaps

    async def pools(self) -> tuple[PoolInfo, ...]:
        """Return every pool of the venue as it is now."""
        response = await self._request("GET", f"{self._prefix}/pools", call="pools")
        return _parse(PoolList, self._ok(response)).pools

    async def launch(
        self,
        symbol: str,
        *,
        quote: str = "SOL",
        price: Decimal | None = None,
        liquidity_usd: Decimal | None = None,
    ) -> PoolInfo:
        """List a new token and open its pool; the service picks what is not given.

        Raise ``VenueError`` ``TOKEN_EXISTS`` or ``POOL_EXISTS`` when it exists.
        """
        body: dict[str, str] = {"symbol": symbol, "quote": quote}
        if price is not None:
            body["price"] = str(price)
        if liquidity_usd is not None:
            body["liquidity_usd"] = str(liquidity_usd)
        response = await self._request("POST", f"{self._prefix}/pools", json=body, call="launch")
        return _parse(PoolInfo, self._ok(response))

    async def add_liquidity(self, token_a: str, token_b: str, usd: Decimal) -> PoolInfo:
        """Deepen the pair's pool by ``usd`` at its current price; return the pool."""
        body = {"token_a": token_a, "token_b": token_b, "usd": str(usd)}
        response = await self._request(
            "POST", f"{self._prefix}/pools/liquidity", json=body, call="add_liquidity"
        )
        return _parse(PoolInfo, self._ok(response))

    async def drift(self, moves: Iterable[tuple[str, str, Decimal]]) -> None:
        """Move pools a little, as other traders would: (token_in, token_out, fraction) each.

        One ``token_in`` then buys ``1 + fraction`` times as much of ``token_out``.
        """
        body = {
            "moves": [
                {"token_in": token_in, "token_out": token_out, "fraction": str(fraction)}
                for token_in, token_out, fraction in moves
            ]
        }
        self._ok(await self._request("POST", f"{self._prefix}/drift", json=body, call="drift"))

    async def _request(
        self,
        method: str,
        url: str,
        *,
        call: str,
        json: object = None,
        params: dict[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> _Answer:
        timeout = None if read_timeout is None else aiohttp.ClientTimeout(total=read_timeout)
        started = time.perf_counter()
        try:
            async with self._session().request(
                method, url, json=json, params=params, timeout=timeout
            ) as response:
                answer = _Answer(response.status, await response.read())
        except (TimeoutError, aiohttp.ClientError) as exc:
            VENUE_CALL_ERRORS.labels(self.name, call).inc()
            # A timeout too: the call may or may not have taken effect, which is why
            # swaps carry a client_ref to look up afterwards.
            raise VenueError(
                "NETWORK_ERROR", f"{self.name}: {type(exc).__name__}: {exc}", transient=True
            ) from exc
        VENUE_CALL_SECONDS.labels(self.name, call).observe(time.perf_counter() - started)
        # A swap looked up and not found is an answer, not an error.
        if answer.status >= 500 or (answer.status >= 400 and call != "find_swap"):
            VENUE_CALL_ERRORS.labels(self.name, call).inc()
        return answer

    def _ok(self, response: _Answer) -> bytes:
        if response.ok:
            return response.body
        error = _error_object(response)
        if error is None:
            raise VenueError(
                "VENUE_UNAVAILABLE" if response.status >= 500 else "BAD_RESPONSE",
                f"{self.name}: HTTP {response.status}",
                transient=response.status >= 500,
            )
        raise VenueError(
            str(error.get("code", "VENUE_ERROR")),
            str(error.get("message", "")),
            transient=bool(error.get("transient", response.status == 503)),
        )


def _error_object(response: _Answer) -> dict[str, object] | None:
    try:
        body = jsonlib.loads(response.body)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def _error_code(response: _Answer) -> str | None:
    error = _error_object(response)
    return None if error is None else str(error.get("code"))


def _parse(model: type[_M], content: bytes) -> _M:
    try:
        return model.model_validate_json(content)
    except ValidationError as exc:
        raise VenueError("BAD_RESPONSE", f"unexpected venue answer: {exc}", transient=True) from exc


async def http_venues(settings: Settings) -> list[HttpVenue]:
    """Return one ``HttpVenue`` per venue the service lists, sharing one HTTP client.

    When the service cannot be asked (not up yet), the two default venue names are used.
    The processes of this system hold the venue service's admin token (the market
    service drifts prices and launches tokens; the gateway's admin routes launch).
    """
    client = new_session(settings.venues_url, settings.venue_timeout_s, settings.admin_token())
    names: tuple[str, ...] = DEFAULT_VENUE_NAMES
    try:
        async with client.get("/venues") as response:
            response.raise_for_status()
            listed = jsonlib.loads(await response.read())
        names = tuple(str(entry["name"]) for entry in listed["venues"])
    except (TimeoutError, aiohttp.ClientError, ValueError, KeyError, TypeError) as exc:
        log.warning("cannot list venues at %s (%s); using %s", settings.venues_url, exc, names)
    return [
        HttpVenue(name, settings.venues_url, settings.venue_timeout_s, client=client)
        for name in names
    ]
