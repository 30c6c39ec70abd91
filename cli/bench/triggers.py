"""``oee bench triggers``: many armed limit orders, one price move that crosses half.

The scenario, run against a whole system (the one ``--url`` names, or a private one
this command starts on free ports with instant venues and a still market):

1. quote selling a little SOL, then arm N limit sells of it: half with limits just
   above that price (a 4 % move crosses them), half far above (nothing crosses them);
2. move SOL/USDC up 4 % on every venue;
3. keep submitting market orders while the triggered half executes;
4. count, from the firehose, how often each order was triggered and confirmed.

It prints how long arming and the burst took and what market orders saw meanwhile,
and fails (exit code 1) unless exactly the crossing half fired, each once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from websockets.asyncio.client import connect

from adapters.settings import Settings
from cli.bench.system import RunningSystem, private_system

AMOUNT = Decimal("0.01")  # SOL per order: the burst barely moves the pools
MOVE = Decimal("0.04")
# Limits as multiples of the executable price before the move. The move shifts the
# wider market, and the venues' walk then keeps each pool within ±2 % of it:
# 1.04 · 0.98 = 1.019 stays above the crossing band, 1.04 · 1.02 = 1.061 below the other.
CROSSING = (Decimal("1.003"), Decimal("1.012"))
OUT_OF_REACH = (Decimal("1.10"), Decimal("1.12"))
VENUES = ("raydium", "meteora")


@dataclass
class Watch:
    """What the firehose showed: statuses per order and when each arrived."""

    statuses: dict[str, Counter[str]] = field(default_factory=dict)
    first_seen: dict[tuple[str, str], float] = field(default_factory=dict)

    def record(self, message: dict[str, Any]) -> None:
        order_id, status = message["orderId"], message["status"]
        self.statuses.setdefault(order_id, Counter())[status] += 1
        self.first_seen.setdefault((order_id, status), time.monotonic())

    def count(self, orders: list[str], status: str) -> int:
        return sum(1 for o in orders if self.statuses.get(o, Counter())[status] > 0)


@dataclass(frozen=True)
class BurstReport:
    """The figures of one run."""

    orders: int
    crossing: int
    submit_s: float
    arm_s: float
    burst_s: float
    fired: int
    fired_twice: int
    fired_out_of_reach: int
    confirmed: int
    still_armed: int
    market_idle_ms: float
    market_during_ms: list[float]

    @property
    def ok(self) -> bool:
        return (
            self.fired == self.crossing
            and self.fired_twice == 0
            and self.fired_out_of_reach == 0
            and self.still_armed == self.orders - self.crossing
        )

    def lines(self) -> list[str]:
        during = sorted(self.market_during_ms)
        return [
            f"armed {self.orders} limit orders: submitted in {self.submit_s:.1f}s "
            f"({self.orders / self.submit_s:.0f}/s), all armed after {self.arm_s:.1f}s",
            f"price move crossing {self.crossing}: {self.fired} fired "
            f"({self.fired_twice} twice, {self.fired_out_of_reach} beyond reach), "
            f"{self.confirmed} confirmed in {self.burst_s:.1f}s "
            f"({self.confirmed / self.burst_s:.0f}/s); {self.still_armed} still armed",
            f"market orders: {self.market_idle_ms:.0f} ms idle; during the burst "
            f"p50 {statistics.median(during):.0f} ms, max {during[-1]:.0f} ms "
            f"({len(during)} orders)",
            "exactly the crossing half fired, each once" if self.ok else "FAILED",
        ]


async def _watch(ws_url: str, watch: Watch, ready: asyncio.Event, auth: dict[str, str]) -> None:
    async with connect(f"{ws_url}/api/stream", max_queue=None, additional_headers=auth) as socket:
        ready.set()
        async for raw in socket:
            watch.record(json.loads(raw))
    # The firehose never ends by itself: a close means this observer was dropped.
    raise RuntimeError(f"the firehose closed ({socket.close_code} {socket.close_reason})")


async def _submit(http: httpx.AsyncClient, body: dict[str, Any], attempts: int = 3) -> str:
    # A connection can be closed under a request without an answer: the key makes
    # the retry safe (the same order is found, not a second one placed).
    headers = {"Idempotency-Key": f"burst-{uuid.uuid4()}"}
    for attempt in range(1, attempts + 1):
        try:
            response = await http.post("/api/orders/execute", json=body, headers=headers)
        except httpx.TransportError:
            if attempt == attempts:
                raise
            await asyncio.sleep(0.5)
            continue
        response.raise_for_status()
        return str(response.json()["orderId"])
    raise AssertionError("unreachable")


async def _until(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.2)


def _limits(price: Decimal, band: tuple[Decimal, Decimal], count: int) -> list[Decimal]:
    low, high = band
    step = (high - low) / max(count - 1, 1)
    return [(price * (low + step * i)).quantize(Decimal("0.0001")) for i in range(count)]


async def trigger_burst(
    system: RunningSystem, orders: int = 10_000, concurrency: int = 32
) -> BurstReport:
    """Run the scenario against ``system`` and return its figures."""
    base_url = system.base_url
    ws_url = base_url.replace("http", "ws", 1)
    watch = Watch()
    ready = asyncio.Event()
    watcher = asyncio.create_task(_watch(ws_url, watch, ready, system.auth))
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=60, limits=limits, headers=system.auth
    ) as http:
        await ready.wait()
        market = {"type": "market", "tokenIn": "USDC", "tokenOut": "SOL", "amount": "5"}
        idle_ms = await _market_latency(http, watch, market)

        quote = await http.get(
            "/api/quotes", params={"tokenIn": "SOL", "tokenOut": "USDC", "amount": str(AMOUNT)}
        )
        price = Decimal(quote.json()["route"]["expectedOut"]) / AMOUNT
        crossing = orders // 2
        bodies = [
            {
                "type": "limit",
                "tokenIn": "SOL",
                "tokenOut": "USDC",
                "amount": str(AMOUNT),
                "slippageBps": 100,
                "limitPrice": str(limit),
            }
            for limit in _limits(price, CROSSING, crossing)
            + _limits(price, OUT_OF_REACH, orders - crossing)
        ]
        started = time.monotonic()
        gate = asyncio.Semaphore(concurrency)

        async def submit(body: dict[str, Any]) -> str:
            async with gate:
                return await _submit(http, body)

        ids = await asyncio.gather(*(submit(b) for b in bodies))
        submit_s = time.monotonic() - started
        await _until(lambda: watch.count(ids, "armed") == orders, 600, "every order armed")
        arm_s = time.monotonic() - started

        venues_auth = {"Authorization": f"Bearer {system.settings.admin_token()}"}
        async with httpx.AsyncClient(
            base_url=system.settings.venues_url, timeout=30, headers=venues_auth
        ) as venues:
            for name in VENUES:
                moved = await venues.post(
                    f"/venues/{name}/price-moves",
                    json={
                        "token_in": "SOL",
                        "token_out": "USDC",
                        "fraction": str(MOVE),
                        "market": True,
                    },
                )
                moved.raise_for_status()
        burst_started = time.monotonic()
        crossing_ids, other_ids = ids[:crossing], ids[crossing:]

        during: list[float] = []

        def done() -> bool:
            return (
                watch.count(crossing_ids, "confirmed") + watch.count(crossing_ids, "failed")
                >= crossing
            )

        while not done():
            if watcher.done():
                watcher.result()  # the observer failed: say why
            if time.monotonic() - burst_started > 900:
                raise TimeoutError("the burst did not finish within 900 s")
            during.append(await _market_latency(http, watch, market))
            await asyncio.sleep(0.5)
        burst_s = time.monotonic() - burst_started
        await asyncio.sleep(2)  # let any second firing show up
    watcher.cancel()
    fired = watch.count(crossing_ids, "triggered")
    twice = sum(1 for o in ids if watch.statuses.get(o, Counter())["triggered"] > 1)
    return BurstReport(
        orders=orders,
        crossing=crossing,
        submit_s=submit_s,
        arm_s=arm_s,
        burst_s=burst_s,
        fired=fired,
        fired_twice=twice,
        fired_out_of_reach=watch.count(other_ids, "triggered"),
        confirmed=watch.count(crossing_ids, "confirmed"),
        still_armed=sum(
            1
            for o in other_ids
            if not watch.statuses.get(o, Counter()).keys() - {"pending", "armed"}
        ),
        market_idle_ms=idle_ms,
        market_during_ms=during or [0.0],
    )


async def _market_latency(http: httpx.AsyncClient, watch: Watch, body: dict[str, Any]) -> float:
    """Return how long one market order takes from POST to its end, in ms.

    It may fail rather than confirm (the burst moves the pool under it, and a swap
    that slipped past its bound on every attempt fails): it was served all the same.
    """
    started = time.monotonic()
    order_id = await _submit(http, body)

    def ended() -> float | None:
        return watch.first_seen.get((order_id, "confirmed")) or watch.first_seen.get(
            (order_id, "failed")
        )

    await _until(lambda: ended() is not None, 120, "a market order to end")
    return ((ended() or started) - started) * 1000


def main(argv: list[str], settings: Settings) -> int:
    """Run ``oee bench triggers`` and print its figures."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(prog="oee bench triggers")
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--url", help="an already running gateway (its venues at OEE_VENUES_* settings)"
    )
    args = parser.parse_args(argv)
    if args.url:
        running = RunningSystem(settings, None, url=args.url)
        report = asyncio.run(trigger_burst(running, args.orders, args.concurrency))
    else:
        with tempfile.TemporaryDirectory(prefix="oee-bench-") as data_dir:
            os.chmod(data_dir, 0o755)  # the embedded PostgreSQL runs as another user
            with private_system(data_dir) as running:
                report = asyncio.run(trigger_burst(running, args.orders, args.concurrency))
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1
