"""Submit a market order and print each status as it happens.

./oee up                                   # in another terminal
.venv/bin/python examples/client.py SOL USDC 1.5
.venv/bin/python examples/client.py USDC SOL 250 --slippage-bps 100 --count 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


def describe(status: str, details: dict[str, Any]) -> str:
    """Return the interesting part of an event's details, for one line of output."""
    match status:
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


async def follow(base: str, order_id: str, started: float) -> str:
    """Print every event of one order until it ends; return its last status."""
    ws_base = base.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    status = "unknown"
    async with connect(f"{ws_base}/api/orders/execute?orderId={order_id}") as socket:
        try:
            async for raw in socket:
                event = json.loads(raw)
                status = event["status"]
                line = describe(status, event["details"])
                elapsed = time.perf_counter() - started
                print(f"{order_id[:8]} {elapsed:6.2f}s #{event['seq']} {status:<9} {line}")
        except ConnectionClosed:
            pass
    return status


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("token_in", nargs="?", default="SOL")
    parser.add_argument("token_out", nargs="?", default="USDC")
    parser.add_argument("amount", nargs="?", default="1.5")
    parser.add_argument("--slippage-bps", type=int, default=50)
    parser.add_argument("--count", type=int, default=1, help="orders to submit at once")
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    args = parser.parse_args()

    body = {
        "type": "market",
        "tokenIn": args.token_in,
        "tokenOut": args.token_out,
        "amount": args.amount,
        "slippageBps": args.slippage_bps,
    }
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=args.url, timeout=10) as http:
        responses = await asyncio.gather(
            *(http.post("/api/orders/execute", json=body) for _ in range(args.count))
        )
    order_ids = []
    for response in responses:
        if response.status_code != 202:
            print(f"rejected ({response.status_code}): {response.json()['error']}")
            return 1
        order_ids.append(response.json()["orderId"])
    print(f"submitted {len(order_ids)} order(s): {body}")
    finals = await asyncio.gather(*(follow(args.url, oid, started) for oid in order_ids))
    print(f"done in {time.perf_counter() - started:.2f}s: {finals.count('confirmed')} confirmed")
    return 0 if all(status == "confirmed" for status in finals) else 2


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
