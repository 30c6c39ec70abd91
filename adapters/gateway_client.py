"""A typed client of the gateway's API: submit, cancel, read, follow and watch orders.

What ``oee submit|cancel|follow|watch`` and ``examples/client.py`` use::

    async with GatewayClient("http://127.0.0.1:3000") as api:
        submitted = await api.submit(OrderRequest("SOL", "USDC", "1.5"))
        async for event in api.follow(submitted.order_id):
            print(event.seq, event.status)

``follow`` reconnects with the last ``seq`` it saw after a dropped connection, and
``watch`` with the last firehose cursor, so neither misses nor repeats an event. A
refused request raises ``ApiError`` with the API's code, message and field. The key
of ``OEE_API_KEY`` (or ``api_key``), when there is one, goes with every request.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

TERMINAL = frozenset({"confirmed", "failed", "cancelled", "expired"})
# Close codes after which reconnecting cannot help (README "WebSocket close codes").
_FINAL_CLOSES = frozenset({1000, 4400, 4401, 4403, 4404, 4410, 4429})
RECONNECT_S = (0.2, 0.5, 1.0, 2.0, 5.0)


class ApiError(Exception):
    """A request the gateway refused: its status, code, message and field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{status} {code}{f' [{field}]' if field else ''}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    @classmethod
    def of(cls, response: httpx.Response) -> ApiError:
        try:
            error = response.json()["error"]
            return cls(response.status_code, error["code"], error["message"], error.get("field"))
        except (ValueError, KeyError, TypeError):
            return cls(response.status_code, "HTTP_ERROR", response.text[:200])


