"""Submit market, limit or sniper orders and print each status as it happens.

./oee up                                   # in another terminal
.venv/bin/python examples/client.py SOL USDC 1.5     # (the same client as `oee submit`)
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
import os
import sys
import time

from adapters.gateway_client import ApiError, GatewayClient
from cli.client import describe, order_request


async def follow(
    api: GatewayClient, order_id: str, started: float, armed: asyncio.Event | None = None
) -> str:
    """Print every event of one order until it ends; return its last status.

    ``armed`` is set once the order is armed, or has ended without being armed.
    """
    status = "unknown"
    try:
        async for event in api.follow(order_id):
            status = event.status
            elapsed = time.perf_counter() - started
            print(f"{order_id[:8]} {elapsed:6.2f}s #{event.seq} {status:<9} {describe(event)}")
            if status == "armed" and armed is not None:
                armed.set()
    finally:
        if armed is not None:
            armed.set()
    return status


async def cancel(api: GatewayClient, order_id: str) -> int:
    """Cancel an armed order; print the outcome."""
    try:
        outcome = await api.cancel(order_id)
    except ApiError as exc:
        print(f"not cancelled: {exc}")
        return 1
    if outcome == "cancelled":
        print(f"cancelled {order_id}")
    else:
        print(f"cancel of {order_id} requested; the engine has not answered yet")
    return 0


async def launch(api: GatewayClient, args: argparse.Namespace) -> int:
    """Launch a token in a new pool (simulation); print the pool."""
    try:
        pool = await api.launch(args.launch, venue=args.venue, liquidity_usd=args.liquidity_usd)
    except ApiError as exc:
        print(f"launch refused: {exc}")
        return 1
    print(
        f"launched {pool.get('base', args.launch)}/{pool.get('quote', '?')} on "
        f"{pool.get('venue', args.venue)} at {pool.get('price')} "
        f"with {pool.get('liquidityUsd')} USD (mint {pool.get('baseMint')})"
    )
    return 0


async def submit(api: GatewayClient, args: argparse.Namespace) -> int:
    """Submit ``--count`` orders, follow them to their end; launch a sniper's token."""
    order = order_request(args)
    started = time.perf_counter()
    try:
        submitted = await asyncio.gather(*(api.submit(order) for _ in range(args.count)))
    except ApiError as exc:
        print(f"rejected: {exc}")
        return 1
    order_ids = [s.order_id for s in submitted]
    print(f"submitted {len(order_ids)} order(s): {order.body()}")
    armed = [asyncio.Event() for _ in order_ids]
    follows = asyncio.gather(
        *(follow(api, oid, started, flag) for oid, flag in zip(order_ids, armed, strict=True))
    )
    if args.launch:
        # Launch only once every sniper waits for the token, so that they catch it.
        await asyncio.gather(*(flag.wait() for flag in armed))
        if await launch(api, args):
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
    parser.add_argument("--client-order-id", help="your own reference for the order")
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

    async with GatewayClient(args.url, api_key=args.key, timeout=30) as api:
        if args.cancel:
            return await cancel(api, args.cancel)
        if args.launch and args.type != "sniper":
            return await launch(api, args)
        return await submit(api, args)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
