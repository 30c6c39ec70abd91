"""``oee audit`` on the whole system, every service a process on the real broker and database.

The tests run in order on one system: orders run to their end and the audit is
clean; the venue service goes down and the audit skips its ledger; then faults the
read models cannot show. A submission written while the engine is stopped is never
accepted, and an undecodable event is dead-lettered by its consumers.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from adapters.kafka import client_options
from cli.audit import main, run_audit
from cli.reconcile import AuditReport, Limits, Position
from events.messages import encode, order_key
from tests.auth import AUTH
from tests.integration.system import System
from tests.unit.factories import submit_order

pytestmark = pytest.mark.integration

MARKET = {"type": "market", "tokenIn": "SOL", "tokenOut": "USDC", "amount": "1", "slippageBps": 300}
# A limit sell far above the market: it stays armed.
FAR_LIMIT = {**MARKET, "type": "limit", "limitPrice": "100000"}
SETTLED = {"confirmed", "failed", "cancelled", "armed"}
# Nothing is in flight for the audit: every record is expected to have its effect.
NO_GRACE = Limits(grace=timedelta(0))


@pytest.fixture
async def client(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.base_url, headers=AUTH, timeout=30) as http:
        yield http


@pytest.fixture
async def producer(system: System) -> AsyncIterator[AIOKafkaProducer]:
    client = AIOKafkaProducer(
        **client_options(system.settings), acks="all", enable_idempotence=True
    )
    await client.start()
    yield client
    await client.stop()


async def settle(client: httpx.AsyncClient, order_ids: list[str]) -> None:
    """Wait until every order is done or waits for its limit."""
    deadline = time.monotonic() + 60
    while True:
        answers = await asyncio.gather(*(client.get(f"/api/orders/{o}") for o in order_ids))
        statuses = [a.json().get("status") if a.status_code == 200 else None for a in answers]
        if all(s in SETTLED for s in statuses):
            return
        assert time.monotonic() < deadline, statuses
        await asyncio.sleep(0.2)


async def audit_until(
    system: System, done: Callable[[AuditReport], bool], limits: Limits = NO_GRACE
) -> AuditReport:
    """Audit again until ``done`` holds (consumers take a moment); return that report."""
    deadline = time.monotonic() + 60
    while True:
        report = await run_audit(system.settings, limits)
        if done(report):
            return report
        assert time.monotonic() < deadline, report.problems
        await asyncio.sleep(0.5)


async def printed(capsys: pytest.CaptureFixture[str], run: Callable[[], int]) -> tuple[int, str]:
    """Run ``oee audit`` as the command line does; return its exit code and output."""
    capsys.readouterr()
    code = await asyncio.to_thread(run)
    return code, capsys.readouterr().out


def clean(report: AuditReport) -> bool:
    return report.clean


def settled_and_clean(report: AuditReport) -> bool:
    """Clean with no order in flight: a later audit cannot catch a projector mid-order."""
    return report.clean and set(report.coverage.orders) <= SETTLED


async def test_audit_after_orders_ran_to_their_end_is_clean(
    system: System, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    bodies = [MARKET, MARKET, MARKET, FAR_LIMIT, FAR_LIMIT]
    answers = [await client.post("/api/orders/execute", json=body) for body in bodies]
    order_ids = [a.json()["orderId"] for a in answers]
    await settle(client, order_ids)
    cancelled = await client.post(f"/api/orders/{order_ids[-1]}/cancel")
    assert cancelled.json()["status"] == "cancelled"

    report = await audit_until(system, clean)
    code, out = await printed(capsys, lambda: main(system.settings, grace_s=0))

    assert report.coverage.commands == {"CancelOrder": 1, "SubmitOrder": 5}
    assert report.coverage.orders == {"armed": 1, "cancelled": 1, "confirmed": 3}
    assert report.coverage.ledger_swaps == 3
    assert set(report.coverage.read_models) == {"orders", "order_events", "analytics_orders"}
    assert code == 0
    assert out.splitlines()[-1] == "no problems"


async def test_audit_with_the_venue_service_down_skips_the_ledger(
    system: System, capsys: pytest.CaptureFixture[str]
) -> None:
    system.stop("venues")
    try:
        report = await run_audit(system.settings, NO_GRACE)
        code, out = await printed(capsys, lambda: main(system.settings, grace_s=0))
    finally:
        system.start("venues")

    assert report.clean
    assert report.coverage.ledger_swaps is None
    assert "NETWORK_ERROR" in report.coverage.skipped["ledger"]
    assert code == 0
    assert any(line.startswith("skipped ledger: the venue service") for line in out.splitlines())


async def test_audit_reports_a_submission_the_stopped_engine_never_accepted(
    system: System, producer: AIOKafkaProducer, capsys: pytest.CaptureFixture[str]
) -> None:
    system.stop("engine")
    command = submit_order()
    sent = await producer.send_and_wait(
        system.settings.commands_topic, encode(command), key=order_key(command.order_id)
    )

    within_grace = await run_audit(system.settings)  # the default grace: 30 s
    report = await run_audit(system.settings, NO_GRACE)
    code, out = await printed(capsys, lambda: main(system.settings, grace_s=0, as_json=True))

    assert within_grace.clean
    assert [(p.kind, p.order_id) for p in report.problems] == [("not_accepted", command.order_id)]
    assert report.problems[0].position == Position(
        topic=system.settings.commands_topic, partition=sent.partition, offset=sent.offset
    )
    assert code == 1
    printed_report: dict[str, Any] = json.loads(out)
    assert printed_report["clean"] is False
    assert printed_report["problem_counts"] == {"not_accepted": 1}
    assert printed_report["problems"][0]["order_id"] == str(command.order_id)

    # A restarted engine accepts and executes it: the audit is clean again.
    system.start("engine")
    await audit_until(system, settled_and_clean)


async def test_audit_reports_the_dead_letters_of_an_undecodable_event(
    system: System, producer: AIOKafkaProducer, capsys: pytest.CaptureFixture[str]
) -> None:
    key = order_key(uuid.uuid4())
    sent = await producer.send_and_wait(system.settings.events_topic, b"{not json", key=key)
    source = Position(
        topic=system.settings.events_topic, partition=sent.partition, offset=sent.offset
    )

    def both_consumers_dead_lettered_it(report: AuditReport) -> bool:
        settled = set(report.coverage.orders) <= SETTLED
        return settled and report.problem_counts == {"dead_letter": 2}

    report = await audit_until(system, both_consumers_dead_lettered_it)
    code, out = await printed(capsys, lambda: main(system.settings, grace_s=0))

    # The engine and the projector each dead-letter it, each in its own words.
    assert {p.position for p in report.problems} == {source}
    assert {p.order_id for p in report.problems} == {uuid.UUID(key.decode())}
    assert any("undecodable event" in p.detail for p in report.problems)
    assert any("DecodeError" in p.detail for p in report.problems)
    assert code == 1
    assert "2 problem(s): 2 dead_letter" in out.splitlines()
