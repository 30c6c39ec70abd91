"""``oee submit``, ``oee cancel``, ``oee follow`` and ``oee watch``: the API from a terminal.

Each event is one coloured line as it happens (``rich``); ``follow`` and ``watch``
reconnect by themselves (``adapters.gateway_client``). Exit codes: 0 when the order
confirmed (or the request was done), 1 when the API refused it, 2 when the order
ended otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.markup import escape

from adapters.gateway_client import (
    ApiError,
    GatewayClient,
    OrderEvent,
    OrderRequest,
    StreamClosed,
    new_idempotency_key,
)
from adapters.settings import DEV_KEY_SECRET, Settings, secret_path

console = Console(highlight=False)

COLOURS = {
    "pending": "white",
    "armed": "cyan",
    "triggered": "cyan",
    "routing": "blue",
    "building": "blue",
    "submitted": "magenta",
    "retrying": "yellow",
    "confirmed": "bold green",
    "failed": "bold red",
    "cancelled": "yellow",
    "expired": "yellow",
}


def describe(event: OrderEvent) -> str:
    """Return the interesting part of an event's details, for one line of output."""
    d = event.details
    match event.status:
        case "pending":
            spec = d.get("spec", {})
            price = spec.get("limitPrice") or spec.get("maxPrice")
            return f"{spec.get('orderType', 'market')}" + (f" price={price}" if price else "")
        case "armed" | "cancelled":
            return str(d.get("reason", ""))
        case "triggered":
            return f"price={d.get('price')} venue={d.get('venue')} ({d.get('reason')})"
        case "expired":
            return f"at {d.get('expiresAt')}"
        case "routing":
            return f"venue={d.get('venue')} ({d.get('reason')})"
        case "building":
            return f"minOut={d.get('minAmountOut')} steps={d.get('steps')}"
        case "submitted":
            return f"tx={str(d.get('txHash', ''))[:16]}…"
        case "confirmed":
            return f"out={d.get('amountOut')} price={str(d.get('executedPrice', ''))[:12]}"
        case "retrying":
            return f"attempt {d.get('attempt')} {d.get('code')}, retry at {d.get('retryAt')}"
        case "failed":
            return f"{d.get('code')}: {d.get('reason')}"
    return ""


def show(event: OrderEvent, started: float | None = None) -> None:
    colour = COLOURS.get(event.status, "white")
    when = f"{time.perf_counter() - started:6.2f}s " if started is not None else ""
    console.print(
        f"[dim]{event.order_id[:8]}[/] {when}#{event.seq:<2} "
        f"[{colour}]{event.status:<9}[/] {escape(describe(event))}"
    )


def _url(args: argparse.Namespace, settings: Settings) -> str:
    if args.url:
        return str(args.url)
    return settings.gateway_url


def _key(settings: Settings) -> str | None:
    """Return the API key to send: ``OEE_API_KEY``, else the development key of the
    system ``oee up`` runs from this data directory, if there is one."""
    key = os.environ.get("OEE_API_KEY") or settings.dev_api_key
    stored = secret_path(settings.data_dir, DEV_KEY_SECRET)
    if not key and stored.exists():
        key = stored.read_text().strip() or None
    return key


def _client(args: argparse.Namespace, settings: Settings) -> GatewayClient:
    return GatewayClient(_url(args, settings), api_key=_key(settings))


def _refused(exc: ApiError) -> int:
    console.print(f"[bold red]refused[/] {escape(str(exc))}")
    return 1


async def _follow(api: GatewayClient, order_id: str, last_seq: int, started: float) -> int:
    last: OrderEvent | None = None
    try:
        async for event in api.follow(order_id, last_seq=last_seq):
            show(event, started)
            last = event
    except StreamClosed as exc:
        console.print(f"[bold red]stream closed[/] {exc.code}: {escape(exc.reason)}")
        return 1
    return 0 if last is None or last.status == "confirmed" else 2


def order_request(args: argparse.Namespace) -> OrderRequest:
    """Return the order the command line describes (``examples/client.py`` too)."""
    expires_at = None
    if args.expires_in is not None:
        expires = datetime.now(UTC) + timedelta(seconds=args.expires_in)
        expires_at = expires.isoformat(timespec="seconds").replace("+00:00", "Z")
    return OrderRequest(
        token_in=args.token_in,
        token_out=args.token_out,
        amount=args.amount,
        type=args.type,
        slippage_bps=args.slippage_bps,
        limit_price=args.limit_price,
        max_price=args.max_price,
        expires_at=expires_at,
        client_order_id=args.client_order_id,
    )


