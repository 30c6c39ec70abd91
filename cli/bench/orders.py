"""``oee bench orders``: market orders end to end, and what each costs every process.

The scenario, run against a whole system (the one ``--url`` names, or a private one
this command starts on free ports with instant venues and a still market):

* N market orders, alternating SOL→USDC 1.5 and USDC→SOL 225, each POSTed with at
  most ``--concurrency`` POSTs outstanding (closed loop), or at ``--rate`` orders a
  second (open loop);
* each order followed on its own WebSocket (``/api/orders/execute?orderId=``) from
  right after its 202 until its terminal event (``--follow firehose`` watches one
  firehose instead, which costs the client far less).

It prints orders per second end to end (first POST to last terminal event), POST
and submit→terminal latency percentiles, outcomes (confirmed, failed, lost: not
ended when, after the last POST, no order has ended for ``--timeout`` seconds),
and the CPU milliseconds per order of every process of the system (read from
``/proc`` before and after) and of itself. The client is aiohttp with keep-alive:
cheap, and it measures its own cost.

With ``--scale SERVICE=N`` (repeatable, as ``oee up --scale``) it runs the scenario
twice, each time on a fresh private system: once with one process of each service,
then with the replicas asked, and prints the two sets of figures side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from adapters.settings import Settings
from cli.bench.system import (
    RunningSystem,
    cpu_by_group,
    cpu_delta,
    private_system,
    processes_by_group,
)
from cli.progress import ProgressLine

ORDERS = (
    {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amount": "1.5", "slippageBps": 100},
    {"type": "market", "tokenIn": "USDC", "tokenOut": "SOL", "amount": "225", "slippageBps": 100},
)
TERMINAL = frozenset({"confirmed", "failed"})


@dataclass
class Order:
    """One order as the client saw it."""

    index: int
    posted_at: float = 0.0
    answered_at: float = 0.0
    order_id: str | None = None
    ended_at: float | None = None
    status: str | None = None
    error: str | None = None
    failure: str | None = None  # the code a failed order ended with
    stream_closed: int | str | None = None  # its WebSocket ended before the order did


@dataclass
class Run:
    """Everything a run measured."""

    orders: list[Order]
    started: float
    cpu_s: dict[str, float] = field(default_factory=dict)
    client_cpu_s: float = 0.0
    processes: dict[str, int] = field(default_factory=dict)  # live processes per service

    def figures(self) -> dict[str, Any]:
        """Return the run's figures: rates, percentiles, outcomes, CPU per order."""
        ended = [(o, o.ended_at) for o in self.orders if o.ended_at is not None]
        accepted = sum(1 for o in self.orders if o.order_id is not None)
        last = max((at for _, at in ended), default=self.started)
        count = len(self.orders)
        posts = sorted((o.answered_at - o.posted_at) * 1000 for o in self.orders if o.answered_at)
        flows = sorted((at - o.posted_at) * 1000 for o, at in ended)
        return {
            "orders": count,
            "seconds": last - self.started,
            "orders_per_s": len(ended) / max(last - self.started, 1e-9),
            "post_ms": {"p50": _pct(posts, 50), "p99": _pct(posts, 99)},
            "submit_to_terminal_ms": {"p50": _pct(flows, 50), "p99": _pct(flows, 99)},
            "outcomes": dict(Counter(o.status for o, _ in ended)),
            "lost": accepted - len(ended),
            "refused": dict(Counter(o.error for o in self.orders if o.error)),
            "failures": dict(Counter(o.failure for o, _ in ended if o.failure)),
            "streams_closed_early": dict(
                Counter(str(o.stream_closed) for o in self.orders if o.stream_closed is not None)
            ),
            "cpu_ms_per_order": {k: v * 1000 / count for k, v in self.cpu_s.items()},
            "client_cpu_ms_per_order": self.client_cpu_s * 1000 / count,
            "processes": dict(self.processes),
        }

    def lines(self) -> list[str]:
        """Return the figures as a person reads them."""
        f = self.figures()
        outcomes = f["outcomes"]
        lines = [
            f"{f['orders']} orders: {f['orders_per_s']:.1f} orders/s end to end "
            f"({f['seconds']:.1f}s from the first POST to the last terminal event)",
            f"POST p50 {f['post_ms']['p50']:.0f} ms, p99 {f['post_ms']['p99']:.0f} ms; "
            f"submit→terminal p50 {f['submit_to_terminal_ms']['p50']:.0f} ms, "
            f"p99 {f['submit_to_terminal_ms']['p99']:.0f} ms",
            f"outcomes: {outcomes.get('confirmed', 0)} confirmed, "
            f"{outcomes.get('failed', 0)} failed, {f['lost']} lost"
            + (f" (failures: {f['failures']})" if f["failures"] else "")
            + (f"; refused: {f['refused']}" if f["refused"] else ""),
        ]
        if f["streams_closed_early"]:
            lines.append(
                f"WebSockets closed before their order ended (then polled): "
                f"{f['streams_closed_early']}"
            )
        cpu = f["cpu_ms_per_order"]
        if cpu:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu.items(), key=lambda i: -i[1]))
            lines.append(f"server CPU per order: {sum(cpu.values()):.2f} ms ({parts})")
        lines.append(f"client CPU per order: {f['client_cpu_ms_per_order']:.2f} ms")
        return lines


