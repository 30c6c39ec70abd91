"""The fault suite's tools: a demanding client, the log as the truth, and the verdict.

A scenario runs the whole system as processes, puts it under load with a client
that behaves as a careful user would (an Idempotency-Key per order, retried until
the gateway accepts it), injects a fault with kill -9, and then checks what must
hold whatever happened:

* lost: every order the gateway accepted (202) ends (confirmed or failed);
* executed twice: no order has more than one swap that landed on a venue;
* gaps: every order's events, first occurrence per sequence number, count 1, 2, 3...;
* replay: the read models equal a rebuild from the log (``oee replay --check``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import httpx

from adapters.log_reader import read_topics
from adapters.settings import Settings
from cli.audit import run_audit
from cli.bench.system import RunningSystem, group_members
from cli.reconcile import Limits
from events.messages import Command, DecodeError, Event, decode
from projections.analytics.handler import AnalyticsProjection
from projections.orders.handler import OrdersProjection
from services.projector.replay import check
from tests.auth import AUTH, venue_auth


class Running(Protocol):
    """A whole system to check: its settings and its gateway's address."""

    @property
    def settings(self) -> Settings: ...

    @property
    def base_url(self) -> str: ...


T = TypeVar("T")
# Orders per fault run: sized for CI; OEE_FAULT_ORDERS=400 runs the size.
FAULT_ORDERS = int(os.environ.get("OEE_FAULT_ORDERS", "150"))
TERMINAL = {"confirmed", "failed"}
MARKET_ORDERS = (
    {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amount": "0.5", "slippageBps": 300},
    {"type": "market", "tokenIn": "USDC", "tokenOut": "SOL", "amount": "75", "slippageBps": 300},
)
# A limit sell any market reaches: armed, then fired by the trigger service at once.
CROSSED_LIMIT = {
    "type": "limit",
    "tokenIn": "SOL",
    "tokenOut": "USDC",
    "amount": "0.5",
    "slippageBps": 300,
    "limitPrice": "1",
}


@dataclass
class Submission:
    """One order as the client sees it."""

    key: str
    body: dict[str, Any]
    order_id: str | None = None
    accepted_at: float | None = None  # monotonic
    attempts: int = 0
    errors: list[int] = field(default_factory=list)  # status codes (0: no answer)
    slowest_answer_s: float = 0.0


@dataclass
class Load:
    """Orders submitted at a steady rate by a careful client."""

    base_url: str
    count: int
    rate: float
    deadline_s: float = 120.0
    # Every n-th order is a limit order that fires at once (0: market orders only).
    limit_every: int = 0
    submissions: list[Submission] = field(default_factory=list)

    async def run(self) -> None:
        """Submit every order, each retried with its key until accepted or the deadline."""
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=AUTH, timeout=15, limits=limits
        ) as http:
            tasks = []
            for index in range(self.count):
                limit = self.limit_every and index % self.limit_every == 0
                body = CROSSED_LIMIT if limit else MARKET_ORDERS[index % len(MARKET_ORDERS)]
                submission = Submission(f"fault-{uuid.uuid4()}", dict(body))
                self.submissions.append(submission)
                tasks.append(asyncio.create_task(self._submit(http, submission)))
                await asyncio.sleep(1 / self.rate)
            await asyncio.gather(*tasks)

    async def _submit(self, http: httpx.AsyncClient, submission: Submission) -> None:
        give_up = time.monotonic() + self.deadline_s
        while time.monotonic() < give_up:
            submission.attempts += 1
            started = time.monotonic()
            try:
                response = await http.post(
                    "/api/orders/execute",
                    json=submission.body,
                    headers={"Idempotency-Key": submission.key},
                )
            except httpx.HTTPError:
                status = 0
            else:
                status = response.status_code
            submission.slowest_answer_s = max(
                submission.slowest_answer_s, time.monotonic() - started
            )
            if status == 202:
                submission.order_id = response.json()["orderId"]
                submission.accepted_at = time.monotonic()
                return
            submission.errors.append(status)
            await asyncio.sleep(0.5)

    @property
    def accepted(self) -> list[str]:
        return [s.order_id for s in self.submissions if s.order_id is not None]

    def first_accepted_after(self, moment: float) -> float | None:
        """Return when the first order was accepted after ``moment`` (monotonic)."""
        times = [s.accepted_at for s in self.submissions if s.accepted_at is not None]
        later = [t for t in times if t > moment]
        return min(later) if later else None


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, within_s: float, every_s: float = 0.2
) -> T | None:
    """Return the first answer of ``probe`` that is not None, or None after ``within_s``."""
    for _ in range(max(1, round(within_s / every_s))):
        found = await probe()
        if found is not None:
            return found
        await asyncio.sleep(every_s)
    return await probe()


async def read_log(settings: Settings, topic: str) -> list[tuple[int, int, Command | Event]]:
    """Return every decodable message of ``topic``: (partition, offset, message)."""
    found: list[tuple[int, int, Command | Event]] = []
    async with read_topics(settings, [topic]) as snapshot:
        async for batch in snapshot.batches():
            for record in batch:
                try:
                    found.append((record.partition, record.offset, decode(record.value or b"")))
                except DecodeError:
                    continue
    return found