async def submit(args: argparse.Namespace, settings: Settings) -> int:
    started = time.perf_counter()
    async with _client(args, settings) as api:
        try:
            submitted = await api.submit(
                order_request(args), idempotency_key=args.idempotency_key or new_idempotency_key()
            )
        except ApiError as exc:
            return _refused(exc)
        console.print(f"submitted [bold]{submitted.order_id}[/] ({submitted.status})")
        if args.no_follow:
            return 0
        return await _follow(api, submitted.order_id, 0, started)


async def cancel(args: argparse.Namespace, settings: Settings) -> int:
    async with _client(args, settings) as api:
        try:
            outcome = await api.cancel(args.order_id)
        except ApiError as exc:
            return _refused(exc)
    if outcome == "cancelled":
        console.print(f"[yellow]cancelled[/] {args.order_id}")
    else:
        console.print(f"cancel of {args.order_id} requested; the engine has not answered yet")
    return 0


async def follow(args: argparse.Namespace, settings: Settings) -> int:
    async with _client(args, settings) as api:
        return await _follow(api, args.order_id, args.last_seq, time.perf_counter())


async def _limited(
    events: AsyncIterator[OrderEvent], count: int | None
) -> AsyncIterator[OrderEvent]:
    seen = 0
    async for event in events:
        yield event
        seen += 1
        if count is not None and seen >= count:
            return


async def watch(args: argparse.Namespace, settings: Settings) -> int:
    async with _client(args, settings) as api:
        events = api.watch(
            status=args.status, token=args.token, venue=args.venue, type=args.type, start=args.start
        )
        try:
            async for event in _limited(events, args.count):
                show(event)
        except StreamClosed as exc:
            console.print(f"[bold red]stream closed[/] {exc.code}: {escape(exc.reason)}")
            return 1
    return 0


def add_commands(sub: Any) -> None:
    """Add the client's subcommands to ``oee``'s parser."""
    url = {"help": "the gateway (default: the one `oee up` runs)", "default": None}

    p = sub.add_parser("submit", help="submit an order and follow it to its end")
    p.add_argument("token_in")
    p.add_argument("token_out")
    p.add_argument("amount", help="a decimal amount of token_in, e.g. 1.5")
    p.add_argument("--type", choices=("market", "limit", "sniper"), default="market")
    p.add_argument("--slippage-bps", type=int, default=50)
    p.add_argument("--limit-price", help="limit orders: quote per base")
    p.add_argument("--max-price", help="sniper orders: the most to pay, quote per base")
    p.add_argument("--expires-in", type=float, metavar="SECONDS")
    p.add_argument("--client-order-id")
    p.add_argument("--idempotency-key", help="default: a fresh one")
    p.add_argument("--no-follow", action="store_true", help="print the order id and exit")
    p.add_argument("--url", **url)
    p.set_defaults(handler=lambda a, s: asyncio.run(submit(a, s)))

    p = sub.add_parser("cancel", help="cancel an armed limit or sniper order")
    p.add_argument("order_id")
    p.add_argument("--url", **url)
    p.set_defaults(handler=lambda a, s: asyncio.run(cancel(a, s)))

    p = sub.add_parser("follow", help="print an order's events until it ends (reconnecting)")
    p.add_argument("order_id")
    p.add_argument("--last-seq", type=int, default=0, help="only the events after this seq")
    p.add_argument("--url", **url)
    p.set_defaults(handler=lambda a, s: asyncio.run(follow(a, s)))

    p = sub.add_parser("watch", help="print the firehose of order events, filtered")
    p.add_argument("--status", help="comma-separated statuses, e.g. confirmed,failed")
    p.add_argument("--token", help="comma-separated token symbols")
    p.add_argument("--venue", help="comma-separated venues")
    p.add_argument("--type", help="comma-separated order types")
    p.add_argument("--from", dest="start", help="`earliest` or a cursor (default: now)")
    p.add_argument("--count", type=int, help="stop after this many events")
    p.add_argument("--url", **url)
    p.set_defaults(handler=lambda a, s: asyncio.run(watch(a, s)))