def side_by_side(labels: list[str], runs: list[Run]) -> list[str]:
    """Return the figures of several runs as one table, a column per run.

    CPU per order is summed over the processes of a service; a service that ran as
    several processes says how many, e.g. ``20.1 (2)`` on the engine's row.
    """
    figures = [run.figures() for run in runs]

    def ms(value: float) -> str:
        return f"{value:.0f}"

    rows: list[tuple[str, list[str]]] = [
        ("orders/s end to end", [f"{f['orders_per_s']:.1f}" for f in figures]),
        ("seconds, first POST to last end", [f"{f['seconds']:.1f}" for f in figures]),
        ("POST p50 ms", [ms(f["post_ms"]["p50"]) for f in figures]),
        ("POST p99 ms", [ms(f["post_ms"]["p99"]) for f in figures]),
        ("submit→terminal p50 ms", [ms(f["submit_to_terminal_ms"]["p50"]) for f in figures]),
        ("submit→terminal p99 ms", [ms(f["submit_to_terminal_ms"]["p99"]) for f in figures]),
        ("confirmed", [str(f["outcomes"].get("confirmed", 0)) for f in figures]),
        ("failed", [str(f["outcomes"].get("failed", 0)) for f in figures]),
        ("lost", [str(f["lost"]) for f in figures]),
        ("refused", [str(sum(f["refused"].values())) for f in figures]),
        (
            "server CPU ms/order",
            [f"{sum(f['cpu_ms_per_order'].values()):.1f}" for f in figures],
        ),
    ]
    groups = sorted(
        {g for f in figures for g in f["cpu_ms_per_order"]},
        key=lambda g: -max(f["cpu_ms_per_order"].get(g, 0.0) for f in figures),
    )
    for group in groups:
        cells = []
        for f in figures:
            cell = f"{f['cpu_ms_per_order'].get(group, 0.0):.1f}"
            count = f["processes"].get(group, 1)
            cells.append(cell + (f" ({count})" if count > 1 else ""))
        rows.append((f"  {group}", cells))
    rows.append(("client CPU ms/order", [f"{f['client_cpu_ms_per_order']:.1f}" for f in figures]))
    width = max(len(name) for name, _ in rows)
    widths = [
        max(len(label), *(len(cells[i]) for _, cells in rows)) for i, label in enumerate(labels)
    ]
    lines = [
        " " * width + "".join(f"  {label:>{w}}" for label, w in zip(labels, widths, strict=True))
    ]
    for name, cells in rows:
        lines.append(
            f"{name:<{width}}"
            + "".join(f"  {cell:>{w}}" for cell, w in zip(cells, widths, strict=True))
        )
    for label, f in zip(labels, figures, strict=True):
        if f["failures"]:
            lines.append(f"{label}: failures {f['failures']}")
        if f["refused"]:
            lines.append(f"{label}: refused {f['refused']}")
        if f["streams_closed_early"]:
            lines.append(
                f"{label}: WebSockets closed before their order ended (then polled): "
                f"{f['streams_closed_early']}"
            )
    return lines


def scale_label(scale: dict[str, int]) -> str:
    """Return how a column names its replicas: ``1 each`` or ``engine=2``."""
    asked = [f"{name}={n}" for name, n in sorted(scale.items()) if n > 1]
    return ", ".join(asked) or "1 each"


def _pct(values: list[float], percent: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(percent) - 1]