async def order_events(settings: Settings) -> dict[str, dict[int, Event]]:
    """Return each order's events by sequence number, the first occurrence winning."""
    histories: dict[str, dict[int, Event]] = defaultdict(dict)
    for _, _, message in await read_log(settings, settings.events_topic):
        if isinstance(message, Event):
            histories[str(message.order_id)].setdefault(message.seq, message)
    return histories


async def venue_swaps(system: Running) -> dict[str, list[dict[str, Any]]]:
    """Return every swap each venue knows, by order id (from the swap's client reference)."""
    swaps: dict[str, list[dict[str, Any]]] = defaultdict(list)
    async with httpx.AsyncClient(
        base_url=system.settings.venues_url, headers=venue_auth(system.settings), timeout=10
    ) as http:
        venues = (await http.get("/venues")).json()["venues"]
        for venue in venues:
            ledger = (await http.get(f"/venues/{venue['name']}/ledger")).json()
            for swap in ledger["swaps"]:
                order_id = swap["client_ref"].split(":")[0]
                swaps[order_id].append(swap)
    return swaps


async def wait_until_ended(
    settings: Settings, order_ids: list[str], within_s: float
) -> dict[str, dict[int, Event]]:
    """Wait until every order's last event on the log is terminal (or time runs out)."""
    deadline = time.monotonic() + within_s
    while True:
        histories = await order_events(settings)
        open_orders = [o for o in order_ids if not _ended(histories.get(o, {}))]
        if not open_orders or time.monotonic() > deadline:
            return histories
        await asyncio.sleep(2)


def _ended(history: dict[int, Event]) -> bool:
    return bool(history) and history[max(history)].status in TERMINAL


def first_event_after(histories: dict[str, dict[int, Event]], moment: datetime) -> datetime | None:
    """Return when the first event written after ``moment`` occurred."""
    later = [
        e.occurred_at for h in histories.values() for e in h.values() if e.occurred_at > moment
    ]
    return min(later) if later else None


@dataclass
class Verdict:
    """What a scenario found."""

    scenario: str
    accepted: int
    lost: list[str]
    twice: list[str]
    gaps: list[str]
    replay_differences: int
    audit_problems: list[str]
    recovery: dict[str, float]
    refused: int = 0  # POST answers other than 202, retried by the client
    slowest_answer_s: float = 0.0

    @property
    def clean(self) -> bool:
        return not (
            self.lost or self.twice or self.gaps or self.replay_differences or self.audit_problems
        )

    def row(self) -> str:
        recovery = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in self.recovery.items())
        return (
            f"{self.scenario:<34} accepted {self.accepted:>4}  lost {len(self.lost)}  "
            f"twice {len(self.twice)}  gaps {len(self.gaps)}  "
            f"replay {'clean' if not self.replay_differences else self.replay_differences}  "
            f"audit {'clean' if not self.audit_problems else len(self.audit_problems)}  "
            f"refused {self.refused} (slowest answer {self.slowest_answer_s:.1f}s)  "
            f"recovery: {recovery or '-'}"
        )


async def verdict(
    scenario: str,
    system: Running,
    load: Load,
    *,
    recovery: dict[str, float],
    within_s: float = 120,
) -> Verdict:
    """Check every guarantee after ``load`` ran through ``system`` under a fault."""
    accepted = load.accepted
    histories = await wait_until_ended(system.settings, accepted, within_s)
    lost = [o for o in accepted if not _ended(histories.get(o, {}))]
    gaps = [o for o, h in histories.items() if sorted(h) != list(range(1, len(h) + 1))]
    swaps = await venue_swaps(system)
    twice = [o for o in accepted if sum(s["status"] == "confirmed" for s in swaps[o]) > 1]
    differences = 0
    for projection in (OrdersProjection(), AnalyticsProjection()):
        report = await check(system.settings, projection)
        differences += len(report.differences)
    # Every order ended a moment ago: give the read models that moment to catch up.
    audit = await run_audit(system.settings, Limits(grace=timedelta(seconds=10)))
    return Verdict(
        scenario=scenario,
        accepted=len(accepted),
        lost=lost,
        twice=twice,
        gaps=gaps,
        replay_differences=differences,
        audit_problems=[f"{p.kind}: {p.detail}" for p in audit.problems],
        recovery=recovery,
        refused=sum(len(s.errors) for s in load.submissions),
        slowest_answer_s=max((s.slowest_answer_s for s in load.submissions), default=0.0),
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


def assert_clean(found: Verdict) -> None:
    """Fail with the first few orders of each kind of problem the verdict found."""
    assert not found.lost, f"accepted orders that never ended: {found.lost[:5]}"
    assert not found.twice, f"orders with two landed swaps: {found.twice[:5]}"
    assert not found.gaps, f"orders with a gap in their events: {found.gaps[:5]}"
    assert found.replay_differences == 0
    assert not found.audit_problems, found.audit_problems[:5]


def kill_member(system: RunningSystem, group: str) -> int:
    """SIGKILL the one process of ``group`` that ``oee up`` started; return its pid."""
    assert system.root_pid is not None
    [pid] = group_members(system.root_pid, group, children_only=True)
    os.kill(pid, signal.SIGKILL)
    return pid
