"""Submit market, limit or sniper orders and print each status as it happens.

./oee up                                   # in another terminal
.venv/bin/python examples/client.py SOL USDC 1.5
.venv/bin/python examples/client.py USDC SOL 250 --slippage-bps 100 --count 5
.venv/bin/python examples/client.py SOL USDC 1 --type limit --limit-price 151 --expires-in 60
.venv/bin/python examples/client.py --cancel ORDER_ID
.venv/bin/python examples/client.py --launch PEPE --liquidity-usd 50000
.venv/bin/python examples/client.py SOL PEPE 0.5 --type sniper --max-price 0.001 --launch PEPE

The API key comes from ``--key`` or ``OEE_API_KEY`` (``./oee up`` prints the
development key; ``./oee keys create NAME`` makes another).

Limit and maximum prices are in the pair's quote token per one base token (SOL/USDC
in USDC per SOL), whichever way the order goes. A sniper given ``--launch`` is
submitted first and the token launched once the order is armed, so it catches it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

TERMINAL = frozenset({"confirmed", "failed", "cancelled", "expired"})


def describe(status: str, details: dict[str, Any]) -> str:
    """Return the interesting part of an event's details, for one line of output."""
    match status:
        case "pending":
            spec = details["spec"]
            price = spec.get("limitPrice") or spec.get("maxPrice")
            return f"{spec.get('orderType', 'market')}" + (f" price={price}" if price else "")
        case "armed":
            return str(details["reason"])
        case "triggered":
            return (
                f"price={details.get('price')} venue={details.get('venue')} ({details['reason']})"
            )
        case "cancelled":
            return str(details["reason"])
        case "expired":
            return f"at {details['expiresAt']}"
        case "routing":
            return f"venue={details['venue']} ({details['reason']})"
        case "building":
            return f"minOut={details['minAmountOut']} steps={details['steps']}"
        case "submitted":
            return f"tx={details['txHash'][:16]}..."
        case "confirmed":
            return f"out={details['amountOut']} price={details['executedPrice'][:12]}"
        case "retrying":
            return f"attempt {details['attempt']} {details['code']}, retry at {details['retryAt']}"
        case "failed":
            return f"{details['code']}: {details['reason']}"
    return ""


def headers(args: argparse.Namespace) -> dict[str, str]:
    """Return the headers every call carries: the API key."""
    return {"Authorization": f"Bearer {args.key}"}


async def follow(
    base: str,
    order_id: str,
    started: float,
    auth: dict[str, str],
    armed: asyncio.Event | None = None,
) -> str:
    """Print every event of one order until it ends; return its last status.

    ``armed`` is set once the order is armed, or has ended without being armed.
    """
    ws_base = base.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    status = "unknown"
    async with connect(
        f"{ws_base}/api/orders/execute?orderId={order_id}", additional_headers=auth
    ) as socket:
        try:
            async for raw in socket:
                event = json.loads(raw)
                status = event["status"]
                line = describe(status, event["details"])
                elapsed = time.perf_counter() - started
                print(f"{order_id[:8]} {elapsed:6.2f}s #{event['seq']} {status:<9} {line}")
                if status == "armed" and armed is not None:
                    armed.set()
        except ConnectionClosed:
            pass
        finally:
            if armed is not None:
                armed.set()
    return status


def order_body(args: argparse.Namespace) -> dict[str, Any]:
    """Return the request body of the order the arguments describe."""
    body: dict[str, Any] = {
        "type": args.type,
        "tokenIn": args.token_in,
        "tokenOut": args.token_out,
        "amount": args.amount,
        "slippageBps": args.slippage_bps,
    }
    if args.limit_price is not None:
        body["limitPrice"] = args.limit_price
    if args.max_price is not None:
        body["maxPrice"] = args.max_price
    if args.expires_in is not None:
        expires = datetime.now(UTC) + timedelta(seconds=args.expires_in)
        body["expiresAt"] = expires.isoformat(timespec="seconds").replace("+00:00", "Z")
    return body


def error_of(response: httpx.Response) -> str:
    """Return the API error of a refused request, as one line."""
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code}: {response.text[:200]}"
    known = error.get("status")
    status = f" (order is {known})" if known and known not in error["message"] else ""
    field = f" [{error['field']}]" if error.get("field") else ""
    return f"{response.status_code} {error['code']}{field}: {error['message']}{status}"