class Bench:
    """Submit the orders and watch them end."""

    def __init__(self, base_url: str, args: argparse.Namespace, auth: dict[str, str]) -> None:
        self.base_url = base_url
        self.auth = auth
        self.ws_url = base_url.replace("http", "ws", 1)
        self.args = args
        self.orders = [Order(i) for i in range(args.orders)]
        self.by_id: dict[str, Order] = {}
        self._ended = 0
        self._refused = 0  # refused POSTs: nothing to wait for
        self._all_ended = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> Run:
        connector = aiohttp.TCPConnector(limit=0)
        # No total: a WebSocket lives as long as its order (the POSTs have their own).
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=self.auth
        ) as http:
            firehose = None
            if self.args.follow == "firehose":
                ready = asyncio.Event()
                firehose = asyncio.create_task(self._firehose(http, ready))
                await ready.wait()
            line = ProgressLine()
            progress = asyncio.create_task(self._progress(line))
            started = time.monotonic()
            await self._submit_all(http)
            await self._wait_for_the_ends()
            progress.cancel()
            if firehose is not None:
                firehose.cancel()
            for task in list(self._tasks):
                task.cancel()
        line.end()
        return Run(self.orders, started)

    async def _wait_for_the_ends(self) -> None:
        """Wait until every order ended, or none has for ``--timeout`` seconds.

        A backlog may take minutes to drain after the last POST; while orders still
        end, the rest are late, not lost.
        """
        posted = time.monotonic()
        while not self._all_ended.is_set():
            last = max((o.ended_at for o in self.orders if o.ended_at), default=posted)
            left = self.args.timeout - (time.monotonic() - max(last, posted))
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_ended.wait(), left)

    async def _submit_all(self, http: aiohttp.ClientSession) -> None:
        if self.args.rate:
            for order in self.orders:
                self._spawn(self._order(http, order))
                await asyncio.sleep(1 / self.args.rate)
            return
        slots = asyncio.Semaphore(self.args.concurrency)

        async def submit(order: Order) -> None:
            async with slots:
                await self._post(http, order)
            if order.order_id is not None and self.args.follow == "socket":
                self._spawn(self._follow(http, order))

        await asyncio.gather(*(submit(o) for o in self.orders))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _order(self, http: aiohttp.ClientSession, order: Order) -> None:
        await self._post(http, order)
        if order.order_id is not None and self.args.follow == "socket":
            await self._follow(http, order)

    async def _post(self, http: aiohttp.ClientSession, order: Order) -> None:
        order.posted_at = time.monotonic()
        try:
            async with http.post(
                f"{self.base_url}/api/orders/execute",
                json=ORDERS[order.index % 2],
                timeout=aiohttp.ClientTimeout(total=60),
            ) as response:
                body = await response.read()
                order.answered_at = time.monotonic()
                if response.status == 202:
                    order.order_id = json.loads(body)["orderId"]
                    self.by_id[order.order_id] = order
                else:
                    self._refuse(order, f"{response.status} {_error_code(body)}".rstrip())
        except (aiohttp.ClientError, TimeoutError) as exc:
            order.answered_at = time.monotonic()
            self._refuse(order, type(exc).__name__)

    def _refuse(self, order: Order, why: str) -> None:
        order.error = why
        self._refused += 1
        self._check_all_ended()

    async def _follow(self, http: aiohttp.ClientSession, order: Order) -> None:
        url = f"{self.ws_url}/api/orders/execute?orderId={order.order_id}"
        try:
            async with http.ws_connect(
                url, heartbeat=None, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=10)
            ) as socket:
                async for message in socket:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        order.stream_closed = socket.close_code or 0
                        break
                    event = json.loads(message.data)
                    if event["status"] in TERMINAL:
                        self._end(order, event)
                        return
        except (aiohttp.ClientError, TimeoutError) as exc:
            order.stream_closed = type(exc).__name__
        # The stream ended early (a limit, a restart): the order is not lost for
        # that; ask for it until it ends, as a client would.
        await self._poll(http, order)

    async def _poll(self, http: aiohttp.ClientSession, order: Order) -> None:
        while order.ended_at is None:
            try:
                async with http.get(f"{self.base_url}/api/orders/{order.order_id}") as response:
                    if response.status == 200:
                        state = await response.json()
                        if state["status"] in TERMINAL:
                            self._end(order, state)
                            return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.5)

    async def _firehose(self, http: aiohttp.ClientSession, ready: asyncio.Event) -> None:
        url = f"{self.ws_url}/api/stream?status=confirmed,failed"
        async with http.ws_connect(url, heartbeat=None, max_msg_size=0) as socket:
            ready.set()
            async for message in socket:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                event = json.loads(message.data)
                order = self.by_id.get(event["orderId"])
                if order is not None:
                    self._end(order, event)

    def _end(self, order: Order, event: dict[str, Any]) -> None:
        if order.ended_at is not None:
            return
        order.ended_at = time.monotonic()
        order.status = event["status"]
        if order.status == "failed":
            details = event.get("details") or {}  # an event; an order read has failureCode
            order.failure = str(details.get("code") or event.get("failureCode") or "?")
        self._ended += 1
        self._check_all_ended()

    def _check_all_ended(self) -> None:
        if self._ended + self._refused >= len(self.orders):
            self._all_ended.set()

    async def _progress(self, line: ProgressLine) -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(2)
            posted = sum(1 for o in self.orders if o.answered_at)
            line.show(
                f"{time.monotonic() - started:6.1f}s  posted {posted}/{len(self.orders)}  "
                f"ended {self._ended}"
            )


