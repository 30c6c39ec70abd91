"""The sweeper drives on what the engine never handled: the safety net under the engine.

Each test reproduces the effect of an engine bug on the real log: the engine's group
committed its position past a message it never handled (as faust did before the
engine kept its own ledger). The message is on the log, nothing follows it, and
only the sweeper can notice.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from adapters.kafka import client_options
from events.messages import Envelope, OrderAccepted, OrderSpec, SubmitOrder, encode, order_key
from tests.auth import AUTH
from tests.integration.system import System

SPEC = OrderSpec(token_in="SOL", token_out="USDC", amount="0.5", slippage_bps=100)


@pytest.fixture(scope="module")
def system_overrides() -> dict[str, Any]:
    return {"sweep_submit_after_s": 2.0, "sweep_stall_after_s": 3.0}


async def write_behind_the_engine(system: System, topic: str, message: Envelope) -> None:
    """Write ``message`` with the engine stopped, then move its group past it, as if the
    engine had committed the offset without handling the message."""
    settings = system.settings
    system.stop("engine")
    producer = AIOKafkaProducer(**client_options(settings), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, encode(message), key=order_key(message.order_id))
    finally:
        await producer.stop()
    tp = TopicPartition(topic, sent.partition)
    # The stopped engine stays a static member until its session expires; only then
    # does the group accept a commit from outside.
    consumer = AIOKafkaConsumer(
        **client_options(settings), group_id=settings.engine_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        for _ in range(60):
            try:
                await consumer.commit({tp: sent.offset + 1})
                break
            except Exception:
                await asyncio.sleep(0.5)
        else:
            raise AssertionError("could not move the engine's group past the message")
    finally:
        await consumer.stop()
    system.start("engine")


async def status_of(system: System, order_id: uuid.UUID, wanted: str, within: float = 60) -> str:
    async with httpx.AsyncClient(base_url=system.base_url, headers=AUTH, timeout=10) as client:
        status = "unknown"
        for _ in range(int(within / 0.5)):
            response = await client.get(f"/api/orders/{order_id}")
            if response.status_code == 200:
                status = response.json()["status"]
                if status == wanted:
                    break
            await asyncio.sleep(0.5)
    return status


async def test_submission_the_engine_skipped_is_submitted_again_and_confirms(system: System):
    order_id = uuid.uuid4()
    command = SubmitOrder(
        message_id=uuid.uuid4(),
        order_id=order_id,
        seq=0,
        occurred_at=datetime.now(UTC),
        correlation_id=uuid.uuid4(),
        spec=SPEC,
        request_hash="skipped",
    )
    await write_behind_the_engine(system, system.settings.commands_topic, command)
    assert await status_of(system, order_id, "confirmed") == "confirmed"
    assert "submitting it again" in (system.log_dir / "sweeper.log").read_text()


async def test_order_whose_accepted_event_the_engine_skipped_is_resumed_and_confirms(
    system: System,
):
    order_id = uuid.uuid4()
    accepted = OrderAccepted(
        message_id=uuid.uuid4(),
        order_id=order_id,
        seq=1,
        occurred_at=datetime.now(UTC),
        correlation_id=uuid.uuid4(),
        spec=SPEC,
        request_hash="stalled",
    )
    await write_behind_the_engine(system, system.settings.events_topic, accepted)
    assert await status_of(system, order_id, "confirmed") == "confirmed"
    assert (
        f"order {order_id}: no event since pending" in (system.log_dir / "sweeper.log").read_text()
    )