async def cancel(http: httpx.AsyncClient, order_id: str) -> int:
    """Cancel an armed order; print the outcome."""
    response = await http.post(f"/api/orders/{order_id}/cancel")
    if response.status_code == 200:
        print(f"cancelled {order_id}")
        return 0
    if response.status_code == 202:
        print(f"cancel of {order_id} requested; the engine has not answered yet")
        return 0
    print(f"not cancelled: {error_of(response)}")
    return 1


async def launch(http: httpx.AsyncClient, args: argparse.Namespace) -> int:
    """Launch a token in a new pool (simulation); print the pool."""
    body: dict[str, Any] = {"symbol": args.launch, "venue": args.venue}
    if args.liquidity_usd is not None:
        body["liquidityUsd"] = args.liquidity_usd
    response = await http.post("/api/simulate/launch", json=body)
    if response.status_code != 201:
        print(f"launch refused: {error_of(response)}")
        return 1
    pool = response.json()
    print(
        f"launched {pool.get('base', args.launch)}/{pool.get('quote', '?')} on "
        f"{pool.get('venue', args.venue)} at {pool.get('price')} "
        f"with {pool.get('liquidityUsd')} USD (mint {pool.get('baseMint')})"
    )
    return 0


async def submit(args: argparse.Namespace) -> int:
    """Submit ``--count`` orders, follow them to their end; launch a sniper's token."""
    body = order_body(args)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=args.url, headers=headers(args), timeout=10) as http:
        responses = await asyncio.gather(
            *(http.post("/api/orders/execute", json=body) for _ in range(args.count))
        )
        order_ids = []
        for response in responses:
            if response.status_code != 202:
                print(f"rejected: {error_of(response)}")
                return 1
            order_ids.append(response.json()["orderId"])
        print(f"submitted {len(order_ids)} order(s): {body}")
        armed = [asyncio.Event() for _ in order_ids]
        follows = asyncio.gather(
            *(
                follow(args.url, oid, started, headers(args), flag)
                for oid, flag in zip(order_ids, armed, strict=True)
            )
        )
        if args.launch:
            # Launch only once every sniper waits for the token, so that they catch it.
            await asyncio.gather(*(flag.wait() for flag in armed))
            if await launch(http, args):
                follows.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follows
                return 1
        finals = await follows
    print(f"done in {time.perf_counter() - started:.2f}s: {finals.count('confirmed')} confirmed")
    return 0 if all(status == "confirmed" for status in finals) else 2


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("token_in", nargs="?", default="SOL")
    parser.add_argument("token_out", nargs="?", default="USDC")
    parser.add_argument("amount", nargs="?", default="1.5")
    parser.add_argument("--type", choices=("market", "limit", "sniper"), default="market")
    parser.add_argument("--limit-price", help="limit orders: quote per base, e.g. 151")
    parser.add_argument("--max-price", help="sniper orders: the most to pay, quote per base")
    parser.add_argument(
        "--expires-in", type=float, metavar="SECONDS", help="limit and sniper orders"
    )
    parser.add_argument("--slippage-bps", type=int, default=50)
    parser.add_argument("--count", type=int, default=1, help="orders to submit at once")
    parser.add_argument("--cancel", metavar="ORDER_ID", help="cancel an armed order, then exit")
    parser.add_argument(
        "--launch",
        metavar="SYMBOL",
        help="launch a token (with --type sniper: once the orders are armed)",
    )
    parser.add_argument("--liquidity-usd", help="liquidity of the launched pool, in USD")
    parser.add_argument("--venue", default="raydium", help="venue of the launched pool")
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument(
        "--key", default=os.environ.get("OEE_API_KEY"), help="API key (default: $OEE_API_KEY)"
    )
    args = parser.parse_args()
    if not args.key:
        parser.error("an API key is needed: --key or OEE_API_KEY (`./oee up` prints one)")
    if args.type == "limit" and args.limit_price is None:
        parser.error("--type limit needs --limit-price")
    if args.limit_price is not None and args.type != "limit":
        parser.error("--limit-price is for --type limit")
    if args.max_price is not None and args.type != "sniper":
        parser.error("--max-price is for --type sniper")
    if args.expires_in is not None and args.type == "market":
        parser.error("--expires-in is for limit and sniper orders")

    if args.cancel:
        async with httpx.AsyncClient(base_url=args.url, headers=headers(args), timeout=30) as http:
            return await cancel(http, args.cancel)
    if args.launch and args.type != "sniper":
        async with httpx.AsyncClient(base_url=args.url, headers=headers(args), timeout=10) as http:
            return await launch(http, args)
    return await submit(args)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