def _client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(system: RunningSystem, args: argparse.Namespace) -> Run:
    """Run the scenario against ``system`` with the CPU read before and after."""
    cpu_before = cpu_by_group(system.root_pid)
    client_before = _client_cpu_s()
    run = await Bench(system.base_url, args, system.auth).run()
    run.client_cpu_s = _client_cpu_s() - client_before
    run.cpu_s = cpu_delta(cpu_before, cpu_by_group(system.root_pid))
    if system.root_pid is not None:
        run.processes = processes_by_group(system.root_pid)
    return run


def parser() -> argparse.ArgumentParser:
    """Return the options of ``oee bench orders``."""
    options = argparse.ArgumentParser(prog="oee bench orders", description=__doc__)
    options.add_argument("--orders", type=int, default=1000, help="how many (1000)")
    options.add_argument(
        "--concurrency", type=int, default=64, help="POSTs outstanding at most (64)"
    )
    options.add_argument(
        "--rate", type=float, default=None, help="open loop: orders per second instead"
    )
    options.add_argument(
        "--profile", choices=("instant", "realistic"), default="instant", help="venue latency"
    )
    options.add_argument(
        "--follow",
        choices=("socket", "firehose"),
        default="socket",
        help="one WebSocket per order (default), or one firehose for all",
    )
    options.add_argument(
        "--timeout",
        type=float,
        default=120,
        help="seconds, after the last POST, without any order ending before the rest are lost",
    )
    options.add_argument(
        "--url", help="a running gateway; CPU is then read from every system process here"
    )
    options.add_argument(
        "--scale",
        action="append",
        default=[],
        metavar="SERVICE=N",
        help="as oee up --scale (repeatable): run once with one process of each service "
        "and once with these replicas, each on a fresh private system, side by side",
    )
    options.add_argument("--json", action="store_true", help="print the figures as JSON")
    return options


def _private_run(args: argparse.Namespace, scale: dict[str, int]) -> Run:
    """Run the scenario on a fresh private system with ``scale``'s replicas."""
    with tempfile.TemporaryDirectory(prefix="oee-bench-") as data_dir:
        os.chmod(data_dir, 0o755)  # the embedded PostgreSQL runs as another user
        with private_system(
            data_dir, scale, wait_ready=True, venue_profile=args.profile
        ) as running:
            return asyncio.run(measure(running, args))


def main(argv: list[str], settings: Settings) -> int:
    """Run ``oee bench orders`` and print its figures; exit 1 when an order was lost."""
    args = parser().parse_args(argv)
    if args.scale:
        return _compare(args)
    if args.url:
        run = asyncio.run(measure(RunningSystem(settings, None, url=args.url), args))
    else:
        run = _private_run(args, {})
    if args.json:
        print(json.dumps(run.figures(), indent=2))
    else:
        for line in run.lines():
            print(line)
    return 1 if run.figures()["lost"] else 0


def _compare(args: argparse.Namespace) -> int:
    """Run once with one process of each service and once scaled; print side by side."""
    from cli import SERVICES
    from cli.scale import ScaleError, parse_scale

    try:
        scale = parse_scale(args.scale, SERVICES)
    except ScaleError as exc:
        print(f"oee bench orders: {exc}", file=sys.stderr)
        return 2
    if args.url:
        print(
            "oee bench orders: --scale starts its own systems; it cannot go with --url",
            file=sys.stderr,
        )
        return 2
    scales: list[dict[str, int]] = [{}, scale]
    runs: list[Run] = []
    for asked in scales:
        if not args.json:
            print(f"run {len(runs) + 1} of 2: {scale_label(asked)}", file=sys.stderr)
        runs.append(_private_run(args, asked))
    labels = [scale_label(asked) for asked in scales]
    if args.json:
        print(
            json.dumps(
                {
                    "runs": [
                        {"label": label, "scale": asked, **run.figures()}
                        for label, asked, run in zip(labels, scales, runs, strict=True)
                    ]
                },
                indent=2,
            )
        )
    else:
        print(f"{args.orders} orders, each scale on a fresh private system")
        for line in side_by_side(labels, runs):
            print(line)
    return 1 if any(run.figures()["lost"] for run in runs) else 0


def _error_code(body: bytes) -> str:
    """The ``error.code`` of a refusal's body, or "" when it has none."""
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""