class StreamClosed(Exception):
    """A stream the gateway closed for good (unknown order, bad cursor, too many sockets)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed with {code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class OrderRequest:
    """An order as ``POST /api/orders/execute`` takes it (amounts as decimal strings)."""

    token_in: str
    token_out: str
    amount: str
    type: str = "market"
    slippage_bps: int = 50
    limit_price: str | None = None
    max_price: str | None = None
    expires_at: str | None = None
    client_order_id: str | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "tokenIn": self.token_in,
            "tokenOut": self.token_out,
            "amount": self.amount,
            "slippageBps": self.slippage_bps,
        }
        optional = {
            "limitPrice": self.limit_price,
            "maxPrice": self.max_price,
            "expiresAt": self.expires_at,
            "clientOrderId": self.client_order_id,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        return body


@dataclass(frozen=True)
class Submitted:
    order_id: str
    status: str


@dataclass(frozen=True)
class OrderEvent:
    """One event of an order as the streams send it."""

    order_id: str
    seq: int
    type: str
    status: str
    timestamp: str
    details: dict[str, Any] = field(default_factory=dict)
    # Firehose only: where the event is on the log, and the cursor just after it.
    cursor: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def of(cls, message: dict[str, Any]) -> OrderEvent:
        return cls(
            order_id=message["orderId"],
            seq=int(message["seq"]),
            type=message["type"],
            status=message["status"],
            timestamp=message["timestamp"],
            details=message.get("details") or {},
            cursor=message.get("cursor"),
        )


class GatewayClient:
    """The gateway's API over HTTP and WebSockets."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.ws_url = self.base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        key = api_key if api_key is not None else os.environ.get("OEE_API_KEY")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, headers=self._headers
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def submit(self, order: OrderRequest, *, idempotency_key: str | None = None) -> Submitted:
        """Submit an order; with a key, a retry of the same request is the same order."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = await self._http.post("/api/orders/execute", json=order.body(), headers=headers)
        if response.status_code != 202:
            raise ApiError.of(response)
        answer = response.json()
        return Submitted(answer["orderId"], answer["status"])

    async def cancel(self, order_id: str) -> str:
        """Cancel an armed order: ``cancelled``, or ``requested`` if the engine has not answered."""
        response = await self._http.post(f"/api/orders/{order_id}/cancel")
        if response.status_code == 200:
            return "cancelled"
        if response.status_code == 202:
            return "requested"
        raise ApiError.of(response)

    async def order(self, order_id: str) -> dict[str, Any]:
        """Return an order as ``GET /api/orders/{id}`` shows it."""
        response = await self._http.get(f"/api/orders/{order_id}")
        if response.status_code != 200:
            raise ApiError.of(response)
        answer: dict[str, Any] = response.json()
        return answer

    async def launch(
        self, symbol: str, *, venue: str = "raydium", liquidity_usd: str | None = None
    ) -> dict[str, Any]:
        """Launch a token in a new pool (simulation); return the pool."""
        body: dict[str, Any] = {"symbol": symbol, "venue": venue}
        if liquidity_usd is not None:
            body["liquidityUsd"] = liquidity_usd
        response = await self._http.post("/api/simulate/launch", json=body)
        if response.status_code != 201:
            raise ApiError.of(response)
        pool: dict[str, Any] = response.json()
        return pool

    async def follow(self, order_id: str, *, last_seq: int = 0) -> AsyncIterator[OrderEvent]:
        """Yield the order's events after ``last_seq`` until its terminal one.

        A dropped connection is reopened with the last ``seq`` seen (the gateway then
        sends exactly what was missed); a close that reconnecting cannot mend raises
        ``StreamClosed``.
        """
        attempt = 0
        while True:
            query = urlencode({"orderId": order_id, "lastSeq": last_seq})
            try:
                async for message in self._messages(f"/api/orders/execute?{query}"):
                    event = OrderEvent.of(message)
                    if event.seq <= last_seq:
                        continue  # cannot happen with lastSeq; a stale server, say
                    last_seq = event.seq
                    attempt = 0
                    yield event
                    if event.terminal:
                        return
                return  # closed with 1000: the order had ended before lastSeq
            except _Dropped:
                await asyncio.sleep(RECONNECT_S[min(attempt, len(RECONNECT_S) - 1)])
                attempt += 1

    async def watch(
        self,
        *,
        status: str | None = None,
        token: str | None = None,
        venue: str | None = None,
        type: str | None = None,
        start: str | None = None,
    ) -> AsyncIterator[OrderEvent]:
        """Yield the firehose's events matching every filter given, forever.

        ``start`` is ``earliest`` or a cursor (default: from now). A dropped connection
        is reopened from the last cursor seen.
        """
        filters = {"status": status, "token": token, "venue": venue, "type": type}
        cursor = start
        attempt = 0
        while True:
            query = {k: v for k, v in filters.items() if v} | ({"from": cursor} if cursor else {})
            try:
                async for message in self._messages(f"/api/stream?{urlencode(query)}"):
                    if "orderId" not in message:
                        continue  # a control message, not an event
                    event = OrderEvent.of(message)
                    cursor = event.cursor or cursor
                    attempt = 0
                    yield event
                return
            except _Dropped:
                await asyncio.sleep(RECONNECT_S[min(attempt, len(RECONNECT_S) - 1)])
                attempt += 1

    async def _messages(self, path: str) -> AsyncIterator[dict[str, Any]]:
        try:
            async with connect(
                f"{self.ws_url}{path}", additional_headers=self._headers, open_timeout=10
            ) as socket:
                try:
                    async for raw in socket:
                        message = json.loads(raw)
                        if isinstance(message, dict):
                            yield message
                except ConnectionClosed:
                    pass
                code, reason = socket.close_code, socket.close_reason or ""
        except (OSError, TimeoutError, InvalidStatus) as exc:
            raise _Dropped from exc
        if code is None or code not in _FINAL_CLOSES:
            raise _Dropped
        if code != 1000:
            raise StreamClosed(code, reason)


class _Dropped(Exception):
    """The connection ended in a way a reconnect may mend."""


def new_idempotency_key() -> str:
    """Return a fresh idempotency key."""
    return str(uuid.uuid4())
